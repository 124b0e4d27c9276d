//! A plugin that panics, loops forever, allocates without bound or returns an error fails only
//! the batch it was given: that batch's rows go to `_rejects/` with the plugin and the reason,
//! the instance is recreated and the pipeline finishes.
mod common;
use common::*;

/// Runs generator → faulty (misbehaving on the batch holding offset 5000) → silver.
fn run_faulty(mode: &str, limits: &str) -> (usize, usize, Vec<String>, Vec<String>) {
    let dir = tempfile::tempdir().unwrap();
    let pipeline = dir.path().join("p.yaml");
    std::fs::write(
        &pipeline,
        format!(
            "name: faults\nsource:\n  generator:\n    events: 20000\nbatch_rows: 1000\nlake:\n  uri: file://{}/lake\nstages:\n  - name: faulty\n    plugin: {}/faulty.wasm\n    config: {{mode: {mode}, trigger_offset: 5000}}\n    layer: silver\n    limits: {limits}\n",
            dir.path().display(),
            plugin_dir()
        ),
    )
    .unwrap();
    let stdout = assert_success(&sluice(&["run", pipeline.to_str().unwrap()], &[]));
    assert!(stdout.contains("plugin failed"), "{stdout}");
    let lake = dir.path().join("lake");
    let silver = read_layer(&lake, "silver");
    let rejects = read_layer(&lake, "_rejects");
    (
        rows(&silver),
        rows(&rejects),
        string_column(&rejects, "reason"),
        string_column(&rejects, "plugin"),
    )
}

fn assert_one_batch_failed(mode: &str, limits: &str, reason: &str) {
    let (silver, rejected, reasons, plugins) = run_faulty(mode, limits);
    assert_eq!(
        silver + rejected,
        20_000,
        "every row is in silver or rejects"
    );
    assert!(
        rejected > 0 && rejected <= 1000,
        "only the failing batch is rejected ({rejected} rows)"
    );
    assert!(
        reasons
            .iter()
            .all(|r| r.starts_with("plugin failed: ") && r.contains(reason)),
        "{:?}",
        &reasons[..1]
    );
    assert!(
        plugins.iter().all(|p| p.starts_with("faulty@")),
        "{:?}",
        &plugins[..1]
    );
}

#[test]
fn a_panicking_plugin_fails_only_its_batch() {
    assert_one_batch_failed("panic", "{}", "trapped");
}

#[test]
fn an_endless_loop_is_stopped_by_the_fuel_budget() {
    assert_one_batch_failed("loop", "{fuel: 200000000}", "CPU limit exceeded");
}

#[test]
fn an_endless_loop_is_stopped_by_the_deadline() {
    assert_one_batch_failed(
        "loop",
        "{fuel: 1000000000000000, timeout_ms: 300}",
        "time limit exceeded",
    );
}

#[test]
fn unbounded_allocation_is_stopped_by_the_memory_limit() {
    assert_one_batch_failed("alloc", "{memory_mb: 64}", "memory limit exceeded");
}

#[test]
fn a_returned_error_fails_only_its_batch() {
    assert_one_batch_failed("error", "{}", "faulty plugin refuses this batch");
}

#[test]
fn a_plugin_cannot_read_files_open_sockets_or_see_the_clock() {
    let (silver, rejected, reasons, _) = run_faulty("escape", "{}");
    assert_eq!(silver + rejected, 20_000);
    let reason = &reasons[0];
    assert!(
        reason.contains("file: denied")
            && reason.contains("net: denied")
            && reason.contains("clock: Some(0)"),
        "{reason}"
    );
}
