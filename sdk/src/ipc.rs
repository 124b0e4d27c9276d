//! Arrow IPC stream encoding: how batches cross the wasm boundary (one batch per message).
use arrow_array::RecordBatch;
use arrow_ipc::reader::StreamReader;
use arrow_ipc::writer::StreamWriter;
use arrow_schema::ArrowError;

/// Encodes one batch as an Arrow IPC stream (schema, batch, end marker).
pub fn encode(batch: &RecordBatch) -> Result<Vec<u8>, ArrowError> {
    let mut buffer = Vec::with_capacity(batch.get_array_memory_size() + 1024);
    let mut writer = StreamWriter::try_new(&mut buffer, &batch.schema())?;
    writer.write(batch)?;
    writer.finish()?;
    drop(writer);
    Ok(buffer)
}

/// Decodes an IPC stream that holds exactly one batch (or none: an empty batch of its schema).
pub fn decode(bytes: &[u8]) -> Result<RecordBatch, ArrowError> {
    let mut reader = StreamReader::try_new(bytes, None)?;
    let schema = reader.schema();
    let batch = match reader.next() {
        Some(batch) => batch?,
        None => return Ok(RecordBatch::new_empty(schema)),
    };
    if reader.next().is_some() {
        return Err(ArrowError::IpcError(
            "expected one record batch per IPC message, found more".to_string(),
        ));
    }
    Ok(batch)
}
