//! Runs a plugin natively, in `cargo test`, exactly as the host calls it: every batch makes
//! the same Arrow IPC round trip it makes across the wasm boundary.
use crate::{Config, Outputs, Plugin, PluginError, ipc};
use arrow_array::RecordBatch;
#[cfg(not(target_arch = "wasm32"))]
use arrow_schema::SchemaRef;

pub struct Harness<P: Plugin> {
    plugin: P,
}

impl<P: Plugin> Harness<P> {
    /// Initialises the plugin with a config given as JSON (`""` or `"{}"` for none).
    pub fn new(config_json: &str) -> Result<Self, PluginError> {
        let config = Config::from_json(config_json)?;
        Ok(Harness {
            plugin: P::init(&config)?,
        })
    }

    pub fn plugin(&self) -> &P {
        &self.plugin
    }

    pub fn process(&mut self, batch: &RecordBatch) -> Result<Outputs, PluginError> {
        let batch = ipc::decode(ipc::encode(batch)?)?;
        let mut out = Outputs::new();
        self.plugin.process(batch.clone(), &mut out)?;
        roundtrip(out, Some(&batch))
    }

    /// Processes a batch tagged with its table name, as the host sends it.
    pub fn process_topic(
        &mut self,
        topic: &str,
        batch: &RecordBatch,
    ) -> Result<Outputs, PluginError> {
        self.process(&crate::with_topic(batch, topic))
    }

    pub fn on_watermark(&mut self, event_time_ms: i64) -> Result<Outputs, PluginError> {
        let mut out = Outputs::new();
        self.plugin.on_watermark(event_time_ms, &mut out)?;
        roundtrip(out, None)
    }

    /// Snapshots this instance's state and restores it into a fresh instance, as the host
    /// does across a checkpoint or a hot-swap.
    pub fn restart(self, config_json: &str) -> Result<Self, PluginError> {
        let state = self.plugin.snapshot()?;
        let mut next = Self::new(config_json)?;
        next.plugin.restore(&state)?;
        Ok(next)
    }
}

/// Outputs as the host reads them: encoded as the wasm glue encodes them, decoded as the host
/// decodes them.
fn roundtrip(out: Outputs, input: Option<&RecordBatch>) -> Result<Outputs, PluginError> {
    let mut decoded = Outputs::new();
    for (name, rows) in out.into_rows() {
        decoded.emit(
            name,
            ipc::decode_output(ipc::encode_output(rows, input)?, input)?,
        );
    }
    Ok(decoded)
}

/// Builds a batch from JSON lines with a given schema: table-shaped test inputs.
#[cfg(not(target_arch = "wasm32"))]
pub fn batch_from_json(schema: SchemaRef, lines: &[&str]) -> Result<RecordBatch, PluginError> {
    let mut decoder = arrow_json::ReaderBuilder::new(schema.clone())
        .with_batch_size(lines.len().max(1))
        .build_decoder()?;
    decoder.decode(lines.join("\n").as_bytes())?;
    Ok(decoder
        .flush()?
        .unwrap_or_else(|| RecordBatch::new_empty(schema)))
}

/// Renders batches as a table, for golden-output assertions in tests.
#[cfg(not(target_arch = "wasm32"))]
pub fn pretty(batches: &[RecordBatch]) -> String {
    arrow_cast::pretty::pretty_format_batches(batches)
        .map(|table| table.to_string())
        .unwrap_or_else(|e| format!("<unprintable: {e}>"))
}
