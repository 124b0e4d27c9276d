//! Crash points for fault tests: `SLUICE_FAILPOINTS=name=N[,name=N…]` aborts the process the
//! Nth time execution passes the point `name`, like a power cut at that instruction. Tests use
//! it to crash in windows too narrow to hit with a timed SIGKILL (between an insert and its
//! marker, say). Unset, a point costs one relaxed atomic load.
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{LazyLock, Mutex};

static ARMED: LazyLock<Option<HashMap<String, u64>>> = LazyLock::new(|| {
    let spec = std::env::var("SLUICE_FAILPOINTS").ok()?;
    Some(
        spec.split(',')
            .filter_map(|item| {
                let (name, n) = item.split_once('=')?;
                Some((name.trim().to_string(), n.trim().parse().ok()?))
            })
            .collect(),
    )
});
static PASSES: LazyLock<Mutex<HashMap<&'static str, u64>>> = LazyLock::new(Default::default);
static ANY: AtomicU64 = AtomicU64::new(u64::MAX);

/// Aborts the process if `name` is armed and this is its Nth pass.
pub fn hit(name: &'static str) {
    if ANY.load(Ordering::Relaxed) == 0 {
        return;
    }
    let Some(armed) = ARMED.as_ref() else {
        ANY.store(0, Ordering::Relaxed);
        return;
    };
    let Some(&at) = armed.get(name) else {
        return;
    };
    let mut passes = PASSES.lock().unwrap_or_else(|e| e.into_inner());
    let count = passes.entry(name).or_default();
    *count += 1;
    if *count == at {
        eprintln!("failpoint {name}: aborting on pass {at}");
        std::process::abort();
    }
}
