//! The component-model glue behind `export_plugin!`; only compiled for wasm32.
use crate::{Config, Outputs, Plugin, PluginError, ipc};
use std::cell::RefCell;

wit_bindgen::generate!({
    path: "wit",
    world: "plugin",
    pub_export_macro: true,
    export_macro_name: "__export_sluice_world",
    default_bindings_module: "sluice_sdk::__wasm",
});

pub use exports::sluice::plugin::guest::{Guest, Output, PluginInfo};

/// The one plugin instance of this component, created by `init`.
trait ErasedPlugin {
    fn process(
        &mut self,
        batch: arrow_array::RecordBatch,
        out: &mut Outputs,
    ) -> Result<(), PluginError>;
    fn on_watermark(&mut self, event_time_ms: i64, out: &mut Outputs) -> Result<(), PluginError>;
    fn snapshot(&self) -> Result<Vec<u8>, PluginError>;
    fn restore(&mut self, state: &[u8]) -> Result<(), PluginError>;
}

impl<P: Plugin> ErasedPlugin for P {
    fn process(
        &mut self,
        batch: arrow_array::RecordBatch,
        out: &mut Outputs,
    ) -> Result<(), PluginError> {
        Plugin::process(self, batch, out)
    }
    fn on_watermark(&mut self, event_time_ms: i64, out: &mut Outputs) -> Result<(), PluginError> {
        Plugin::on_watermark(self, event_time_ms, out)
    }
    fn snapshot(&self) -> Result<Vec<u8>, PluginError> {
        Plugin::snapshot(self)
    }
    fn restore(&mut self, state: &[u8]) -> Result<(), PluginError> {
        Plugin::restore(self, state)
    }
}

thread_local! {
    static INSTANCE: RefCell<Option<Box<dyn ErasedPlugin>>> = RefCell::new(None);
}

fn with_instance<T>(
    f: impl FnOnce(&mut dyn ErasedPlugin) -> Result<T, PluginError>,
) -> Result<T, String> {
    INSTANCE.with(|cell| match cell.borrow_mut().as_deref_mut() {
        Some(plugin) => f(plugin).map_err(|e| e.to_string()),
        None => Err("plugin called before init".to_string()),
    })
}

/// Encodes the outputs of a call on `input` (`None` for a watermark): what is the input, or
/// rows of it, goes as a marker ([`ipc::encode_output`]).
fn encode_outputs(
    outputs: Outputs,
    input: Option<&arrow_array::RecordBatch>,
) -> Result<Vec<Output>, PluginError> {
    outputs
        .into_rows()
        .into_iter()
        .map(|(name, rows)| {
            let batch = ipc::encode_output(rows, input)?;
            Ok(Output { name, batch })
        })
        .collect()
}

pub fn init<P: Plugin>(config: &str, name: &str, version: &str) -> Result<PluginInfo, String> {
    let plugin = Config::from_json(config)
        .and_then(|config| P::init(&config))
        .map_err(|e| e.to_string())?;
    let info = PluginInfo {
        name: name.to_string(),
        version: version.to_string(),
        inputs: plugin.inputs(),
        stateful: plugin.stateful(),
    };
    INSTANCE.with(|cell| *cell.borrow_mut() = Some(Box::new(plugin)));
    Ok(info)
}

pub fn process(batch: Vec<u8>) -> Result<Vec<Output>, String> {
    with_instance(|plugin| {
        // SAFETY: only the host calls `process`, with a batch it encoded with `ipc::encode`
        // from valid arrays: its own, or a stage's output it decoded with `ipc::decode`.
        let batch = unsafe { ipc::decode_unchecked(batch) }?;
        let mut out = Outputs::new();
        plugin.process(batch.clone(), &mut out)?;
        encode_outputs(out, Some(&batch))
    })
}

pub fn on_watermark(event_time_ms: i64) -> Result<Vec<Output>, String> {
    with_instance(|plugin| {
        let mut out = Outputs::new();
        plugin.on_watermark(event_time_ms, &mut out)?;
        encode_outputs(out, None)
    })
}

pub fn snapshot() -> Result<Vec<u8>, String> {
    with_instance(|plugin| plugin.snapshot())
}

pub fn restore(state: &[u8]) -> Result<(), String> {
    with_instance(|plugin| plugin.restore(state))
}
