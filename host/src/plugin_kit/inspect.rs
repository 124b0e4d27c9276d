//! `sluice plugin inspect PLUGIN.wasm`: what a component is, what it says about itself, and
//! whether this host's sandbox would run it.
use super::{KitError, io};
use crate::stage::runtime::{self, CONTRACT_VERSION, Interfaces};
use crate::stage::{Limits, PluginInfo, PluginInstance, PluginModule};
use std::fmt::Write;
use std::path::{Path, PathBuf};

#[derive(Debug)]
pub struct Inspection {
    pub path: PathBuf,
    pub size: u64,
    pub sha256: String,
    pub interfaces: Interfaces,
    /// The `sluice:plugin` contract version the component exports, if any.
    pub contract: Option<String>,
    /// Why the host would not load it (contract, sandbox imports), if it would not.
    pub refusal: Option<String>,
    /// What `init` returned with the given config, or why it failed.
    pub info: Option<Result<PluginInfo, String>>,
}

impl Inspection {
    /// Whether a pipeline could run this plugin as inspected.
    pub fn usable(&self) -> bool {
        self.refusal.is_none() && matches!(self.info, Some(Ok(_)))
    }
}

pub fn inspect(path: &Path, config_json: &str) -> Result<Inspection, KitError> {
    let bytes = std::fs::read(path).map_err(io(path))?;
    let interfaces = runtime::interfaces(path, &bytes)?;
    let contract = interfaces
        .exports
        .iter()
        .find_map(|e| e.strip_prefix("sluice:plugin/guest@"))
        .map(str::to_string);
    let (refusal, info) = match PluginModule::from_bytes(path, &bytes) {
        Err(error) => (Some(error.to_string()), None),
        Ok(module) => {
            let info = PluginInstance::new(&module, Limits::default(), config_json)
                .map(|instance| instance.info().clone())
                .map_err(|e| e.to_string());
            (None, Some(info))
        }
    };
    Ok(Inspection {
        path: path.to_path_buf(),
        size: bytes.len() as u64,
        sha256: runtime::sha256_hex(&bytes),
        interfaces,
        contract,
        refusal,
        info,
    })
}

/// The report `sluice plugin inspect` prints.
pub fn render(inspection: &Inspection) -> String {
    let mut text = String::new();
    let line = &mut text;
    let _ = writeln!(line, "plugin    {}", inspection.path.display());
    let _ = writeln!(
        line,
        "size      {} bytes ({:.1} MiB)",
        inspection.size,
        inspection.size as f64 / f64::from(1 << 20)
    );
    let _ = writeln!(line, "sha256    {}", inspection.sha256);
    let contract = match &inspection.contract {
        Some(v) if v == CONTRACT_VERSION => format!("sluice:plugin@{v} (this host's)"),
        Some(v) => format!("sluice:plugin@{v} (this host supports {CONTRACT_VERSION} only)"),
        None => "none: it exports no sluice:plugin/guest interface".into(),
    };
    let _ = writeln!(line, "contract  {contract}");
    match &inspection.info {
        Some(Ok(info)) => {
            let _ = writeln!(line, "name      {}", info.name);
            let _ = writeln!(line, "version   {}", info.version);
            let inputs = if info.inputs.is_empty() {
                "(none declared)".to_string()
            } else {
                info.inputs.join(", ")
            };
            let _ = writeln!(line, "inputs    {inputs}");
            let _ = writeln!(
                line,
                "state     {}",
                if info.stateful {
                    "stateful (snapshot/restore at every commit)"
                } else {
                    "stateless"
                }
            );
        }
        Some(Err(error)) => {
            let _ = writeln!(line, "init      FAILED: {error}");
        }
        None => {}
    }
    let _ = writeln!(line, "imports   {}", inspection.interfaces.imports.len());
    for import in &inspection.interfaces.imports {
        let _ = writeln!(line, "  {import}");
    }
    let _ = writeln!(
        line,
        "exports   {}",
        inspection.interfaces.exports.join(", ")
    );
    match &inspection.refusal {
        Some(reason) => {
            let _ = writeln!(line, "REFUSED   {reason}");
        }
        None if inspection.usable() => {
            let _ = writeln!(
                line,
                "ok        the sandbox grants every import (WASI without files, network, environment or clock)"
            );
        }
        None => {}
    }
    text
}
