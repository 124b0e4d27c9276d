//! Decoding raw source records into Arrow batches with a declared schema per topic.
//! A record that does not decode becomes a dead letter (raw bytes, reason, origin); it is
//! never dropped.
pub mod avro;
pub mod flat_json;
pub mod json;
pub mod schema;

pub use json::{Decoded, JsonDecoder};

/// A record that did not make it into a layer, with why and where it came from.
#[derive(Debug, Clone, PartialEq)]
pub struct DeadLetter {
    pub topic: String,
    /// `decode` or the name of the stage that rejected it.
    pub stage: String,
    /// `name@version` of the plugin, when a plugin rejected it.
    pub plugin: Option<String>,
    pub reason: String,
    pub origin: String,
    pub offset: Option<i64>,
    /// The raw record (decode) or the row as JSON (stage); binary records as hex.
    pub raw: String,
    /// The record's original bytes, when `raw` could not hold them as text (Avro).
    pub bytes: Option<Vec<u8>>,
}

/// Metadata columns the host appends to every decoded batch.
pub const ORIGIN_COLUMN: &str = "_origin";
pub const OFFSET_COLUMN: &str = "_offset";

/// Where a decoded batch's rows come from, for error messages: `<origin> offsets 10..=8201`.
pub fn describe_rows(batch: &arrow::array::RecordBatch) -> Option<String> {
    use arrow::array::AsArray;
    use arrow::datatypes::Int64Type;
    let origins = batch
        .column_by_name(ORIGIN_COLUMN)?
        .as_string_opt::<i32>()?;
    let offsets = batch
        .column_by_name(OFFSET_COLUMN)?
        .as_primitive_opt::<Int64Type>()?;
    if offsets.is_empty() {
        return None;
    }
    let (first, last) = (offsets.value(0), offsets.value(offsets.len() - 1));
    let origin = origins.value(0);
    Some(if first == last {
        format!("{origin} offset {first}")
    } else {
        format!("{origin} offsets {first}..={last}")
    })
}
