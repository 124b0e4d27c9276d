//! Passes batches through, except the batch that holds `_offset == trigger_offset`, on which it
//! does what `mode` says: `panic`, `loop` (forever), `alloc` (without bound), `error`, or
//! `escape` (tries to read a host file, open a socket and read the clock, and reports what
//! it got as its error).
//!
//! With `stateful: true` it counts the rows it has processed, checkpoints the count, and adds
//! it to each batch it passes on as `rows_before` (the rows processed before that batch).
use serde::Deserialize;
use sluice_sdk::prelude::*;
use std::sync::Arc;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FaultyConfig {
    mode: String,
    trigger_offset: i64,
    #[serde(default)]
    stateful: bool,
}

pub struct Faulty {
    config: FaultyConfig,
    rows_seen: i64,
}

impl Plugin for Faulty {
    fn init(config: &Config) -> Result<Self, PluginError> {
        let config: FaultyConfig = config.parse()?;
        if !["panic", "loop", "alloc", "error", "escape"].contains(&config.mode.as_str()) {
            return Err(PluginError::Config(format!(
                "unknown mode `{}`",
                config.mode
            )));
        }
        Ok(Faulty {
            config,
            rows_seen: 0,
        })
    }

    fn stateful(&self) -> bool {
        self.config.stateful
    }

    fn snapshot(&self) -> Result<Vec<u8>, PluginError> {
        sluice_sdk::state::encode(&self.rows_seen)
    }

    fn restore(&mut self, state: &[u8]) -> Result<(), PluginError> {
        self.rows_seen = sluice_sdk::state::decode(state)?;
        Ok(())
    }

    fn process(&mut self, batch: RecordBatch, out: &mut Outputs) -> Result<(), PluginError> {
        let offsets = batch.i64_column("_offset")?;
        if offsets
            .iter()
            .any(|o| o == Some(self.config.trigger_offset))
        {
            match self.config.mode.as_str() {
                "panic" => panic!(
                    "faulty plugin panics on offset {}",
                    self.config.trigger_offset
                ),
                "loop" => {
                    let mut n: u64 = 0;
                    loop {
                        n = std::hint::black_box(n.wrapping_add(1));
                    }
                }
                "alloc" => {
                    let mut hoard: Vec<Vec<u8>> = Vec::new();
                    loop {
                        hoard.push(vec![1u8; 1 << 20]);
                        std::hint::black_box(&hoard);
                    }
                }
                "escape" => {
                    let file = std::fs::read_to_string("/etc/hostname")
                        .map(|_| "read /etc/hostname".to_string());
                    let net = std::net::TcpStream::connect("127.0.0.1:22")
                        .map(|_| "connected".to_string());
                    let clock = std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .map(|d| d.as_secs());
                    return Err(PluginError::other(format!(
                        "file: {}; net: {}; clock: {:?}",
                        file.unwrap_or_else(|e| format!("denied ({e})")),
                        net.unwrap_or_else(|e| format!("denied ({e})")),
                        clock.ok()
                    )));
                }
                _ => return Err(PluginError::other("faulty plugin refuses this batch")),
            }
        }
        if !self.config.stateful {
            out.out(batch);
            return Ok(());
        }
        let rows = batch.num_rows();
        let mut fields: Vec<_> = batch.schema().fields().iter().cloned().collect();
        fields.push(Arc::new(Field::new("rows_before", DataType::Int64, false)));
        let mut columns = batch.columns().to_vec();
        columns.push(Arc::new(Int64Array::from(vec![self.rows_seen; rows])));
        self.rows_seen += rows as i64;
        out.out(RecordBatch::try_new(
            Arc::new(Schema::new(fields)),
            columns,
        )?);
        Ok(())
    }
}

sluice_sdk::export_plugin!(Faulty);
