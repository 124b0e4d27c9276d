//! Arrow IPC stream encoding: how batches cross the wasm boundary (one batch per message).
use crate::outputs::Rows;
use arrow_array::{Array, ArrayRef, BooleanArray, RecordBatch, RecordBatchOptions};
use arrow_buffer::Buffer;
use arrow_ipc::reader::{FileDecoder, StreamDecoder};
use arrow_ipc::writer::StreamEncoder;
use arrow_ipc::{Block, Message, MessageHeader};
use arrow_schema::{ArrowError, DataType, Field, Schema};
use arrow_select::filter::filter_record_batch;
use std::collections::HashMap;
use std::sync::Arc;

/// Schema metadata of an output that stands for the call's input batch, unchanged: a batch
/// of no columns, only a row count. A plugin that passes its input on (sessionize sends every
/// event on to the next stage) then costs no encode, no copy out of the sandbox and no
/// decode; the host uses the batch it sent.
pub const SAME_AS_INPUT_METADATA: &str = "sluice.same_as_input";

/// Schema metadata of an output that stands for some rows of the input batch, with columns of
/// its own: the output's columns in order, each an input column's index or `*` for the
/// batch's next column. The batch's last column is the mask of the rows kept (one per input
/// row); the host filters. A plugin that drops a few rows and adds a column (clean) then
/// neither filters nor encodes the input's columns, and the host does not copy them out of
/// the sandbox or check them again: 5.7 % of the instructions of the benchmark's silver job.
pub const INPUT_ROWS_METADATA: &str = "sluice.input_rows";

/// An output column that is the marker batch's next column.
const OWN_COLUMN: &str = "*";

/// Encodes one batch as an Arrow IPC stream (schema, batch, end marker).
pub fn encode(batch: &RecordBatch) -> Result<Vec<u8>, ArrowError> {
    let mut buffer = Vec::new();
    encode_into(batch, &mut buffer)?;
    Ok(buffer)
}

/// [`encode`] into `buffer`, replacing what it held: a buffer used before is written again
/// without allocating.
pub fn encode_into(batch: &RecordBatch, buffer: &mut Vec<u8>) -> Result<(), ArrowError> {
    let pieces = encode_pieces(batch)?;
    buffer.clear();
    buffer.reserve(pieces.iter().map(Buffer::len).sum());
    for piece in &pieces {
        buffer.extend_from_slice(piece.as_slice());
    }
    Ok(())
}

/// The IPC stream of [`encode`] as the pieces that make it up in order: headers and padding,
/// and the batch's own buffers, shared, not copied. Whoever joins them makes the one copy
/// (the host writes them straight into a plugin's memory).
pub fn encode_pieces(batch: &RecordBatch) -> Result<Vec<Buffer>, ArrowError> {
    let mut encoder = StreamEncoder::try_new(&batch.schema())?;
    let mut pieces = encoder.encode(batch)?;
    pieces.extend(encoder.finish()?);
    Ok(pieces)
}

/// Decodes an IPC stream that holds exactly one batch (or none: an empty batch of its
/// schema), taking the bytes over: the batch's arrays are slices of them, not copies. This is
/// how the host reads a plugin's outputs (a plugin reads its input the same way, without the
/// checks: [`decode_unchecked`]), so a batch crosses the wasm boundary with one encode and
/// one copy each way (the one the component model makes).
pub fn decode(bytes: Vec<u8>) -> Result<RecordBatch, ArrowError> {
    let mut buffer = Buffer::from_vec(bytes);
    let mut decoder = StreamDecoder::new();
    let mut batch = None;
    while !buffer.is_empty() {
        match decoder.decode(&mut buffer)? {
            Some(_) if batch.is_some() => return Err(more_than_one_batch()),
            Some(decoded) => batch = Some(decoded),
            None => {}
        }
    }
    decoder.finish()?;
    one_batch(batch, decoder.schema())
}

