//! `sluice plugin test PLUGIN.wasm --input FILE.jsonl`: a built plugin through the production
//! runtime (same sandbox, limits, IPC and decoder as a pipeline) on a file, batch by batch.
use super::{KitError, io};
use crate::decode::schema::{EVENTSIM_TOPICS, Schemas, eventsim};
use crate::decode::{DeadLetter, JsonDecoder, describe_rows};
use crate::source::Source;
use crate::source::files::FileSource;
use crate::stage::{Limits, PluginModule, WasmStage};
use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use std::collections::BTreeMap;
use std::fmt::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

pub struct TrialOptions {
    pub plugin: PathBuf,
    pub input: PathBuf,
    /// The table the rows belong to; its declared schema is used when it is a known topic.
    pub topic: Option<String>,
    /// The stage's `config:` as JSON.
    pub config_json: String,
    pub batch_rows: usize,
    pub limits: Limits,
}

/// One `process` call (or the final watermark).
#[derive(Debug)]
pub struct BatchRun {
    pub label: String,
    pub rows_in: usize,
    pub rows_out: BTreeMap<String, usize>,
    pub elapsed: Duration,
    pub fuel: u64,
    pub error: Option<String>,
}

#[derive(Debug)]
pub struct Trial {
    pub plugin: String,
    pub stage: String,
    pub topic: String,
    /// How the input schema was chosen.
    pub schema_from: String,
    pub schema: SchemaRef,
    pub calls: Vec<BatchRun>,
    /// Every output, by name (`out`, `rejects`, …), in order.
    pub outputs: BTreeMap<String, Vec<RecordBatch>>,
    /// Input lines that did not decode with the schema.
    pub undecodable: Vec<DeadLetter>,
}

impl Trial {
    pub fn failed(&self) -> bool {
        self.calls.iter().any(|c| c.error.is_some())
    }
}

pub fn run_trial(options: &TrialOptions) -> Result<Trial, KitError> {
    let input = &options.input;
    let topic = options.topic.clone().unwrap_or_else(|| {
        input
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "input".into())
    });
    let (schema, schema_from) = match eventsim(&topic) {
        Some(schema) => (schema, format!("declared (EventSim `{topic}`)")),
        None if options.topic.is_some() => {
            return Err(KitError::Input {
                path: input.clone(),
                message: format!(
                    "--schema {topic}: not a known topic (known: {}); leave it out to infer the schema from the file",
                    EVENTSIM_TOPICS.join(", ")
                ),
            });
        }
        None => (infer_schema(input)?, "inferred from the file".to_string()),
    };
    let module = PluginModule::load(&options.plugin)?;
    let stage_name = options
        .plugin
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "plugin".into());
    let mut stage = WasmStage::new(
        &stage_name,
        &module,
        options.limits.clone(),
        &options.config_json,
        None,
    )?;
    let plugin = format!("{}@{}", stage.info().name, stage.info().version);
    let mut decoder = JsonDecoder::new(Schemas::one(&topic, schema.clone()));
    let pattern = glob::Pattern::escape(&input.display().to_string());
    let mut source = FileSource::new(&[pattern], Some(topic.clone()), options.batch_rows, None)
        .map_err(|e| KitError::Input {
            path: input.clone(),
            message: e.to_string(),
        })?;
    if !input.is_file() {
        return Err(KitError::Input {
            path: input.clone(),
            message: "no such file".into(),
        });
    }
    let mut trial = Trial {
        plugin,
        stage: stage_name,
        topic: topic.clone(),
        schema_from,
        schema,
        calls: Vec::new(),
        outputs: BTreeMap::new(),
        undecodable: Vec::new(),
    };
    let mut number = 0;
    while let Some(raw) = source.next_batch().map_err(|e| KitError::Input {
        path: input.clone(),
        message: e.to_string(),
    })? {
        let decoded = decoder.decode(&raw);
        trial.undecodable.extend(decoded.dead);
        let Some(batch) = decoded.batch else { continue };
        number += 1;
        let label = format!(
            "batch {number} ({})",
            describe_rows(&batch).unwrap_or_default()
        );
        let started = Instant::now();
        let result = stage.process(&topic, &batch);
        let elapsed = started.elapsed();
        trial.record(label, batch.num_rows(), elapsed, stage.last_fuel(), result);
    }
    if stage.info().stateful {
        // The end of a finite input: what is still open is closed, as a pipeline does.
        let started = Instant::now();
        let result = stage.on_watermark(i64::MAX);
        let elapsed = started.elapsed();
        let label = "end of input (watermark +∞)".to_string();
        trial.record(label, 0, elapsed, stage.last_fuel(), result);
    }
    Ok(trial)
}

