//! `{{name}}`: a stateful Sluice plugin.
//!
//! Counts each user's events per event-time window (`window_ms`, default one hour) and emits
//! one row per closed window on `windows` — when the watermark passes the window's end, so no
//! event that belongs to it is still to come. Input rows pass on unchanged on `out`. The open
//! windows are the state: the host checkpoints them with every commit (`snapshot`) and gives
//! them back after a restart or a hot-swap (`restore`).
use serde::{Deserialize, Serialize};
use sluice_sdk::arrow_array::builder::Int64Builder;
use sluice_sdk::prelude::*;
use std::collections::BTreeMap;
use std::sync::Arc;

pub const WINDOWS: &str = "windows";

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct {{Type}}Config {
    /// Window length in milliseconds of event time.
    pub window_ms: i64,
}

impl Default for {{Type}}Config {
    fn default() -> Self {
        {{Type}}Config {
            window_ms: 60 * 60 * 1000,
        }
    }
}

/// Open windows: (window start, user) → events.
#[derive(Debug, Default, Serialize, Deserialize)]
struct State {
    open: Vec<(i64, i64, i64)>,
}

pub struct {{Type}} {
    window_ms: i64,
    open: BTreeMap<(i64, i64), i64>,
}

impl Plugin for {{Type}} {
    fn init(config: &Config) -> Result<Self, PluginError> {
        let config: {{Type}}Config = config.parse()?;
        if config.window_ms <= 0 {
            return Err(PluginError::Config("window_ms must be positive".into()));
        }
        Ok({{Type}} {
            window_ms: config.window_ms,
            open: BTreeMap::new(),
        })
    }

    fn inputs(&self) -> Vec<String> {
        vec!["ts".into(), "userId".into()]
    }

    fn stateful(&self) -> bool {
        true
    }

    fn process(&mut self, batch: RecordBatch, out: &mut Outputs) -> Result<(), PluginError> {
        let ts = batch.i64_column("ts")?;
        let user = batch.i64_column("userId")?;
        for row in 0..batch.num_rows() {
            if ts.is_valid(row) && user.is_valid(row) {
                let start = ts.value(row).div_euclid(self.window_ms) * self.window_ms;
                *self.open.entry((start, user.value(row))).or_default() += 1;
            }
        }
        out.out(batch);
        Ok(())
    }

    fn on_watermark(&mut self, event_time_ms: i64, out: &mut Outputs) -> Result<(), PluginError> {
        let (mut starts, mut users, mut counts) =
            (Int64Builder::new(), Int64Builder::new(), Int64Builder::new());
        let window_ms = self.window_ms;
        self.open.retain(|&(start, user), &mut events| {
            let closed = start.saturating_add(window_ms) <= event_time_ms;
            if closed {
                starts.append_value(start);
                users.append_value(user);
                counts.append_value(events);
            }
            !closed
        });
        let schema = Schema::new(vec![
            Field::new("window_start", DataType::Int64, false),
            Field::new("userId", DataType::Int64, false),
            Field::new("events", DataType::Int64, false),
        ]);
        // The key lets sinks that upsert (ClickHouse) replace a replayed row.
        let schema = Arc::new(with_key(schema, &["window_start", "userId"]));
        let columns: Vec<ArrayRef> = vec![
            Arc::new(starts.finish()),
            Arc::new(users.finish()),
            Arc::new(counts.finish()),
        ];
        out.emit(WINDOWS, RecordBatch::try_new(schema, columns)?);
        Ok(())
    }

    fn snapshot(&self) -> Result<Vec<u8>, PluginError> {
        let open = self.open.iter().map(|(&(s, u), &n)| (s, u, n)).collect();
        sluice_sdk::state::encode(&State { open })
    }

    fn restore(&mut self, state: &[u8]) -> Result<(), PluginError> {
        let state: State = sluice_sdk::state::decode(state)?;
        self.open = state.open.into_iter().map(|(s, u, n)| ((s, u), n)).collect();
        Ok(())
    }
}

sluice_sdk::export_plugin!({{Type}});
