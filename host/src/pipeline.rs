//! Wires a validated pipeline together and runs it:
//! source → decode → bronze → stages (each may write a layer) → commit.
use crate::config::{LoadedPipeline, SourceKind, StageConfig};
use crate::decode::{DeadLetter, JsonDecoder};
use crate::sink::dead_letter;
use crate::sink::lake::{CommitRecord, LakeError, LakeUri, LakeWriter, Partitioning};
use crate::source::files::FileSource;
use crate::source::generator::GeneratorSource;
use crate::source::{RawBatch, Source, SourceError};
use crate::stage::{PluginModule, RuntimeError, StageError, WasmStage};
use arrow::record_batch::RecordBatch;
use sluice_sdk::{OUT, REJECTS};
use std::collections::BTreeMap;
use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error(transparent)]
    Lake(#[from] LakeError),
    #[error(transparent)]
    Plugin(#[from] RuntimeError),
    #[error(transparent)]
    Source(#[from] SourceError),
    #[error("cannot start the I/O runtime: {0}")]
    Runtime(std::io::Error),
    #[error("stage `{stage}`: cannot restore its checkpointed state: {reason}")]
    Restore { stage: String, reason: String },
}

#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// Print a progress line to stderr while running.
    pub progress: bool,
}

/// What a run did, and the running totals of the pipeline since its first run.
#[derive(Debug, Clone, Default)]
pub struct RunSummary {
    pub pipeline: String,
    /// Source records this run consumed.
    pub records: u64,
    pub elapsed: Duration,
    /// Rows written this run per layer (`bronze`, `silver`, …).
    pub layers: BTreeMap<String, u64>,
    /// Dead letters this run per `stage: reason`.
    pub rejects: BTreeMap<String, u64>,
    /// Source records committed before this run started (0 for a fresh lake).
    pub resumed_at: u64,
    pub commits: u64,
    pub totals: BTreeMap<String, u64>,
}

impl RunSummary {
    pub fn events_per_second(&self) -> f64 {
        self.records as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

struct Stage {
    config: StageConfig,
    runtime: WasmStage,
    partitioning: Arc<Partitioning>,
    /// The latest event time among rows that reached this stage.
    max_event_time: Option<i64>,
    /// The last watermark sent to the plugin.
    watermark: Option<i64>,
}

struct Run<'a> {
    loaded: &'a LoadedPipeline,
    sink: SinkThread,
    /// Rows sent to the sink since the last commit.
    uncommitted_rows: u64,
    stages: Vec<Stage>,
    decoder: JsonDecoder,
    bronze: Option<Arc<Partitioning>>,
    dead: Vec<DeadLetter>,
    /// Totals of the last commit before this run; a commit records these plus this run's.
    base_totals: BTreeMap<String, u64>,
    summary: RunSummary,
}

/// Runs a pipeline until its source is exhausted.
///
/// Three threads share the work: the source thread produces raw batches; the calling thread
/// decodes them and runs the plugins; the sink thread partitions, encodes Parquet and does the
/// lake I/O (on a small tokio runtime of its own). Bounded channels between them are the back
/// pressure. Plugins must not run on a tokio worker: WASI's synchronous bindings block on
/// their own futures.
pub fn run(loaded: &LoadedPipeline, options: &RunOptions) -> Result<RunSummary, PipelineError> {
    let config = &loaded.config;
    let started = Instant::now();
    let io = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(PipelineError::Runtime)?;
    let lake = LakeWriter::new(&LakeUri::parse(&config.lake.uri)?, config.lake.zstd_level)?;
    let last = io.block_on(lake.recover(&config.name))?;
    let snapshots = match &last {
        Some(record) => io.block_on(lake.read_state(record))?,
        None => BTreeMap::new(),
    };

    let mut stages = Vec::new();
    for (stage, path) in config.stages.iter().zip(&loaded.plugin_paths) {
        let module = PluginModule::load(path)?;
        let config_json = serde_json::to_string(&stage.config).expect("JSON values serialise");
        let mut runtime = WasmStage::new(
            &stage.name,
            &module,
            stage.limits.clone(),
            &config_json,
            stage.topics.clone(),
        )?;
        if let Some(state) = snapshots.get(&stage.name) {
            runtime.restore(state).map_err(|e| PipelineError::Restore {
                stage: stage.name.clone(),
                reason: e.reason,
            })?;
        }
        let partitioning = Arc::new(Partitioning {
            keys: stage.partition_by.clone(),
            event_time: stage
                .event_time
                .clone()
                .unwrap_or_else(|| config.event_time.clone()),
        });
        let max_event_time = last
            .as_ref()
            .and_then(|l| l.event_times.get(&stage.name).copied());
        tracing::info!(stage = %stage.name, plugin = %runtime.info().name, version = %runtime.info().version, "stage ready");
        stages.push(Stage {
            config: stage.clone(),
            runtime,
            partitioning,
            max_event_time,
            watermark: None,
        });
    }

    let resume = last.as_ref().map(|l| &l.position);
    let source: Box<dyn Source> = match config.source.kind().expect("validated: exactly one source")
    {
        SourceKind::Generator(generator) => {
            Box::new(GeneratorSource::new(generator, config.batch_rows, resume)?)
        }
        SourceKind::Files(files) => Box::new(FileSource::new(
            &files.paths,
            files.topic.clone(),
            config.batch_rows,
            resume,
        )?),
    };
    let batches = spawn_source(source);

    let resumed_at = last.as_ref().map_or(0, |l| l.records);
    let mut epoch = last.as_ref().map_or(0, |l| l.epoch);
    let mut run = Run {
        loaded,
        sink: SinkThread::spawn(lake, io),
        uncommitted_rows: 0,
        stages,
        decoder: JsonDecoder::new(loaded.schemas.clone()),
        base_totals: last.map(|l| l.totals).unwrap_or_default(),
        bronze: config.bronze.as_ref().map(|b| {
            Arc::new(Partitioning {
                keys: b.partition_by.clone(),
                event_time: config.event_time.clone(),
            })
        }),
        dead: Vec::new(),
        summary: RunSummary {
            pipeline: config.name.clone(),
            resumed_at,
            ..Default::default()
        },
    };

    let mut committed = resumed_at;
    let mut consumed = resumed_at;
    let mut position = None;
    let mut last_progress = Instant::now();
    while let Ok(raw) = batches.recv() {
        let raw = raw?;
        consumed += raw.len() as u64;
        run.summary.records += raw.len() as u64;
        run.process(&raw)?;
        run.advance_watermarks()?;
        if raw.position.is_some() {
            position = raw.position.clone();
        }
        let due = consumed - committed >= config.lake.commit_rows
            || run.sink.buffered_bytes() >= config.lake.max_buffer_mb << 20;
        if raw.position.is_some() && due {
            epoch += 1;
            run.commit(
                epoch,
                committed,
                consumed,
                position.clone().unwrap_or_default(),
            )?;
            committed = consumed;
        }
        if options.progress && last_progress.elapsed() >= Duration::from_millis(500) {
            last_progress = Instant::now();
            run.print_progress(started);
        }
    }
    // End of a finite source: the watermark goes to +∞ so stateful stages emit what is open.
    run.end_of_input()?;
    if consumed > committed || run.uncommitted_rows > 0 || !run.dead.is_empty() {
        epoch += 1;
        run.commit(epoch, committed, consumed, position.unwrap_or_default())?;
    }
    run.sink.finish()?;
    if options.progress {
        eprint!("\r\x1b[2K");
    }
    run.summary.elapsed = started.elapsed();
    run.summary.totals = run.totals();
    Ok(run.summary)
}

/// Runs the source on its own thread; the bounded channel is the back pressure.
fn spawn_source(
    mut source: Box<dyn Source>,
) -> std::sync::mpsc::Receiver<Result<RawBatch, SourceError>> {
    let (tx, rx) = std::sync::mpsc::sync_channel(4);
    std::thread::Builder::new()
        .name("sluice-source".into())
        .spawn(move || {
            loop {
                let next = source.next_batch();
                let stop = !matches!(next, Ok(Some(_)));
                let item = match next {
                    Ok(Some(batch)) => Ok(batch),
                    Ok(None) => break,
                    Err(e) => Err(e),
                };
                if tx.send(item).is_err() || stop {
                    break;
                }
            }
        })
        .expect("spawning the source thread");
    rx
}

impl Run<'_> {
    fn process(&mut self, raw: &RawBatch) -> Result<(), PipelineError> {
        let decoded = self.decoder.decode(raw);
        self.add_dead(decoded.dead);
        let Some(batch) = decoded.batch else {
            return Ok(());
        };
        if let Some(partitioning) = self.bronze.clone() {
            self.write("bronze", &raw.topic, batch.clone(), partitioning)?;
        }
        self.flow(0, &raw.topic, batch)
    }

    /// Hands a batch to the sink thread for `<layer>/<table>/`.
    fn write(
        &mut self,
        layer: &str,
        table: &str,
        batch: RecordBatch,
        partitioning: Arc<Partitioning>,
    ) -> Result<(), PipelineError> {
        let rows = batch.num_rows() as u64;
        self.sink.send(SinkCommand::Write {
            layer: layer.to_string(),
            table: table.to_string(),
            batch,
            partitioning,
        })?;
        *self.summary.layers.entry(layer.to_string()).or_default() += rows;
        self.uncommitted_rows += rows;
        Ok(())
    }

    fn add_dead(&mut self, letters: Vec<DeadLetter>) {
        for letter in &letters {
            *self
                .summary
                .rejects
                .entry(format!("{}: {}", letter.stage, reason_kind(&letter.reason)))
                .or_default() += 1;
        }
        self.dead.extend(letters);
    }

    /// Sends a batch of `topic` through the stages from index `from` on.
    fn flow(&mut self, from: usize, topic: &str, batch: RecordBatch) -> Result<(), PipelineError> {
        let mut pending = vec![(from, topic.to_string(), batch)];
        while let Some((index, topic, batch)) = pending.pop() {
            let Some(stage) = self.stages.get_mut(index) else {
                continue;
            };
            if !stage.runtime.applies_to(&topic) {
                pending.push((index + 1, topic, batch));
                continue;
            }
            if let Some(latest) = max_event_time(&batch, &self.loaded.config.event_time) {
                stage.max_event_time = Some(stage.max_event_time.map_or(latest, |m| m.max(latest)));
            }
            let outputs = stage.runtime.process(&topic, &batch);
            let routed = self.route(index, &topic, outputs, Some(batch))?;
            // Keep batch order: later outputs are pushed first so the first is processed first.
            pending.extend(routed.into_iter().rev());
        }
        Ok(())
    }

    /// Writes a stage's outputs to its layer and dead letters; returns what flows on.
    fn route(
        &mut self,
        index: usize,
        topic: &str,
        outputs: Result<Vec<(String, RecordBatch)>, StageError>,
        input: Option<RecordBatch>,
    ) -> Result<Vec<(usize, String, RecordBatch)>, PipelineError> {
        let stage = &self.stages[index];
        let plugin = format!(
            "{}@{}",
            stage.runtime.info().name,
            stage.runtime.info().version
        );
        let stage_name = stage.config.name.clone();
        let outputs = match outputs {
            Ok(outputs) => outputs,
            Err(error) => {
                tracing::warn!(stage = %stage_name, plugin = %plugin, reason = %error.reason, "batch failed; its rows go to the dead-letter output");
                if let Some(input) = input {
                    let reason = format!("plugin failed: {}", error.reason);
                    let letters =
                        dead_letter::from_rows(&input, topic, &stage_name, &plugin, Some(&reason));
                    self.add_dead(letters);
                }
                return Ok(vec![]);
            }
        };
        let mut onward = Vec::new();
        for (name, batch) in outputs {
            if name == REJECTS {
                let letters = dead_letter::from_rows(&batch, topic, &stage_name, &plugin, None);
                self.add_dead(letters);
                continue;
            }
            let stage = &self.stages[index];
            // `out` keeps the batch's table (topic); any other output is a table of its own.
            let (layer, table) = match (&stage.config.layer, name.as_str()) {
                (Some(layer), OUT) => (Some(layer.clone()), topic.to_string()),
                (Some(layer), other) => (Some(layer.clone()), other.to_string()),
                (None, OUT) => (None, topic.to_string()),
                (None, other) => (Some(stage_name.clone()), other.to_string()),
            };
            let written = stage
                .config
                .write
                .as_ref()
                .is_none_or(|w| w.contains(&name));
            let layer = layer.filter(|_| written);
            if let Some(layer) = layer {
                let partitioning = stage.partitioning.clone();
                self.write(&layer, &table, batch.clone(), partitioning)?;
            }
            onward.push((index + 1, table, batch));
        }
        Ok(onward)
    }

    /// Sends each stage whose watermark advanced its new watermark — the latest event time
    /// that reached it minus the allowed lateness — and passes on what that closes. Watermarks
    /// are assigned per stage, from the rows that reach it, so rows an earlier stage rejected
    /// (an impossible timestamp, say) cannot push event time forward.
    fn advance_watermarks(&mut self) -> Result<(), PipelineError> {
        let lateness = self.loaded.config.allowed_lateness_ms;
        for index in 0..self.stages.len() {
            let stage = &self.stages[index];
            let Some(latest) = stage.max_event_time else {
                continue;
            };
            let watermark = latest.saturating_sub(lateness);
            if stage.watermark.is_some_and(|w| w >= watermark) {
                continue;
            }
            self.send_watermark(index, watermark)?;
        }
        Ok(())
    }

    fn send_watermark(&mut self, index: usize, watermark: i64) -> Result<(), PipelineError> {
        let stage = &mut self.stages[index];
        stage.watermark = Some(watermark);
        let name = stage.config.name.clone();
        let outputs = stage.runtime.on_watermark(watermark);
        let onward = self.route(index, &name, outputs, None)?;
        for (next, table, batch) in onward {
            self.flow(next, &table, batch)?;
        }
        Ok(())
    }

    /// End of a finite source: the watermark goes to +∞ so stateful stages emit all they hold.
    fn end_of_input(&mut self) -> Result<(), PipelineError> {
        for index in 0..self.stages.len() {
            self.send_watermark(index, i64::MAX)?;
        }
        Ok(())
    }

    fn commit(
        &mut self,
        epoch: u64,
        committed: u64,
        consumed: u64,
        position: serde_json::Value,
    ) -> Result<(), PipelineError> {
        if !self.dead.is_empty() {
            let letters = std::mem::take(&mut self.dead);
            let partitioning = Arc::new(Partitioning {
                keys: vec!["stage".into()],
                event_time: String::new(),
            });
            let mut by_topic: BTreeMap<String, Vec<DeadLetter>> = BTreeMap::new();
            for letter in letters {
                by_topic
                    .entry(letter.topic.clone())
                    .or_default()
                    .push(letter);
            }
            for (topic, letters) in by_topic {
                let batch = dead_letter::to_batch(&letters);
                let partitioning = partitioning.clone();
                self.sink.send(SinkCommand::Write {
                    layer: dead_letter::LAYER.to_string(),
                    table: topic,
                    batch,
                    partitioning,
                })?;
            }
        }
        let mut snapshots = BTreeMap::new();
        let mut event_times = BTreeMap::new();
        for stage in &mut self.stages {
            if let Some(latest) = stage.max_event_time {
                event_times.insert(stage.config.name.clone(), latest);
            }
            if stage.runtime.info().stateful {
                let snapshot = stage
                    .runtime
                    .snapshot()
                    .map_err(|e| PipelineError::Restore {
                        stage: stage.config.name.clone(),
                        reason: e.reason,
                    })?;
                snapshots.insert(stage.config.name.clone(), snapshot);
            }
        }
        let record = CommitRecord {
            pipeline: self.loaded.config.name.clone(),
            epoch,
            records: consumed,
            position,
            files: vec![],
            totals: self.totals(),
            state: BTreeMap::new(),
            event_times,
        };
        self.sink.send(SinkCommand::Commit {
            record,
            snapshots,
            first: committed,
            last: consumed.saturating_sub(1),
        })?;
        self.uncommitted_rows = 0;
        self.summary.commits += 1;
        Ok(())
    }

    /// Running totals since the pipeline first ran: the last commit's plus this run's.
    fn totals(&self) -> BTreeMap<String, u64> {
        let mut totals = self.base_totals.clone();
        let run = self
            .summary
            .layers
            .iter()
            .map(|(k, v)| (format!("rows.{k}"), *v));
        let run = run.chain(
            self.summary
                .rejects
                .iter()
                .map(|(k, v)| (format!("rejects.{k}"), *v)),
        );
        for (key, value) in run.chain([("records".to_string(), self.summary.records)]) {
            *totals.entry(key).or_default() += value;
        }
        totals
    }

    fn print_progress(&self, started: Instant) {
        let elapsed = started.elapsed().as_secs_f64().max(1e-9);
        let layers: Vec<String> = self
            .summary
            .layers
            .iter()
            .map(|(k, v)| format!("{k} {v}"))
            .collect();
        let rejects: u64 = self.summary.rejects.values().sum();
        let mut err = std::io::stderr().lock();
        let _ = write!(
            err,
            "\r\x1b[2K{} events  {:.0} events/s  {}  rejects {}",
            self.summary.records,
            self.summary.records as f64 / elapsed,
            layers.join("  "),
            rejects
        );
        let _ = err.flush();
    }
}

/// What the pipeline thread asks of the sink thread.
enum SinkCommand {
    Write {
        layer: String,
        table: String,
        batch: RecordBatch,
        partitioning: Arc<Partitioning>,
    },
    /// Close every open file and commit them with this record (see `sink::lake`).
    Commit {
        record: CommitRecord,
        snapshots: BTreeMap<String, Vec<u8>>,
        first: u64,
        last: u64,
    },
}

/// Partitioning and Parquet encoding run on their own thread, so they overlap with decoding
/// and plugins. The bounded channel is the back pressure: a slow lake slows the pipeline.
struct SinkThread {
    commands: Option<std::sync::mpsc::SyncSender<SinkCommand>>,
    buffered: Arc<AtomicU64>,
    thread: Option<std::thread::JoinHandle<Result<(), LakeError>>>,
}

impl SinkThread {
    fn spawn(mut lake: LakeWriter, io: tokio::runtime::Runtime) -> Self {
        let (commands, receiver) = std::sync::mpsc::sync_channel::<SinkCommand>(8);
        let buffered = Arc::new(AtomicU64::new(0));
        let published = buffered.clone();
        let thread = std::thread::Builder::new()
            .name("sluice-sink".into())
            .spawn(move || {
                for command in receiver {
                    match command {
                        SinkCommand::Write {
                            layer,
                            table,
                            batch,
                            partitioning,
                        } => {
                            lake.write(&layer, &table, &batch, &partitioning)?;
                            published.store(lake.buffered_bytes() as u64, Ordering::Relaxed);
                        }
                        SinkCommand::Commit {
                            record,
                            snapshots,
                            first,
                            last,
                        } => {
                            let record =
                                io.block_on(lake.commit(record, snapshots, first, last))?;
                            published.store(0, Ordering::Relaxed);
                            tracing::debug!(
                                epoch = record.epoch,
                                files = record.files.len(),
                                records = record.records,
                                "committed"
                            );
                        }
                    }
                }
                Ok(())
            })
            .expect("spawning the sink thread");
        SinkThread {
            commands: Some(commands),
            buffered,
            thread: Some(thread),
        }
    }

    fn buffered_bytes(&self) -> u64 {
        self.buffered.load(Ordering::Relaxed)
    }

    fn send(&mut self, command: SinkCommand) -> Result<(), PipelineError> {
        let sent = self
            .commands
            .as_ref()
            .is_some_and(|c| c.send(command).is_ok());
        if sent { Ok(()) } else { self.finish() }
    }

    /// Waits until everything sent is written and committed; the sink's error, if it failed.
    fn finish(&mut self) -> Result<(), PipelineError> {
        self.commands = None;
        match self.thread.take().map(std::thread::JoinHandle::join) {
            None | Some(Ok(Ok(()))) => Ok(()),
            Some(Ok(Err(error))) => Err(error.into()),
            Some(Err(panic)) => std::panic::resume_unwind(panic),
        }
    }
}

/// The latest event time (epoch ms) in a batch.
fn max_event_time(batch: &RecordBatch, column: &str) -> Option<i64> {
    arrow::compute::max(&crate::sink::lake::epoch_millis(batch, column)?)
}

/// Groups reasons for the summary: a decode error's detail varies per record.
fn reason_kind(reason: &str) -> &str {
    if reason.starts_with("plugin failed") {
        return "plugin failed";
    }
    if reason.len() > 48 {
        reason.split(':').next().unwrap_or(reason)
    } else {
        reason
    }
}
