//! Runs the plugin natively, through the same Arrow IPC round trip the host uses.
use sluice_sdk::harness::{Harness, batch_from_json, pretty};
use sluice_sdk::prelude::*;
use std::sync::Arc;
use {{crate}}::{{Type}};

fn events() -> RecordBatch {
    let schema = Arc::new(Schema::new(vec![
        Field::new("ts", DataType::Int64, true),
        Field::new("userId", DataType::Int64, true),
        Field::new("page", DataType::Utf8, true),
    ]));
    batch_from_json(
        schema,
        &[
            r#"{"ts": 1000, "userId": 7, "page": "NextSong"}"#,
            r#"{"ts": 2000, "page": "Home"}"#,
            r#"{"userId": 8, "page": "About"}"#,
        ],
    )
    .unwrap()
}

#[test]
fn rows_without_a_required_value_are_rejected_with_the_reason() {
    let mut plugin = Harness::<{{Type}}>::new(r#"{"required": ["userId", "ts"]}"#).unwrap();
    let out = plugin.process(&events()).unwrap();
    assert_eq!(
        pretty(&out.output("out")),
        "\
+------+--------+----------+
| ts   | userId | page     |
+------+--------+----------+
| 1000 | 7      | NextSong |
+------+--------+----------+"
    );
    let rejects = out.output("rejects");
    let reasons = rejects[0].string_column("_reject_reason").unwrap();
    assert_eq!(reasons.value(0), "missing_userId");
    assert_eq!(reasons.value(1), "missing_ts");
}

#[test]
fn a_missing_column_is_an_error_that_names_it() {
    let mut plugin = Harness::<{{Type}}>::new(r#"{"required": ["level"]}"#).unwrap();
    let error = plugin.process(&events()).unwrap_err().to_string();
    assert!(error.contains("level"), "{error}");
}
