//! Dead letters as Arrow rows, written to the lake under `_rejects/<topic>/stage=<stage>/`.
use crate::decode::{DeadLetter, OFFSET_COLUMN, ORIGIN_COLUMN};
use arrow::array::{Array, ArrayRef, AsArray, Int64Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Int64Type, Schema, SchemaRef};
use arrow::json::LineDelimitedWriter;
use sluice_sdk::REJECT_REASON_COLUMN;
use std::sync::{Arc, LazyLock};

pub const LAYER: &str = "_rejects";

pub static SCHEMA: LazyLock<SchemaRef> = LazyLock::new(|| {
    Arc::new(Schema::new(vec![
        Field::new("topic", DataType::Utf8, false),
        Field::new("stage", DataType::Utf8, false),
        Field::new("plugin", DataType::Utf8, true),
        Field::new("reason", DataType::Utf8, false),
        Field::new("origin", DataType::Utf8, false),
        Field::new("offset", DataType::Int64, true),
        Field::new("raw", DataType::Utf8, false),
    ]))
});

pub fn to_batch(letters: &[DeadLetter]) -> RecordBatch {
    let strings = |f: fn(&DeadLetter) -> &str| {
        Arc::new(StringArray::from_iter_values(letters.iter().map(f))) as ArrayRef
    };
    let columns: Vec<ArrayRef> = vec![
        strings(|d| &d.topic),
        strings(|d| &d.stage),
        Arc::new(StringArray::from_iter(
            letters.iter().map(|d| d.plugin.as_deref()),
        )),
        strings(|d| &d.reason),
        strings(|d| &d.origin),
        Arc::new(Int64Array::from_iter(letters.iter().map(|d| d.offset))),
        strings(|d| &d.raw),
    ];
    RecordBatch::try_new(SCHEMA.clone(), columns).expect("dead letter columns match the schema")
}

/// Dead letters for every row of `batch` (a failed batch, or a plugin's `rejects` output, whose
/// per-row reason is in `_reject_reason`). Each row is kept whole as JSON in `raw`.
pub fn from_rows(
    batch: &RecordBatch,
    topic: &str,
    stage: &str,
    plugin: &str,
    reason: Option<&str>,
) -> Vec<DeadLetter> {
    let reasons = batch
        .column_by_name(REJECT_REASON_COLUMN)
        .map(|c| c.as_string::<i32>().clone());
    let origins = batch
        .column_by_name(ORIGIN_COLUMN)
        .filter(|c| c.data_type() == &DataType::Utf8)
        .map(|c| c.as_string::<i32>().clone());
    let offsets = batch
        .column_by_name(OFFSET_COLUMN)
        .filter(|c| c.data_type() == &DataType::Int64)
        .map(|c| c.as_primitive::<Int64Type>().clone());
    let data = match batch.schema().index_of(REJECT_REASON_COLUMN) {
        Ok(i) => {
            let mut batch = batch.clone();
            batch.remove_column(i);
            batch
        }
        Err(_) => batch.clone(),
    };
    let rows = rows_as_json(&data);
    (0..batch.num_rows())
        .map(|i| DeadLetter {
            topic: topic.to_string(),
            stage: stage.to_string(),
            plugin: Some(plugin.to_string()),
            reason: match (&reasons, reason) {
                (Some(r), _) if r.is_valid(i) => r.value(i).to_string(),
                (_, Some(reason)) => reason.to_string(),
                _ => "rejected".to_string(),
            },
            origin: origins
                .as_ref()
                .filter(|o| o.is_valid(i))
                .map_or_else(String::new, |o| o.value(i).to_string()),
            offset: offsets
                .as_ref()
                .filter(|o| o.is_valid(i))
                .map(|o| o.value(i)),
            raw: rows.get(i).cloned().unwrap_or_default(),
            bytes: None,
        })
        .collect()
}

fn rows_as_json(batch: &RecordBatch) -> Vec<String> {
    let mut buffer = Vec::new();
    let mut writer = LineDelimitedWriter::new(&mut buffer);
    if let Err(e) = writer.write(batch).and_then(|_| writer.finish()) {
        // Never an empty `raw`: say why the row could not be rendered.
        return vec![format!("<row not renderable as JSON: {e}>"); batch.num_rows()];
    }
    String::from_utf8_lossy(&buffer)
        .lines()
        .map(str::to_string)
        .collect()
}
