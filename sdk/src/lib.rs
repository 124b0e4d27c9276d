//! `sluice-sdk`: everything a Sluice plugin author depends on.
//!
//! A plugin transforms Arrow [`RecordBatch`]es inside the Sluice host's WebAssembly sandbox.
//! The SDK hides the contract (`wit/plugin.wit`): Arrow IPC encoding, the component-model glue
//! and the plugin lifecycle.
//!
//! * A stateless plugin is one function plus [`export_transform!`]:
//!
//! ```ignore
//! use sluice_sdk::prelude::*;
//!
//! fn paid_only(batch: RecordBatch) -> Result<RecordBatch, PluginError> {
//!     let level = batch.string_column("level")?;
//!     let keep: BooleanArray = level.iter().map(|l| Some(l == Some("paid"))).collect();
//!     Ok(filter_record_batch(&batch, &keep)?)
//! }
//! sluice_sdk::export_transform!(paid_only);
//! ```
//!
//! * A plugin with configuration, rejects or state implements [`Plugin`] and is exported with
//!   [`export_plugin!`].
//! * [`harness::Harness`] runs a plugin natively in `cargo test`, through the same IPC round
//!   trip the host uses; the host crate's `sluice::testing` runs the compiled `.wasm`.

mod batch_ext;
mod error;
pub mod harness;
pub mod ipc;
mod outputs;
mod plugin;
pub mod rejects;
pub mod state;

#[cfg(target_arch = "wasm32")]
#[doc(hidden)]
pub mod __wasm;

pub use batch_ext::{BatchExt, string_at};
pub use error::PluginError;
pub use outputs::Outputs;
pub use plugin::{Config, Plugin, PluginInfo};

pub use arrow_array;
pub use arrow_buffer;
pub use arrow_row;
pub use arrow_schema;
pub use arrow_select;

/// The version of the WIT contract (`sluice:plugin`) this SDK builds plugins for.
pub const CONTRACT_VERSION: &str = "0.1.0";
/// The output every plugin's main result goes to.
pub const OUT: &str = "out";
/// The output for rows a plugin rejects; each row carries [`REJECT_REASON_COLUMN`].
pub const REJECTS: &str = "rejects";
/// The column that says why a row was rejected.
pub const REJECT_REASON_COLUMN: &str = "_reject_reason";
/// Schema metadata key under which the host names the table (topic) of each input batch.
pub const TOPIC_METADATA: &str = "sluice.topic";

/// Schema metadata key under which a plugin declares the columns (comma-separated) that
/// identify a row of an output table. Sinks that upsert use it: ClickHouse tables are
/// created ordered by it, so a replayed row replaces its copy.
pub const KEY_METADATA: &str = "sluice.key";

/// `schema` with its row identity declared (see [`KEY_METADATA`]).
pub fn with_key(schema: arrow_schema::Schema, columns: &[&str]) -> arrow_schema::Schema {
    let mut metadata = schema.metadata().clone();
    metadata.insert(KEY_METADATA.to_string(), columns.join(","));
    schema.with_metadata(metadata)
}

/// The table (topic) the host says an input batch belongs to, e.g. `listen_events`.
pub fn topic_of(batch: &arrow_array::RecordBatch) -> Option<&str> {
    batch
        .schema_ref()
        .metadata()
        .get(TOPIC_METADATA)
        .map(String::as_str)
}

/// Tags a batch with its table name, as the host does before calling a plugin.
pub fn with_topic(batch: &arrow_array::RecordBatch, topic: &str) -> arrow_array::RecordBatch {
    let mut metadata = batch.schema_ref().metadata().clone();
    metadata.insert(TOPIC_METADATA.to_string(), topic.to_string());
    let schema = std::sync::Arc::new(batch.schema_ref().as_ref().clone().with_metadata(metadata));
    batch
        .clone()
        .with_schema(schema)
        .expect("only metadata changed")
}

/// What most plugins need in scope.
pub mod prelude {
    pub use crate::{
        BatchExt, Config, Outputs, Plugin, PluginError, PluginInfo, string_at, topic_of, with_key,
    };
    pub use arrow_array::cast::AsArray;
    pub use arrow_array::{
        Array, ArrayRef, BooleanArray, Float64Array, Int32Array, Int64Array, RecordBatch,
        StringArray,
    };
    pub use arrow_schema::{DataType, Field, Schema, SchemaRef};
    pub use arrow_select::filter::filter_record_batch;
}

/// Exports a type that implements [`Plugin`] as the plugin of this crate.
///
/// On `wasm32` this generates the component exports; natively it expands to nothing, so the
/// same crate is testable with [`harness::Harness`].
#[macro_export]
macro_rules! export_plugin {
    ($plugin:ty) => {
        #[cfg(target_arch = "wasm32")]
        const _: () = {
            struct SluiceGuest;
            impl $crate::__wasm::Guest for SluiceGuest {
                fn init(config: String) -> Result<$crate::__wasm::PluginInfo, String> {
                    // SLUICE_PLUGIN_VERSION at build time stamps a build (a CI number, a
                    // test's second version) without editing Cargo.toml.
                    let version = match option_env!("SLUICE_PLUGIN_VERSION") {
                        Some(version) => version,
                        None => env!("CARGO_PKG_VERSION"),
                    };
                    $crate::__wasm::init::<$plugin>(&config, env!("CARGO_PKG_NAME"), version)
                }
                fn process(batch: Vec<u8>) -> Result<Vec<$crate::__wasm::Output>, String> {
                    $crate::__wasm::process(batch)
                }
                fn on_watermark(event_time_ms: i64) -> Result<Vec<$crate::__wasm::Output>, String> {
                    $crate::__wasm::on_watermark(event_time_ms)
                }
                fn snapshot() -> Result<Vec<u8>, String> {
                    $crate::__wasm::snapshot()
                }
                fn restore(state: Vec<u8>) -> Result<(), String> {
                    $crate::__wasm::restore(&state)
                }
            }
    $crate::__wasm::__export_sluice_world!(SluiceGuest with_types_in $crate::__wasm);
        };
        // Natively the plugin type is only reached through the harness; keep it "used".
        #[cfg(not(target_arch = "wasm32"))]
        const _: fn(&$crate::Config) -> Result<$plugin, $crate::PluginError> =
            <$plugin as $crate::Plugin>::init;
    };
}

/// Exports a plain function `fn(RecordBatch) -> Result<RecordBatch, PluginError>` as a
/// stateless plugin whose result goes to the `out` output.
#[macro_export]
macro_rules! export_transform {
    ($function:path) => {
        #[doc(hidden)]
        pub struct SluiceTransform;
        impl $crate::Plugin for SluiceTransform {
            fn init(_config: &$crate::Config) -> Result<Self, $crate::PluginError> {
                Ok(SluiceTransform)
            }
            fn process(
                &mut self,
                batch: $crate::arrow_array::RecordBatch,
                out: &mut $crate::Outputs,
            ) -> Result<(), $crate::PluginError> {
                out.out($function(batch)?);
                Ok(())
            }
        }
        $crate::export_plugin!(SluiceTransform);
    };
}
