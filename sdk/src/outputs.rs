use crate::{OUT, PluginError, REJECTS, rejects};
use arrow_array::RecordBatch;

/// The named batches a plugin produces for one call.
#[derive(Debug, Default)]
pub struct Outputs {
    batches: Vec<(String, RecordBatch)>,
}

impl Outputs {
    pub fn new() -> Self {
        Self::default()
    }

    /// Sends a batch to the named output. Empty batches are dropped: they carry nothing.
    pub fn emit(&mut self, output: impl Into<String>, batch: RecordBatch) {
        if batch.num_rows() > 0 {
            self.batches.push((output.into(), batch));
        }
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
        let (kept, rejected) = rejects::split(batch, reasons)?;
        self.out(kept);
        self.emit(REJECTS, rejected);
        Ok(())
    }

    pub fn batches(&self) -> &[(String, RecordBatch)] {
        &self.batches
    }

    pub fn into_batches(self) -> Vec<(String, RecordBatch)> {
        self.batches
    }

    /// All rows sent to one output, in order.
    pub fn output(&self, name: &str) -> Vec<RecordBatch> {
        self.batches
            .iter()
            .filter(|(n, _)| n == name)
            .map(|(_, b)| b.clone())
            .collect()
    }

    pub fn rows(&self, name: &str) -> usize {
        self.output(name).iter().map(RecordBatch::num_rows).sum()
    }
}
