//! Runs the plugin natively, through the same Arrow IPC round trip the host uses.
use sluice_sdk::harness::{Harness, batch_from_json, pretty};
use sluice_sdk::prelude::*;
use std::sync::Arc;
use {{crate}}::{WINDOWS, {{Type}}};

fn events(lines: &[&str]) -> RecordBatch {
    let schema = Arc::new(Schema::new(vec![
        Field::new("ts", DataType::Int64, true),
        Field::new("userId", DataType::Int64, true),
    ]));
    batch_from_json(schema, lines).unwrap()
}

#[test]
fn a_window_is_emitted_once_the_watermark_passes_its_end() {
    let mut plugin = Harness::<{{Type}}>::new(r#"{"window_ms": 1000}"#).unwrap();
    let out = plugin
        .process(&events(&[
            r#"{"ts": 100, "userId": 1}"#,
            r#"{"ts": 900, "userId": 1}"#,
            r#"{"ts": 1500, "userId": 2}"#,
            r#"{"ts": 1600}"#,
        ]))
        .unwrap();
    assert_eq!(out.rows("out"), 4, "input rows pass on");
    assert_eq!(out.rows(WINDOWS), 0, "nothing is closed yet");

    let closed = plugin.on_watermark(1000).unwrap();
    assert_eq!(
        pretty(&closed.output(WINDOWS)),
        "\
+--------------+--------+--------+
| window_start | userId | events |
+--------------+--------+--------+
| 0            | 1      | 2      |
+--------------+--------+--------+"
    );
}

#[test]
fn open_windows_survive_a_restart() {
    let mut plugin = Harness::<{{Type}}>::new(r#"{"window_ms": 1000}"#).unwrap();
    plugin.process(&events(&[r#"{"ts": 100, "userId": 1}"#])).unwrap();
    let mut plugin = plugin.restart(r#"{"window_ms": 1000}"#).unwrap();
    plugin.process(&events(&[r#"{"ts": 200, "userId": 1}"#])).unwrap();
    let closed = plugin.on_watermark(i64::MAX).unwrap();
    let events = closed.output(WINDOWS)[0].i64_column("events").unwrap().value(0);
    assert_eq!(events, 2);
}
