//! Arrow IPC stream encoding: how batches cross the wasm boundary (one batch per message).
use arrow_array::{RecordBatch, RecordBatchOptions};
use arrow_ipc::reader::StreamDecoder;
use arrow_ipc::writer::StreamWriter;
use arrow_schema::{ArrowError, Schema};
use std::collections::HashMap;
use std::sync::Arc;

/// Schema metadata of an output that stands for the call's input batch, unchanged: a batch
/// of no columns, only a row count. A plugin that passes its input on (sessionize sends every
/// event on to the next stage) then costs no encode, no copy out of the sandbox and no
/// decode; the host uses the batch it sent.
pub const SAME_AS_INPUT_METADATA: &str = "sluice.same_as_input";

/// Encodes one batch as an Arrow IPC stream (schema, batch, end marker).
pub fn encode(batch: &RecordBatch) -> Result<Vec<u8>, ArrowError> {
    let mut buffer = Vec::with_capacity(batch.get_array_memory_size() + 1024);
    let mut writer = StreamWriter::try_new(&mut buffer, &batch.schema())?;
    writer.write(batch)?;
    writer.finish()?;
    drop(writer);
    Ok(buffer)
}

/// Decodes an IPC stream that holds exactly one batch (or none: an empty batch of its
/// schema), taking the bytes over: the batch's arrays are slices of them, not copies. This is
/// how batches are read on both sides of the wasm boundary, so a batch crosses it with one
/// encode and one copy each way (the one the component model makes).
pub fn decode(bytes: Vec<u8>) -> Result<RecordBatch, ArrowError> {
    let mut buffer = arrow_buffer::Buffer::from_vec(bytes);
    let mut decoder = StreamDecoder::new();
    let mut batch = None;
    while !buffer.is_empty() {
        match decoder.decode(&mut buffer)? {
            Some(_) if batch.is_some() => {
                return Err(ArrowError::IpcError(
                    "expected one record batch per IPC message, found more".to_string(),
                ));
            }
            Some(decoded) => batch = Some(decoded),
            None => {}
        }
    }
    decoder.finish()?;
    match (batch, decoder.schema()) {
        (Some(batch), _) => Ok(batch),
        (None, Some(schema)) => Ok(RecordBatch::new_empty(schema)),
        (None, None) => Err(ArrowError::IpcError("an empty IPC stream".to_string())),
    }
}

/// Whether `output` is `input` itself: the same schema and the very same arrays.
pub fn is_input(input: &RecordBatch, output: &RecordBatch) -> bool {
    input.num_rows() == output.num_rows()
        && input.schema() == output.schema()
        && input
            .columns()
            .iter()
            .zip(output.columns())
            .all(|(a, b)| Arc::ptr_eq(a, b))
}

/// The batch sent instead of an output that [`is_input`].
pub fn same_as_input(rows: usize) -> Result<RecordBatch, ArrowError> {
    let schema = Schema::empty().with_metadata(HashMap::from([(
        SAME_AS_INPUT_METADATA.to_string(),
        "true".to_string(),
    )]));
    RecordBatch::try_new_with_options(
        Arc::new(schema),
        vec![],
        &RecordBatchOptions::new().with_row_count(Some(rows)),
    )
}

/// Whether a decoded output is the [`same_as_input`] marker.
pub fn is_same_as_input(batch: &RecordBatch) -> bool {
    batch.num_columns() == 0
        && batch
            .schema_ref()
            .metadata()
            .contains_key(SAME_AS_INPUT_METADATA)
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_array::{ArrayRef, Int64Array, StringArray};
    use std::sync::Arc;

    fn batch() -> RecordBatch {
        RecordBatch::try_from_iter([
            ("id", Arc::new(Int64Array::from(vec![1, 2, 3])) as ArrayRef),
            (
                "name",
                Arc::new(StringArray::from(vec!["a", "b", "c"])) as ArrayRef,
            ),
        ])
        .unwrap()
    }

    #[test]
    fn a_batch_survives_the_round_trip() {
        let decoded = decode(encode(&batch()).unwrap()).unwrap();
        assert_eq!(decoded, batch());
    }

    #[test]
    fn a_stream_without_batches_is_an_empty_batch_of_its_schema() {
        let empty = RecordBatch::new_empty(batch().schema());
        let mut bytes = Vec::new();
        let mut writer = StreamWriter::try_new(&mut bytes, &empty.schema()).unwrap();
        writer.finish().unwrap();
        drop(writer);
        let decoded = decode(bytes).unwrap();
        assert_eq!(decoded.num_rows(), 0);
        assert_eq!(decoded.schema(), batch().schema());
    }

    #[test]
    fn an_unchanged_input_crosses_as_a_marker_of_its_row_count() {
        let input = batch();
        assert!(is_input(&input, &input.clone()));
        assert!(!is_input(&input, &input.slice(0, 2)));
        let rebuilt = RecordBatch::try_new(input.schema(), input.columns().to_vec()).unwrap();
        assert!(is_input(&input, &rebuilt));
        let copy = RecordBatch::try_new(
            input.schema(),
            input
                .columns()
                .iter()
                .map(|c| c.slice(0, c.len()))
                .collect(),
        )
        .unwrap();
        assert!(
            !is_input(&input, &copy),
            "equal rows in other arrays are encoded"
        );
        let renamed = RecordBatch::try_from_iter([
            ("key", input.column(0).clone()),
            ("name", input.column(1).clone()),
        ])
        .unwrap();
        assert!(!is_input(&input, &renamed));

        let marker = decode(encode(&same_as_input(3).unwrap()).unwrap()).unwrap();
        assert!(is_same_as_input(&marker));
        assert_eq!(marker.num_rows(), 3);
        assert!(!is_same_as_input(&input));
    }

    #[test]
    fn two_batches_or_broken_bytes_are_refused() {
        let mut bytes = Vec::new();
        let mut writer = StreamWriter::try_new(&mut bytes, &batch().schema()).unwrap();
        writer.write(&batch()).unwrap();
        writer.write(&batch()).unwrap();
        writer.finish().unwrap();
        drop(writer);
        let error = decode(bytes).unwrap_err().to_string();
        assert!(error.contains("one record batch"), "{error}");

        let mut truncated = encode(&batch()).unwrap();
        truncated.truncate(truncated.len() / 2);
        assert!(decode(truncated).is_err());
        assert!(decode(Vec::new()).is_err());
    }
}
