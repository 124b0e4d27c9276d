//! The sandbox: compiled plugins through the real runtime, and refusals with clear errors.
use arrow::array::{Int64Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema};
use sluice::stage::{Limits, PluginModule, RuntimeError};
use sluice::testing::load_plugin;
use std::path::Path;
use std::sync::Arc;

fn events() -> RecordBatch {
    let schema = Schema::new(vec![
        Field::new("ts", DataType::Int64, true),
        Field::new("auth", DataType::Utf8, true),
        Field::new("userId", DataType::Int64, true),
        Field::new("level", DataType::Utf8, true),
    ]);
    RecordBatch::try_new(
        Arc::new(schema),
        vec![
            Arc::new(Int64Array::from(vec![
                Some(1_793_491_200_000),
                Some(1_793_491_200_000),
                Some(5),
                Some(1_793_491_201_000),
            ])),
            Arc::new(StringArray::from(vec![
                "Logged In",
                "Logged In",
                "Logged In",
                "Logged Out",
            ])),
            Arc::new(Int64Array::from(vec![Some(1), None, Some(2), None])),
            Arc::new(StringArray::from(vec![" PAID ", "free", "free", "Free"])),
        ],
    )
    .unwrap()
}

#[test]
fn clean_wasm_runs_through_the_host_runtime() {
    let mut stage = load_plugin("clean", "{}", Limits::default()).unwrap();
    assert_eq!(stage.info().name, "clean");
    assert_eq!(stage.info().inputs, vec!["ts".to_string()]);
    let outputs = stage.process("listen_events", &events()).unwrap();
    let out: Vec<_> = outputs
        .iter()
        .filter(|(n, _)| n == "out")
        .map(|(_, b)| b.clone())
        .collect();
    let rejects: Vec<_> = outputs
        .iter()
        .filter(|(n, _)| n == "rejects")
        .map(|(_, b)| b.clone())
        .collect();
    assert_eq!(
        sluice_sdk::harness::pretty(&out),
        "\
+---------------+------------+--------+-------+----------------------+
| ts            | auth       | userId | level | event_time           |
+---------------+------------+--------+-------+----------------------+
| 1793491200000 | Logged In  | 1      | paid  | 2026-11-01T00:00:00Z |
| 1793491201000 | Logged Out |        | free  | 2026-11-01T00:00:01Z |
+---------------+------------+--------+-------+----------------------+"
    );
    assert_eq!(
        sluice_sdk::harness::pretty(&rejects),
        "\
+---------------+-----------+--------+-------+--------------------------+-----------------+
| ts            | auth      | userId | level | event_time               | _reject_reason  |
+---------------+-----------+--------+-------+--------------------------+-----------------+
| 1793491200000 | Logged In |        | free  | 2026-11-01T00:00:00Z     | missing_user_id |
| 5             | Logged In | 2      | free  | 1970-01-01T00:00:00.005Z | ts_out_of_range |
+---------------+-----------+--------+-------+--------------------------+-----------------+"
    );
}

#[test]
fn an_input_a_plugin_passes_on_unchanged_comes_back_as_the_hosts_own_arrays() {
    // sessionize sends every event on: the SDK sends a marker instead of the rows, and the
    // host hands on the batch it sent, not a copy decoded from the sandbox.
    let mut stage = load_plugin("sessionize", "{}", Limits::default()).unwrap();
    let events = events();
    let outputs = stage.process("page_view_events", &events).unwrap();
    let (name, out) = &outputs[0];
    assert_eq!((name.as_str(), outputs.len()), ("out", 1));
    assert_eq!(out.num_rows(), events.num_rows());
    for (sent, back) in events.columns().iter().zip(out.columns()) {
        assert!(Arc::ptr_eq(sent, back), "a column came back as a copy");
    }
    assert_eq!(
        sluice_sdk::topic_of(out),
        Some("page_view_events"),
        "the batch keeps the table the host named"
    );
}

#[test]
fn a_batch_without_the_declared_input_column_fails_with_the_column_name() {
    let mut stage = load_plugin("clean", "{}", Limits::default()).unwrap();
    let batch = RecordBatch::try_new(
        Arc::new(Schema::new(vec![Field::new("x", DataType::Int64, true)])),
        vec![Arc::new(Int64Array::from(vec![1]))],
    )
    .unwrap();
    let error = stage.process("events", &batch).unwrap_err();
    assert_eq!(error.stage, "clean");
    assert!(
        error.reason.contains("input column `ts` is missing"),
        "{}",
        error.reason
    );
}

