# Shared settings for the project's scripts (sourced, not run).
# Build artifacts and downloads live outside the clone so warm runs are fast.
export SLUICE_CACHE="${SLUICE_CACHE:-$HOME/.cache/sluice}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$SLUICE_CACHE/target}"
export CARGO_BUILD_JOBS="${CARGO_BUILD_JOBS:-2}"
export SLUICE_ROOT
SLUICE_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export SLUICE_PLUGIN_DIR="${SLUICE_PLUGIN_DIR:-$SLUICE_ROOT/target/plugins}"
[ -f "$HOME/.cargo/env" ] && . "$HOME/.cargo/env"
