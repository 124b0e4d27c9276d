//! Stages: a plugin running in the sandbox, fed one Arrow batch per call.
pub mod limits;
mod pieces;
pub mod runtime;

use arrow::record_batch::RecordBatch;
pub use limits::Limits;
pub use runtime::{PluginInfo, PluginInstance, PluginModule, RuntimeError};
use sluice_sdk::ipc;

/// A batch a stage could not process: all its rows go to the dead-letter output.
#[derive(Debug, thiserror::Error)]
#[error("stage `{stage}` (plugin {plugin}): {reason}")]
pub struct StageError {
    pub stage: String,
    pub plugin: String,
    pub reason: String,
}

/// Which plugin build a stage runs: recorded in status, metrics, commit records and the
/// metadata of every file the stage writes.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PluginVersion {
    pub name: String,
    pub version: String,
    pub sha256: String,
    #[serde(default)]
    pub stateful: bool,
    /// Where the module came from: the pipeline's plugin path, `admin API`, a rollback.
    #[serde(default)]
    pub origin: String,
}

impl PluginVersion {
    pub fn of(module: &PluginModule, info: &PluginInfo, origin: &str) -> Self {
        PluginVersion {
            name: info.name.clone(),
            version: info.version.clone(),
            sha256: module.sha256().to_string(),
            stateful: info.stateful,
            origin: origin.to_string(),
        }
    }

    /// `name@version`, as in dead letters and logs.
    pub fn label(&self) -> String {
        format!("{}@{}", self.name, self.version)
    }

    /// What files record (`sluice.plugin` metadata): `name@version sha256:<first 16>`.
    pub fn stamp(&self) -> String {
        format!(
            "{} sha256:{}",
            self.label(),
            &self.sha256[..16.min(self.sha256.len())]
        )
    }
}

/// Schema metadata key naming the plugin build that produced a file's rows.
pub const PLUGIN_METADATA: &str = "sluice.plugin";

/// One pipeline stage: a named plugin instance plus the topics it applies to.
pub struct WasmStage {
    name: String,
    instance: PluginInstance,
    topics: Option<Vec<String>>,
}

impl WasmStage {
    pub fn new(
        name: &str,
        module: &PluginModule,
        limits: Limits,
        config_json: &str,
        topics: Option<Vec<String>>,
    ) -> Result<Self, RuntimeError> {
        let instance = PluginInstance::new(module, limits, config_json)?;
        Ok(WasmStage {
            name: name.to_string(),
            instance,
            topics,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn info(&self) -> &PluginInfo {
        self.instance.info()
    }

    pub fn module(&self) -> &PluginModule {
        self.instance.module()
    }

    /// Fuel the last call used.
    pub fn last_fuel(&self) -> u64 {
        self.instance.last_fuel()
    }

    /// Whether batches of `topic` go through this stage (others pass it unchanged).
    pub fn applies_to(&self, topic: &str) -> bool {
        self.topics
            .as_ref()
            .is_none_or(|topics| topics.iter().any(|t| t == topic))
    }

    fn error(&self, reason: impl Into<String>) -> StageError {
        let info = self.instance.info();
        StageError {
            stage: self.name.clone(),
            plugin: format!("{}@{}", info.name, info.version),
            reason: reason.into(),
        }
    }

    /// Decodes what a call on `input` (`None` for a watermark) returned; an output marked as
    /// the input or rows of it ([`ipc::decode_output`]) is made from `input`, the batch the
    /// host sent.
    fn decode_outputs(
        &self,
        outputs: Vec<runtime::WitOutput>,
        input: Option<&RecordBatch>,
    ) -> Result<Vec<(String, RecordBatch)>, StageError> {
        outputs
            .into_iter()
            .map(|output| {
                let name = output.name;
                let batch = ipc::decode_output(output.batch, input)
                    .map_err(|e| self.error(format!("output `{name}` is not valid: {e}")))?;
                Ok((name, batch))
            })
            .collect()
    }

    fn call_error(&self, error: RuntimeError) -> StageError {
        match error {
            RuntimeError::Call { reason, .. } => self.error(reason),
            other => self.error(other.to_string()),
        }
    }

    /// Tells the plugin that input is complete up to `event_time_ms`; returns what it emits.
    pub fn on_watermark(
        &mut self,
        event_time_ms: i64,
    ) -> Result<Vec<(String, RecordBatch)>, StageError> {
        let outputs = self
            .instance
            .on_watermark(event_time_ms)
            .map_err(|e| self.call_error(e))?;
        self.decode_outputs(outputs, None)
    }

    pub fn snapshot(&mut self) -> Result<Vec<u8>, StageError> {
        self.instance.snapshot().map_err(|e| self.call_error(e))
    }

    pub fn restore(&mut self, state: &[u8]) -> Result<(), StageError> {
        self.instance.restore(state).map_err(|e| self.call_error(e))
    }

    /// Runs one batch through the plugin: named outputs, or an error for the whole batch.
    /// The batch is tagged with its table name (`sluice.topic` schema metadata).
    pub fn process(
        &mut self,
        topic: &str,
        batch: &RecordBatch,
    ) -> Result<Vec<(String, RecordBatch)>, StageError> {
        let batch = &sluice_sdk::with_topic(batch, topic);
        let schema = batch.schema();
        if let Some(missing) = self
            .instance
            .info()
            .inputs
            .iter()
            .find(|c| schema.field_with_name(c).is_err())
        {
            return Err(self.error(format!(
                "input column `{missing}` is missing from the batch"
            )));
        }
        let outputs = self
            .instance
            .process(batch)
            .map_err(|e| self.call_error(e))?;
        self.decode_outputs(outputs, Some(batch))
    }
}