#[test]
fn a_bad_plugin_config_fails_init_with_the_plugins_message() {
    let error = load_plugin(
        "clean",
        r#"{"min_ts_ms": 10, "max_ts_ms": 1}"#,
        Limits::default(),
    )
    .err()
    .unwrap();
    assert!(
        error.to_string().contains("min_ts_ms is after max_ts_ms"),
        "{error}"
    );
    let error = load_plugin("clean", r#"{"no_such_option": 1}"#, Limits::default())
        .err()
        .unwrap();
    assert!(
        error.to_string().contains("unknown field `no_such_option`"),
        "{error}"
    );
}

#[test]
fn a_component_for_another_contract_version_is_refused() {
    let wat = r#"(component
        (core module $m (func (export "f")))
        (core instance $i (instantiate $m))
        (func $f (canon lift (core func $i "f")))
        (instance $guest (export "init" (func $f)))
        (export "sluice:plugin/guest@9.0.0" (instance $guest)))"#;
    let bytes = wat::parse_str(wat).unwrap();
    let error = PluginModule::from_bytes(Path::new("future.wasm"), &bytes)
        .err()
        .unwrap();
    assert!(
        matches!(error, RuntimeError::ContractVersion { ref found, .. } if found == "9.0.0"),
        "{error}"
    );
    assert!(
        error.to_string().contains(
            "was built for contract sluice:plugin@9.0.0; this host supports sluice:plugin@0.1.0"
        ),
        "{error}"
    );
}

#[test]
fn a_component_that_is_no_plugin_and_a_core_module_are_refused() {
    let bytes = wat::parse_str("(component)").unwrap();
    let error = PluginModule::from_bytes(Path::new("empty.wasm"), &bytes)
        .err()
        .unwrap();
    assert!(
        error.to_string().contains("is not a Sluice plugin"),
        "{error}"
    );
    let core = wat::parse_str("(module)").unwrap();
    let error = PluginModule::from_bytes(Path::new("core.wasm"), &core)
        .err()
        .unwrap();
    assert!(
        error
            .to_string()
            .contains("core wasm module, not a component: build the plugin for wasm32-wasip2"),
        "{error}"
    );
}

/// `rows` rows with `_offset` from `first` on.
fn offsets(first: i64, rows: i64) -> RecordBatch {
    let schema = Schema::new(vec![Field::new("_offset", DataType::Int64, false)]);
    RecordBatch::try_new(
        Arc::new(schema),
        vec![Arc::new(Int64Array::from_iter_values(first..first + rows))],
    )
    .unwrap()
}

/// What the stateful `faulty` plugin says it had processed before the batch at `first`.
fn rows_before(stage: &mut sluice::stage::WasmStage, first: i64) -> i64 {
    let outputs = stage.process("t", &offsets(first, 10)).unwrap();
    let column = outputs[0].1.column_by_name("rows_before").unwrap();
    column
        .as_any()
        .downcast_ref::<Int64Array>()
        .unwrap()
        .value(0)
}

#[test]
fn a_stateful_plugin_that_traps_goes_on_from_the_state_it_had_before_the_batch() {
    for mode in ["panic", "loop"] {
        let config = format!(r#"{{"mode": "{mode}", "trigger_offset": 25, "stateful": true}}"#);
        let limits = Limits {
            fuel: 100_000_000,
            replay_mb: 16,
            ..Limits::default()
        };
        let mut stage = load_plugin("faulty", &config, limits).unwrap();
        assert!(stage.info().stateful);
        assert_eq!(rows_before(&mut stage, 0), 0);
        assert_eq!(rows_before(&mut stage, 10), 10);
        // Batches since the last snapshot are made again: a restored state alone says 0.
        let error = stage.process("t", &offsets(20, 10)).unwrap_err();
        assert!(
            error.reason.contains("limit") || error.reason.contains("trapped"),
            "{error}"
        );
        assert_eq!(rows_before(&mut stage, 30), 20, "{mode}");

        // From a snapshot, and a restored state, likewise.
        let snapshot = stage.snapshot().unwrap();
        assert_eq!(rows_before(&mut stage, 40), 30);
        stage.process("t", &offsets(20, 10)).unwrap_err();
        assert_eq!(rows_before(&mut stage, 50), 40, "{mode}");
        stage.restore(&snapshot).unwrap();
        stage.process("t", &offsets(20, 10)).unwrap_err();
        assert_eq!(rows_before(&mut stage, 60), 30, "{mode}");
    }
}
