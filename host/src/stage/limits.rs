use serde::Deserialize;
use std::time::Duration;

/// Sandbox limits of one plugin instance, settable per stage in YAML (`limits:`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Linear memory the instance may grow to, in MiB.
    pub memory_mb: u64,
    /// Fuel (roughly, wasm instructions) one call may burn.
    pub fuel: u64,
    /// Wall-clock time one call may take.
    #[serde(with = "humantime_ms", rename = "timeout_ms")]
    pub timeout: Duration,
    /// Input a stateful plugin's instance keeps to rebuild its state after a trap, in MiB (or
    /// four times its last snapshot if that is more); past it the instance is snapshotted.
    /// 0, the default: none is kept, and a trap loses the state. It costs CPU and memory
    /// (`docs/plugins.md`), as Flink's checkpointing, also off by default, does.
    pub replay_mb: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            memory_mb: 512,
            fuel: 20_000_000_000,
            timeout: Duration::from_secs(30),
            replay_mb: 0,
        }
    }
}

mod humantime_ms {
    use serde::{Deserialize, Deserializer};
    use std::time::Duration;

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
        u64::deserialize(deserializer).map(Duration::from_millis)
    }
}