impl Trial {
    fn record(
        &mut self,
        label: String,
        rows_in: usize,
        elapsed: Duration,
        fuel: u64,
        result: Result<Vec<(String, RecordBatch)>, crate::stage::StageError>,
    ) {
        let mut rows_out = BTreeMap::new();
        let error = match result {
            Ok(outputs) => {
                for (name, batch) in outputs {
                    *rows_out.entry(name.clone()).or_default() += batch.num_rows();
                    self.outputs.entry(name).or_default().push(batch);
                }
                None
            }
            Err(error) => Some(format!("{error}, in {label}")),
        };
        self.calls.push(BatchRun {
            label,
            rows_in,
            rows_out,
            elapsed,
            fuel,
            error,
        });
    }
}

fn infer_schema(path: &Path) -> Result<SchemaRef, KitError> {
    let file = std::fs::File::open(path).map_err(io(path))?;
    let (schema, _) =
        arrow::json::reader::infer_json_schema(std::io::BufReader::new(file), Some(1000)).map_err(
            |e| KitError::Input {
                path: path.to_path_buf(),
                message: format!("cannot infer a schema from the first 1000 lines: {e}"),
            },
        )?;
    Ok(std::sync::Arc::new(schema))
}

/// The report `sluice plugin test` prints: each output as a table (the first `max_rows` rows),
/// row counts, and the time and fuel per batch.
pub fn render(trial: &Trial, max_rows: usize) -> String {
    let mut text = String::new();
    let t = &mut text;
    let _ = writeln!(
        t,
        "plugin {} on `{}` (schema {})",
        trial.plugin, trial.topic, trial.schema_from
    );
    for (name, batches) in &trial.outputs {
        let rows: usize = batches.iter().map(RecordBatch::num_rows).sum();
        let _ = writeln!(t, "\n{name}: {rows} rows");
        if rows == 0 || max_rows == 0 {
            continue;
        }
        let mut shown = Vec::new();
        let mut left = max_rows;
        for batch in batches {
            if left == 0 {
                break;
            }
            let take = left.min(batch.num_rows());
            shown.push(batch.slice(0, take));
            left -= take;
        }
        match arrow::util::pretty::pretty_format_batches(&shown) {
            Ok(table) => {
                let _ = writeln!(t, "{table}");
            }
            Err(e) => {
                let _ = writeln!(t, "(cannot print: {e})");
            }
        }
        if rows > max_rows {
            let _ = writeln!(t, "… {} more rows (--rows N shows more)", rows - max_rows);
        }
    }
    if !trial.undecodable.is_empty() {
        let _ = writeln!(
            t,
            "\nundecodable input: {} lines (not sent to the plugin)",
            trial.undecodable.len()
        );
        for letter in trial.undecodable.iter().take(5) {
            let _ = writeln!(
                t,
                "  line {}: {}",
                letter.offset.unwrap_or_default(),
                letter.reason
            );
        }
    }
    let _ = writeln!(
        t,
        "\n{:<52} {:>8} {:>10} {:>14}  outputs",
        "call", "rows in", "ms", "fuel"
    );
    for call in &trial.calls {
        let outputs = match &call.error {
            Some(error) => format!("FAILED: {error}"),
            None => call
                .rows_out
                .iter()
                .map(|(name, rows)| format!("{name} {rows}"))
                .collect::<Vec<_>>()
                .join(", "),
        };
        let _ = writeln!(
            t,
            "{:<52} {:>8} {:>10.2} {:>14}  {outputs}",
            call.label,
            call.rows_in,
            call.elapsed.as_secs_f64() * 1000.0,
            call.fuel
        );
    }
    let rows_in: usize = trial.calls.iter().map(|c| c.rows_in).sum();
    let elapsed: Duration = trial.calls.iter().map(|c| c.elapsed).sum();
    let mut times: Vec<Duration> = trial.calls.iter().map(|c| c.elapsed).collect();
    times.sort();
    let median = times.get(times.len() / 2).copied().unwrap_or_default();
    let failed = trial.calls.iter().filter(|c| c.error.is_some()).count();
    let _ = writeln!(
        t,
        "\n{} calls, {rows_in} rows in, {:.1} ms in the plugin (median {:.2} ms per call, {:.0} rows/s), {failed} failed",
        trial.calls.len(),
        elapsed.as_secs_f64() * 1000.0,
        median.as_secs_f64() * 1000.0,
        rows_in as f64 / elapsed.as_secs_f64().max(1e-9)
    );
    text
}