/// [`decode`] without checking the arrays: offsets in bounds, strings UTF-8. That check was
/// 3 % of a pipeline's CPU in the guest, and it checks what the host checked already: a
/// plugin decodes only the batches the host encoded.
///
/// arrow-ipc's `StreamDecoder` (59, 60) takes a skip-validation flag but applies it to
/// dictionaries only, so the stream's messages are framed here and read with its
/// `FileDecoder`, which applies it to record batches too.
///
/// # Safety
/// `bytes` must be an IPC stream that arrow-ipc wrote from valid arrays, as [`encode`] does.
/// (In a plugin, anything else could corrupt only the plugin's own linear memory: the sandbox
/// keeps the host safe either way.)
pub unsafe fn decode_unchecked(bytes: Vec<u8>) -> Result<RecordBatch, ArrowError> {
    let mut rest = Buffer::from_vec(bytes);
    let mut decoder: Option<FileDecoder> = None;
    let mut stream_schema = None;
    let mut batch = None;
    while let Some((metadata_len, header)) = next_message(&rest)? {
        let body_len = usize::try_from(header.bodyLength())
            .map_err(|_| ArrowError::IpcError("a negative body length".into()))?;
        let message_len = metadata_len + body_len;
        if message_len > rest.len() {
            return Err(ArrowError::IpcError(format!(
                "a message of {message_len} bytes in the {} left",
                rest.len()
            )));
        }
        let message = rest.slice_with_length(0, message_len);
        let block = Block::new(0, metadata_len as i32, body_len as i64);
        match (header.header_type(), decoder.as_mut()) {
            (MessageHeader::Schema, None) => {
                let schema = header
                    .header_as_schema()
                    .map(arrow_ipc::convert::fb_to_schema)
                    .ok_or_else(|| ArrowError::IpcError("a schema message without one".into()))?;
                let schema = Arc::new(schema);
                let file_decoder = FileDecoder::new(schema.clone(), header.version());
                // SAFETY: the caller vouches that the arrays are valid.
                decoder = Some(unsafe { file_decoder.with_skip_validation(true) });
                stream_schema = Some(schema);
            }
            (MessageHeader::DictionaryBatch, Some(decoder)) => {
                decoder.read_dictionary(&block, &message)?
            }
            (MessageHeader::RecordBatch, Some(decoder)) if batch.is_none() => {
                batch = decoder.read_record_batch(&block, &message)?
            }
            (MessageHeader::RecordBatch, Some(_)) => return Err(more_than_one_batch()),
            (header, _) => {
                return Err(ArrowError::IpcError(format!(
                    "unexpected {header:?} message in a stream of one batch"
                )));
            }
        }
        rest = rest.slice(message_len);
    }
    one_batch(batch, stream_schema)
}

/// The next message's metadata length (with its prefix) and metadata; `None` at the end of
/// the stream.
fn next_message(rest: &[u8]) -> Result<Option<(usize, Message<'_>)>, ArrowError> {
    if rest.is_empty() {
        return Ok(None);
    }
    let prefix = metadata_prefix(rest);
    let length = rest
        .get(prefix - 4..prefix)
        .map(|b| i32::from_le_bytes(b.try_into().expect("four bytes")))
        .ok_or_else(|| ArrowError::IpcError("a truncated message length".into()))?;
    if length == 0 {
        return Ok(None);
    }
    let metadata_len = usize::try_from(length)
        .map(|length| prefix + length)
        .map_err(|_| ArrowError::IpcError(format!("a negative message length {length}")))?;
    let metadata = rest
        .get(prefix..metadata_len)
        .ok_or_else(|| ArrowError::IpcError("a truncated message".into()))?;
    let header = arrow_ipc::root_as_message(metadata)
        .map_err(|e| ArrowError::IpcError(format!("an unreadable message: {e}")))?;
    Ok(Some((metadata_len, header)))
}

/// Bytes before a message's metadata: the continuation marker and the length, or (before
/// format 0.15) the length alone.
fn metadata_prefix(message: &[u8]) -> usize {
    if message.starts_with(&[0xff; 4]) {
        8
    } else {
        4
    }
}

fn more_than_one_batch() -> ArrowError {
    ArrowError::IpcError("expected one record batch per IPC message, found more".to_string())
}

