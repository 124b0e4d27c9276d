use crate::{Outputs, PluginError};
use arrow_array::RecordBatch;
use serde::de::DeserializeOwned;

/// The stage's `config:` block from the pipeline YAML.
#[derive(Debug, Clone, Default)]
pub struct Config(serde_json::Value);

impl Config {
    /// Parses the host's JSON rendering of the YAML `config:` block; empty means `{}`.
    pub fn from_json(json: &str) -> Result<Self, PluginError> {
        if json.trim().is_empty() {
            return Ok(Config(serde_json::Value::Object(Default::default())));
        }
        serde_json::from_str(json)
            .map(Config)
            .map_err(|e| PluginError::Config(format!("not valid JSON: {e}")))
    }

    /// Deserialises the whole block into the plugin's own config type.
    pub fn parse<T: DeserializeOwned>(&self) -> Result<T, PluginError> {
        let value = match &self.0 {
            serde_json::Value::Null => serde_json::Value::Object(Default::default()),
            other => other.clone(),
        };
        serde_json::from_value(value).map_err(|e| PluginError::Config(e.to_string()))
    }

    pub fn value(&self) -> &serde_json::Value {
        &self.0
    }
}

/// What the host learns about a plugin after `init`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PluginInfo {
    pub name: String,
    pub version: String,
    /// Columns the plugin needs in every input batch.
    pub inputs: Vec<String>,
    /// Whether `snapshot`/`restore` carry state.
    pub stateful: bool,
}

/// A transform plugin. One instance lives in one sandbox and sees one batch at a time.
///
/// Only `init` and `process` are required; a stateful plugin also implements `snapshot` and
/// `restore`, and usually `on_watermark`.
pub trait Plugin: Sized + 'static {
    /// Builds the plugin from the stage's config; an error stops the pipeline before it runs.
    fn init(config: &Config) -> Result<Self, PluginError>;

    /// Transforms one batch; write results with [`Outputs::out`] and [`Outputs::reject`].
    fn process(&mut self, batch: RecordBatch, out: &mut Outputs) -> Result<(), PluginError>;

    /// Input columns this plugin needs; the host checks every batch's schema against them.
    fn inputs(&self) -> Vec<String> {
        Vec::new()
    }

    /// True when the plugin keeps state across batches that the host must checkpoint.
    fn stateful(&self) -> bool {
        false
    }

    /// Event time (epoch ms) up to which input is complete; `i64::MAX` at the end of input.
    fn on_watermark(&mut self, _event_time_ms: i64, _out: &mut Outputs) -> Result<(), PluginError> {
        Ok(())
    }

    fn snapshot(&self) -> Result<Vec<u8>, PluginError> {
        Ok(Vec::new())
    }

    fn restore(&mut self, _state: &[u8]) -> Result<(), PluginError> {
        Ok(())
    }
}
