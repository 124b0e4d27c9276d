//! Helpers for tests that run compiled plugins through the real runtime: plugin authors use
//! these next to `sluice_sdk::harness`, which runs the same code natively.
use crate::stage::{Limits, PluginModule, RuntimeError, WasmStage};
use std::path::PathBuf;

/// Where the build script puts compiled plugins: `$SLUICE_PLUGIN_DIR`, else
/// `<workspace>/target/plugins`.
pub fn plugin_dir() -> PathBuf {
    std::env::var_os("SLUICE_PLUGIN_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/plugins"))
}

/// The compiled `<name>.wasm`; panics with the command to build it when it is missing.
pub fn plugin_path(name: &str) -> PathBuf {
    let path = plugin_dir().join(format!("{name}.wasm"));
    assert!(
        path.is_file(),
        "{} is missing: build the plugins with `scripts/build-plugins.sh`",
        path.display()
    );
    path
}

/// Loads a compiled plugin as a stage named after it, with a config given as JSON.
pub fn load_plugin(
    name: &str,
    config_json: &str,
    limits: Limits,
) -> Result<WasmStage, RuntimeError> {
    let module = PluginModule::load(&plugin_path(name))?;
    WasmStage::new(name, &module, limits, config_json, None)
}
