//! The compiled component through the real host runtime.
use sluice::stage::Limits;
use sluice::testing::load_plugin;
use sluice_sdk::harness::{batch_from_json, pretty};
use sluice_sdk::prelude::*;
use std::sync::Arc;

#[test]
fn paid_only_wasm_filters_in_the_sandbox() {
    let schema = Arc::new(Schema::new(vec![Field::new("level", DataType::Utf8, true)]));
    let batch = batch_from_json(schema, &[r#"{"level":"free"}"#, r#"{"level":"paid"}"#]).unwrap();
    let mut stage = load_plugin("paid_only", "", Limits::default()).unwrap();
    assert_eq!(stage.info().name, "paid-only");
    let outputs = stage.process("events", &batch).unwrap();
    assert_eq!(outputs.len(), 1);
    assert_eq!(outputs[0].0, "out");
    assert_eq!(
        pretty(&[outputs[0].1.clone()]),
        "+-------+\n| level |\n+-------+\n| paid  |\n+-------+"
    );
}