/// The stream's batch, or an empty batch of its schema when it held none.
fn one_batch(
    batch: Option<RecordBatch>,
    schema: Option<arrow_schema::SchemaRef>,
) -> Result<RecordBatch, ArrowError> {
    match (batch, schema) {
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

/// Encodes one output of a call on `input` (`None` for a watermark): the input itself as a
/// [`same_as_input`] marker, kept rows of the input's columns as an [`INPUT_ROWS_METADATA`]
/// marker, anything else as it is.
pub(crate) fn encode_output(
    rows: Rows,
    input: Option<&RecordBatch>,
) -> Result<Vec<u8>, ArrowError> {
    match (rows, input) {
        (Rows::Batch(batch), Some(input)) if is_input(input, &batch) => {
            encode(&same_as_input(batch.num_rows())?)
        }
        (Rows::Kept { batch, keep }, Some(input)) if batch.num_rows() == input.num_rows() => {
            encode(&input_rows(&batch, keep, input)?)
        }
        (rows, _) => encode(&rows.into_batch()),
    }
}

/// The [`INPUT_ROWS_METADATA`] marker for the rows of `batch` that `keep` keeps.
fn input_rows(
    batch: &RecordBatch,
    keep: BooleanArray,
    input: &RecordBatch,
) -> Result<RecordBatch, ArrowError> {
    let schema = batch.schema_ref();
    let (mut fields, mut columns, mut sources) = (Vec::new(), Vec::new(), Vec::new());
    for (field, column) in schema.fields().iter().zip(batch.columns()) {
        let from_input = input
            .columns()
            .iter()
            .zip(input.schema_ref().fields())
            .position(|(c, f)| Arc::ptr_eq(c, column) && f == field);
        match from_input {
            Some(index) => sources.push(index.to_string()),
            None => {
                sources.push(OWN_COLUMN.to_string());
                fields.push(field.clone());
                columns.push(column.clone());
            }
        }
    }
    fields.push(Arc::new(Field::new(
        "_sluice_keep",
        DataType::Boolean,
        true,
    )));
    columns.push(Arc::new(keep) as ArrayRef);
    let mut metadata = schema.metadata().clone();
    metadata.insert(INPUT_ROWS_METADATA.to_string(), sources.join(","));
    RecordBatch::try_new(
        Arc::new(Schema::new(fields).with_metadata(metadata)),
        columns,
    )
}

/// Decodes one output of a call on `input` (`None` for a watermark), checking it: the
/// [`same_as_input`] and [`INPUT_ROWS_METADATA`] markers are resolved against `input`.
pub fn decode_output(
    bytes: Vec<u8>,
    input: Option<&RecordBatch>,
) -> Result<RecordBatch, ArrowError> {
    let batch = decode(bytes)?;
    let marker = |what: &str| {
        ArrowError::InvalidArgumentError(format!(
            "marked as {what}, but there is no input of {} rows",
            batch.num_rows()
        ))
    };
    if is_same_as_input(&batch) {
        return match input {
            Some(input) if input.num_rows() == batch.num_rows() => Ok(input.clone()),
            _ => Err(marker("the input batch")),
        };
    }
    let Some(sources) = batch.schema_ref().metadata().get(INPUT_ROWS_METADATA) else {
        return Ok(batch);
    };
    let input = match input {
        Some(input) if input.num_rows() == batch.num_rows() => input,
        _ => return Err(marker("rows of the input batch")),
    };
    let invalid =
        |why: String| ArrowError::InvalidArgumentError(format!("{INPUT_ROWS_METADATA}: {why}"));
    let Some((keep, own)) = batch.columns().split_last() else {
        return Err(invalid("no mask column".into()));
    };
    let keep = keep
        .as_any()
        .downcast_ref::<BooleanArray>()
        .ok_or_else(|| invalid(format!("the mask is {}, not boolean", keep.data_type())))?;
    // The mask's field is left out by the zip: `own` has one column fewer.
    let mut own_columns = batch.schema_ref().fields().iter().zip(own);
    let (mut fields, mut columns) = (Vec::new(), Vec::new());
    for source in sources.split(',').filter(|s| !s.is_empty()) {
        let (field, column) = if source == OWN_COLUMN {
            own_columns
                .next()
                .map(|(f, c)| (f.clone(), c.clone()))
                .ok_or_else(|| {
                    invalid(format!(
                        "more `{OWN_COLUMN}` than the {} columns sent",
                        own.len()
                    ))
                })?
        } else {
            source
                .parse::<usize>()
                .ok()
                .filter(|&index| index < input.num_columns())
                .map(|index| {
                    (
                        input.schema_ref().fields()[index].clone(),
                        input.column(index).clone(),
                    )
                })
                .ok_or_else(|| {
                    invalid(format!(
                        "`{source}` is not a column of the input's {}",
                        input.num_columns()
                    ))
                })?
        };
        fields.push(field);
        columns.push(column);
    }
    if own_columns.len() > 0 {
        return Err(invalid(format!(
            "{} columns sent, {} used",
            own.len(),
            own.len() - own_columns.len()
        )));
    }
    let mut metadata = batch.schema_ref().metadata().clone();
    metadata.remove(INPUT_ROWS_METADATA);
    let all_rows = RecordBatch::try_new_with_options(
        Arc::new(Schema::new(fields).with_metadata(metadata)),
        columns,
        &RecordBatchOptions::new().with_row_count(Some(input.num_rows())),
    )?;
    filter_record_batch(&all_rows, keep)
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_array::types::Int32Type;
    use arrow_array::{DictionaryArray, Int64Array, StringArray};
    use arrow_ipc::writer::StreamWriter;
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
    fn the_pieces_joined_are_the_stream_arrows_writer_writes() {
        let with_nulls = RecordBatch::try_from_iter([
            (
                "id",
                Arc::new(Int64Array::from(vec![Some(1), None, Some(3), Some(4)])) as ArrayRef,
            ),
            (
                "name",
                Arc::new(StringArray::from(vec![
                    Some("ä"),
                    Some("b"),
                    None,
                    Some(""),
                ])) as ArrayRef,
            ),
        ])
        .unwrap();
        // A slice shares its parent's buffers from an offset: the pieces must cut them.
        for batch in [batch(), with_nulls.clone(), with_nulls.slice(1, 2)] {
            let mut written = Vec::new();
            let mut writer = StreamWriter::try_new(&mut written, &batch.schema()).unwrap();
            writer.write(&batch).unwrap();
            writer.finish().unwrap();
            let joined: Vec<u8> = encode_pieces(&batch)
                .unwrap()
                .iter()
                .flat_map(|piece| piece.as_slice().to_vec())
                .collect();
            assert_eq!(joined, written);
            assert_eq!(encode(&batch).unwrap(), written);
            assert_eq!(decode(joined).unwrap(), batch);
        }
    }

    #[test]
    fn a_batch_the_host_encoded_decodes_the_same_without_the_checks() {
        let nulls = RecordBatch::try_from_iter([(
            "name",
            Arc::new(StringArray::from(vec![
                Some("ä"),
                None,
                Some(""),
                Some("déjà"),
            ])) as ArrayRef,
        )])
        .unwrap();
        let dictionary: DictionaryArray<Int32Type> =
            vec![Some("gold"), None, Some("free"), Some("gold")]
                .into_iter()
                .collect();
        let dictionary =
            RecordBatch::try_from_iter([("level", Arc::new(dictionary) as ArrayRef)]).unwrap();
        let empty = RecordBatch::new_empty(batch().schema());
        for batch in [
            batch(),
            batch().slice(1, 2),
            nulls.slice(1, 3),
            dictionary,
            empty,
        ] {
            let bytes = encode(&batch).unwrap();
            assert_eq!(decode(bytes.clone()).unwrap(), batch);
            // SAFETY: `encode` wrote it from valid arrays.
            assert_eq!(unsafe { decode_unchecked(bytes) }.unwrap(), batch);
        }
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

    /// `batch()` (id, name) with an own `score` column after them, and its schema metadata.
    fn with_score(input: &RecordBatch) -> RecordBatch {
        let mut fields: Vec<_> = input.schema().fields().iter().cloned().collect();
        fields.push(Arc::new(Field::new("score", DataType::Int64, true)));
        let mut columns = input.columns().to_vec();
        columns.push(Arc::new(Int64Array::from(vec![Some(10), None, Some(30)])));
        let schema =
            Schema::new(fields).with_metadata(HashMap::from([("sluice.key".into(), "id".into())]));
        RecordBatch::try_new(Arc::new(schema), columns).unwrap()
    }

    #[test]
    fn kept_rows_of_the_input_cross_as_a_mask_and_the_new_columns() {
        let input = batch();
        let output = with_score(&input);
        let keep = BooleanArray::from(vec![Some(true), Some(false), None]);
        let expected = filter_record_batch(&output, &keep).unwrap();
        let kept = || Rows::Kept {
            batch: output.clone(),
            keep: keep.clone(),
        };

        let bytes = encode_output(kept(), Some(&input)).unwrap();
        let marker = decode(bytes.clone()).unwrap();
        assert_eq!(
            marker.num_columns(),
            2,
            "only `score` and the mask are sent"
        );
        assert_eq!(marker.schema().metadata()[INPUT_ROWS_METADATA], "0,1,*");
        let decoded = decode_output(bytes, Some(&input)).unwrap();
        assert_eq!(decoded, expected);
        assert_eq!(decoded.schema().metadata()["sluice.key"], "id");
        assert!(
            !decoded
                .schema()
                .metadata()
                .contains_key(INPUT_ROWS_METADATA)
        );

        // Without an input (a watermark) the rows are filtered and sent whole.
        let bytes = encode_output(kept(), None).unwrap();
        assert_eq!(decode(bytes.clone()).unwrap(), expected);
        assert_eq!(decode_output(bytes, None).unwrap(), expected);

        // An input column under another name is a column of the output's own.
        let renamed = RecordBatch::try_from_iter([
            ("key", input.column(0).clone()),
            ("name", input.column(1).clone()),
        ])
        .unwrap();
        let rows = Rows::Kept {
            batch: renamed.clone(),
            keep: keep.clone(),
        };
        let bytes = encode_output(rows, Some(&input)).unwrap();
        assert_eq!(
            decode(bytes.clone()).unwrap().schema().metadata()[INPUT_ROWS_METADATA],
            "*,1"
        );
        assert_eq!(
            decode_output(bytes, Some(&input)).unwrap(),
            filter_record_batch(&renamed, &keep).unwrap()
        );
    }

    #[test]
    fn a_marker_that_does_not_fit_the_input_is_refused() {
        let input = batch();
        let marker = |sources: &str, columns: Vec<(&str, ArrayRef)>| {
            let batch = RecordBatch::try_from_iter(columns).unwrap();
            let metadata = HashMap::from([(INPUT_ROWS_METADATA.to_string(), sources.to_string())]);
            let schema = batch.schema().as_ref().clone().with_metadata(metadata);
            encode(&batch.with_schema(Arc::new(schema)).unwrap()).unwrap()
        };
        let keep = || Arc::new(BooleanArray::from(vec![true, false, true])) as ArrayRef;
        let score = || Arc::new(Int64Array::from(vec![1, 2, 3])) as ArrayRef;
        let good = marker("1,*", vec![("score", score()), ("keep", keep())]);
        let decoded = decode_output(good.clone(), Some(&input)).unwrap();
        assert_eq!(decoded.num_rows(), 2);
        assert_eq!(decoded.schema().field(0).name(), "name");

        for (bytes, input, expected) in [
            (good.clone(), None, "no input of 3 rows"),
            (good, Some(input.slice(0, 2)), "no input of 3 rows"),
            (
                marker("2,*", vec![("score", score()), ("keep", keep())]),
                Some(input.clone()),
                "`2` is not a column",
            ),
            (
                marker("x", vec![("keep", keep())]),
                Some(input.clone()),
                "`x` is not a column",
            ),
            (
                marker("*,*", vec![("score", score()), ("keep", keep())]),
                Some(input.clone()),
                "more `*`",
            ),
            (
                marker("0", vec![("score", score()), ("keep", keep())]),
                Some(input.clone()),
                "1 columns sent, 0 used",
            ),
            (
                marker("0,*", vec![("score", score()), ("keep", score())]),
                Some(input.clone()),
                "not boolean",
            ),
        ] {
            let error = decode_output(bytes, input.as_ref())
                .unwrap_err()
                .to_string();
            assert!(error.contains(expected), "{error}");
        }
        let same = encode(&same_as_input(3).unwrap()).unwrap();
        assert_eq!(decode_output(same.clone(), Some(&input)).unwrap(), input);
        let error = decode_output(same, None).unwrap_err().to_string();
        assert!(error.contains("marked as the input batch"), "{error}");
    }

    #[test]
    fn two_batches_or_broken_bytes_are_refused() {
        let mut bytes = Vec::new();
        let mut writer = StreamWriter::try_new(&mut bytes, &batch().schema()).unwrap();
        writer.write(&batch()).unwrap();
        writer.write(&batch()).unwrap();
        writer.finish().unwrap();
        drop(writer);
        let error = decode(bytes.clone()).unwrap_err().to_string();
        assert!(error.contains("one record batch"), "{error}");

        let mut truncated = encode(&batch()).unwrap();
        truncated.truncate(truncated.len() / 2);
        assert!(decode(truncated.clone()).is_err());
        assert!(decode(Vec::new()).is_err());

        // Unchecked arrays, but the framing is still checked.
        // SAFETY: the two-batch stream was written from valid arrays; the others are refused
        // by their framing before any array is built.
        unsafe {
            let error = decode_unchecked(bytes).unwrap_err().to_string();
            assert!(error.contains("one record batch"), "{error}");
            assert!(decode_unchecked(truncated).is_err());
            assert!(decode_unchecked(Vec::new()).is_err());
            assert!(decode_unchecked(vec![0xff, 0xff, 0xff, 0xff, 7]).is_err());
        }
    }
}
