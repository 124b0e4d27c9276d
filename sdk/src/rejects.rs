//! Rejected rows: the same columns as the input plus `_reject_reason`.
use crate::{PluginError, REJECT_REASON_COLUMN};
use arrow_array::{ArrayRef, BooleanArray, RecordBatch, StringArray};
use arrow_schema::{DataType, Field, Schema};
use arrow_select::filter::filter_record_batch;
use std::sync::Arc;

/// Appends the `_reject_reason` column to `rows`.
pub fn with_reasons(rows: &RecordBatch, reasons: Vec<String>) -> Result<RecordBatch, PluginError> {
    if reasons.len() != rows.num_rows() {
        return Err(PluginError::other(format!(
            "{} reject reasons for {} rows",
            reasons.len(),
            rows.num_rows()
        )));
    }
    let mut fields: Vec<Arc<Field>> = rows.schema().fields().iter().cloned().collect();
    fields.push(Arc::new(Field::new(
        REJECT_REASON_COLUMN,
        DataType::Utf8,
        false,
    )));
    let mut columns: Vec<ArrayRef> = rows.columns().to_vec();
    columns.push(Arc::new(StringArray::from(reasons)));
    Ok(RecordBatch::try_new(
        Arc::new(Schema::new(fields)),
        columns,
    )?)
}

/// Splits a batch by per-row reasons (`None` keeps the row) into (kept, rejected-with-reason).
pub fn split(
    batch: &RecordBatch,
    reasons: &[Option<String>],
) -> Result<(RecordBatch, RecordBatch), PluginError> {
    let (keep, rejected) = split_kept(batch, reasons)?;
    Ok((filter_record_batch(batch, &keep)?, rejected))
}

/// [`split`] with the kept rows as a mask over `batch`: (keep, rejected-with-reason).
pub fn split_kept(
    batch: &RecordBatch,
    reasons: &[Option<String>],
) -> Result<(BooleanArray, RecordBatch), PluginError> {
    if reasons.len() != batch.num_rows() {
        return Err(PluginError::other(format!(
            "{} reasons for {} rows",
            reasons.len(),
            batch.num_rows()
        )));
    }
    let keep: BooleanArray = reasons.iter().map(|r| Some(r.is_none())).collect();
    let drop: BooleanArray = reasons.iter().map(|r| Some(r.is_some())).collect();
    let rejected = filter_record_batch(batch, &drop)?;
    let rejected_reasons = reasons.iter().flatten().cloned().collect();
    Ok((keep, with_reasons(&rejected, rejected_reasons)?))
}
