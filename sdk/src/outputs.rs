use crate::{OUT, PluginError, REJECTS, rejects};
use arrow_array::{BooleanArray, RecordBatch};
use arrow_select::filter::filter_record_batch;

/// The named batches a plugin produces for one call.
#[derive(Debug, Default)]
pub struct Outputs {
    batches: Vec<(String, Rows)>,
}

/// One output's rows.
#[derive(Debug, Clone)]
pub(crate) enum Rows {
    Batch(RecordBatch),
    /// The rows of `batch` that `keep` keeps. Filtered only when read: the host filters what
    /// is left of its own input batch (see [`crate::ipc::INPUT_ROWS_METADATA`]).
    Kept {
        batch: RecordBatch,
        keep: BooleanArray,
    },
}

impl Rows {
    pub(crate) fn into_batch(self) -> RecordBatch {
        match self {
            Rows::Batch(batch) => batch,
            Rows::Kept { batch, keep } => filter_record_batch(&batch, &keep)
                .expect("the mask has a value for each row, checked by `Outputs::emit_kept`"),
        }
    }
}

impl Outputs {
    pub fn new() -> Self {
        Self::default()
    }

    /// Sends a batch to the named output. Empty batches are dropped: they carry nothing.
    pub fn emit(&mut self, output: impl Into<String>, batch: RecordBatch) {
        if batch.num_rows() > 0 {
            self.batches.push((output.into(), Rows::Batch(batch)));
        }
    }

    /// Sends the rows of `batch` that `keep` keeps (true; false and null drop a row) to the
    /// named output. Cheaper than filtering first when `batch` holds columns of the input
    /// batch unchanged: those are filtered by the host, not copied in and out of the plugin.
    pub fn emit_kept(
        &mut self,
        output: impl Into<String>,
        batch: RecordBatch,
        keep: BooleanArray,
    ) -> Result<(), PluginError> {
        if keep.len() != batch.num_rows() {
            return Err(PluginError::other(format!(
                "a mask of {} rows for a batch of {}",
                keep.len(),
                batch.num_rows()
            )));
        }
        if keep.true_count() > 0 {
            self.batches
                .push((output.into(), Rows::Kept { batch, keep }));
        }
        Ok(())
    }

    /// Sends a batch to `out`.
    pub fn out(&mut self, batch: RecordBatch) {
        self.emit(OUT, batch);
    }

    /// Sends `rows` to `rejects`, each with its reason in `_reject_reason`.
    pub fn reject(&mut self, rows: RecordBatch, reasons: Vec<String>) -> Result<(), PluginError> {
        let with_reason = rejects::with_reasons(&rows, reasons)?;
        self.emit(REJECTS, with_reason);
        Ok(())
    }

    /// Splits `batch` by `reasons` (one per row, `None` = keep): kept rows go to `out`,
    /// the others to `rejects` with their reason.
    pub fn split(
        &mut self,
        batch: &RecordBatch,
        reasons: &[Option<String>],
    ) -> Result<(), PluginError> {
        let (keep, rejected) = rejects::split_kept(batch, reasons)?;
        self.emit_kept(OUT, batch.clone(), keep)?;
        self.emit(REJECTS, rejected);
        Ok(())
    }

    /// Every output batch in order, filtered.
    pub fn batches(&self) -> Vec<(String, RecordBatch)> {
        self.batches
            .iter()
            .map(|(name, rows)| (name.clone(), rows.clone().into_batch()))
            .collect()
    }

    pub fn into_batches(self) -> Vec<(String, RecordBatch)> {
        self.batches
            .into_iter()
            .map(|(name, rows)| (name, rows.into_batch()))
            .collect()
    }

    pub(crate) fn into_rows(self) -> Vec<(String, Rows)> {
        self.batches
    }

    /// All rows sent to one output, in order.
    pub fn output(&self, name: &str) -> Vec<RecordBatch> {
        self.batches
            .iter()
            .filter(|(n, _)| n == name)
            .map(|(_, rows)| rows.clone().into_batch())
            .collect()
    }

    pub fn rows(&self, name: &str) -> usize {
        self.batches
            .iter()
            .filter(|(n, _)| n == name)
            .map(|(_, rows)| match rows {
                Rows::Batch(batch) => batch.num_rows(),
                Rows::Kept { keep, .. } => keep.true_count(),
            })
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_array::{ArrayRef, Int64Array};
    use std::sync::Arc;

    fn numbers() -> RecordBatch {
        let column = Arc::new(Int64Array::from(vec![1, 2, 3])) as ArrayRef;
        RecordBatch::try_from_iter([("n", column)]).unwrap()
    }

    #[test]
    fn kept_rows_read_as_the_filtered_batch() {
        let mut out = Outputs::new();
        let keep = BooleanArray::from(vec![Some(true), None, Some(true)]);
        out.emit_kept(OUT, numbers(), keep).unwrap();
        out.emit_kept("none", numbers(), BooleanArray::from(vec![false; 3]))
            .unwrap();
        assert_eq!(out.rows(OUT), 2);
        let expected =
            RecordBatch::try_from_iter([("n", Arc::new(Int64Array::from(vec![1, 3])) as ArrayRef)])
                .unwrap();
        assert_eq!(out.output(OUT), std::slice::from_ref(&expected));
        assert_eq!(
            out.batches().len(),
            1,
            "a mask that keeps nothing emits nothing"
        );
        assert_eq!(out.into_batches(), [(OUT.to_string(), expected)]);

        let error = Outputs::new()
            .emit_kept(OUT, numbers(), BooleanArray::from(vec![true]))
            .unwrap_err();
        assert!(
            error
                .to_string()
                .contains("a mask of 1 rows for a batch of 3")
        );
    }
}
