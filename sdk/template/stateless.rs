//! `{{name}}`: a stateless Sluice plugin.
//!
//! Rows that lack a value in any `required` column go to `rejects` with the reason
//! `missing_<column>`; every other row goes to `out` unchanged. Configure it in the pipeline:
//!
//! ```yaml
//! stages:
//!   - name: {{name}}
//!     plugin: {{crate}}.wasm
//!     config: { required: [userId, ts] }
//! ```
use serde::Deserialize;
use sluice_sdk::prelude::*;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct {{Type}}Config {
    /// Columns every kept row must have a value in.
    pub required: Vec<String>,
}

impl Default for {{Type}}Config {
    fn default() -> Self {
        {{Type}}Config {
            required: vec!["userId".into()],
        }
    }
}

pub struct {{Type}} {
    config: {{Type}}Config,
}

impl Plugin for {{Type}} {
    fn init(config: &Config) -> Result<Self, PluginError> {
        Ok({{Type}} {
            config: config.parse()?,
        })
    }

    /// The host checks these columns exist before the first batch, and names the missing one.
    fn inputs(&self) -> Vec<String> {
        self.config.required.clone()
    }

    fn process(&mut self, batch: RecordBatch, out: &mut Outputs) -> Result<(), PluginError> {
        let mut reasons = vec![None; batch.num_rows()];
        for name in &self.config.required {
            let column = batch.column_named(name)?;
            for (row, reason) in reasons.iter_mut().enumerate() {
                if reason.is_none() && column.is_null(row) {
                    *reason = Some(format!("missing_{name}"));
                }
            }
        }
        out.split(&batch, &reasons)
    }
}

sluice_sdk::export_plugin!({{Type}});
