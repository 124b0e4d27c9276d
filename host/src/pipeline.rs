//! Wires a validated pipeline together and runs it:
//! source → decode → bronze → stages (each may write a layer) → commit.
use crate::config::{LoadedPipeline, SourceKind, StageConfig};
use crate::decode::{DeadLetter, Decoded, JsonDecoder, describe_rows};
use crate::live::{Candidate, Control, ControlRequest, Live, RunState, SwapError};
use crate::metrics;
use crate::sink::clickhouse::{ClickHouseError, ClickHouseSink};
use crate::sink::dead_letter;
use crate::sink::lake::{
    CommitRecord, LakeError, LakeReader, LakeWriter, LaneCheckpoint, Partitioning,
};
use crate::sink::postgres::{PostgresError, PostgresSink};
use crate::source::files::FileSource;
use crate::source::generator::GeneratorSource;
use crate::source::kafka::{DeadLetterTopic, KafkaSource};
use crate::source::{RawBatch, Source, SourceError, SourceEvent};
use crate::stage::{
    PLUGIN_METADATA, PluginModule, PluginVersion, RuntimeError, StageError, WasmStage,
};
use arrow::record_batch::RecordBatch;
use sluice_sdk::{OUT, REJECTS};
use std::collections::BTreeMap;
use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error(transparent)]
    Lake(#[from] LakeError),
    #[error(transparent)]
    Plugin(#[from] RuntimeError),
    /// A stage's plugin cannot be loaded or initialised: which stage says where to look.
    #[error("stage `{stage}`: {source}")]
    Stage { stage: String, source: RuntimeError },
    #[error(transparent)]
    Source(#[from] SourceError),
    #[error("cannot start the I/O runtime: {0}")]
    Runtime(std::io::Error),
    #[error("stage `{stage}`: cannot restore its checkpointed state: {reason}")]
    Restore { stage: String, reason: String },
    #[error(transparent)]
    ClickHouse(#[from] ClickHouseError),
    #[error(transparent)]
    Postgres(#[from] PostgresError),
    #[error("the lake sink stopped")]
    Sink,
    #[error("{0}")]
    Job(String),
}

#[derive(Clone, Default)]
pub struct RunOptions {
    /// Print a progress line to stderr while running.
    pub progress: bool,
    /// Set (by a signal handler) to stop an unbounded source: the pipeline commits what it
    /// holds, state included, and returns.
    pub stop: Option<Arc<AtomicBool>>,
    /// Status and control shared with the admin server; the run makes its own when unset.
    pub live: Option<Arc<Live>>,
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

/// One lane's plugin instances and progress (see `source`): a Kafka partition's keyed state
/// lives in its lane's instances and moves with the partition.
struct Lane {
    stages: Vec<Stage>,
    /// Records of this lane consumed by every instance that owned it.
    records: u64,
    /// Where the lane's source resumes after the last batch that ended at a consistent cut.
    position: Option<serde_json::Value>,
}

struct Run<'a> {
    loaded: &'a LoadedPipeline,
    /// Per stage: the module new lanes instantiate, its version, and the versions a rollback
    /// returns to (latest last).
    modules: Vec<PluginModule>,
    versions: Vec<PluginVersion>,
    previous: Vec<Vec<(PluginModule, PluginVersion)>>,
    live: Arc<Live>,
    sink: SinkThread,
    reader: LakeReader,
    reads: tokio::runtime::Runtime,
    /// Rows sent to the sink since the last commit.
    uncommitted_rows: u64,
    lanes: BTreeMap<u32, Lane>,
    /// Last checkpoints of lanes this instance does not hold (any more): every commit record
    /// carries them, so a lane returning here resumes from the furthest one.
    released: BTreeMap<u32, LaneCheckpoint>,
    bronze: Option<Arc<Partitioning>>,
    dead: Vec<DeadLetter>,
    dead_letter_topic: Option<DeadLetterTopic>,
    /// Totals of the last commit before this run; a commit records these plus this run's.
    base_totals: BTreeMap<String, u64>,
    summary: RunSummary,
    epoch: u64,
    /// This instance's source records: consumed, and consumed as of the last commit.
    consumed: u64,
    committed: u64,
    /// Where durable lane positions are reported (to commit Kafka offsets).
    durable: Option<std::sync::mpsc::Sender<BTreeMap<u32, serde_json::Value>>>,
    /// The source ended and every window was closed (recorded in the last commit).
    input_ended: bool,
    /// Whether event time read so far may close windows (see `Source::advances_watermarks`).
    advances_watermarks: bool,
    /// Set to stop the run; a scheduled job gives up with it too.
    stop: Option<Arc<AtomicBool>>,
}

/// Runs a pipeline until its source is exhausted (or, for a stream, stopped).
///
/// Four threads share the work: the source thread produces raw batches; the decode thread
/// turns them into Arrow; the calling thread runs the plugins; the sink thread partitions,
/// encodes Parquet and does the lake I/O (on a small tokio runtime of its own). Bounded
/// channels between them are the back pressure. Plugins must not run on a tokio worker: WASI's synchronous bindings block on
/// their own futures.
pub fn run(loaded: &LoadedPipeline, options: &RunOptions) -> Result<RunSummary, PipelineError> {
    let config = &loaded.config;
    let live = options.live.clone().unwrap_or_else(|| {
        Arc::new(Live::new(
            &config.name,
            &config.instance,
            &describe_source(loaded),
        ))
    });
    let controls = live.attach();
    let result = run_attached(loaded, options, live.clone(), controls, None);
    match &result {
        Ok(_) => live.detach(RunState::Finished, None),
        Err(error) => live.detach(RunState::Failed, Some(error.to_string())),
    }
    result
}

/// What the status page says the source is.
pub fn describe_source(loaded: &LoadedPipeline) -> String {
    match loaded.config.source.kind() {
        Some(SourceKind::Generator(generator)) => {
            format!("generator ({} events)", generator.events)
        }
        Some(SourceKind::Files(files)) => format!("files ({})", files.paths.join(", ")),
        Some(SourceKind::Kafka(kafka)) => format!(
            "kafka {} ({}), group {}",
            kafka.brokers,
            kafka.topics.join(", "),
            kafka.group
        ),
        None => "none".into(),
    }
}

/// Runs a pipeline on a source of the caller's instead of the configured one (the bronze
/// replay of a backfill).
pub fn run_with_source(
    loaded: &LoadedPipeline,
    options: &RunOptions,
    source: Box<dyn Source>,
) -> Result<RunSummary, PipelineError> {
    let config = &loaded.config;
    let live = options
        .live
        .clone()
        .unwrap_or_else(|| Arc::new(Live::new(&config.name, &config.instance, "bronze replay")));
    let controls = live.attach();
    let result = run_attached(loaded, options, live.clone(), controls, Some(source));
    match &result {
        Ok(_) => live.detach(RunState::Finished, None),
        Err(error) => live.detach(RunState::Failed, Some(error.to_string())),
    }
    result
}

fn run_attached(
    loaded: &LoadedPipeline,
    options: &RunOptions,
    live: Arc<Live>,
    controls: std::sync::mpsc::Receiver<Control>,
    given: Option<Box<dyn Source>>,
) -> Result<RunSummary, PipelineError> {
    metrics::init();
    let config = &loaded.config;
    let started = Instant::now();
    let runtime = || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(PipelineError::Runtime)
    };
    let io = runtime()?;
    let lake = LakeWriter::configured(&config.lake)?.retrying(&config.name, options.stop.clone());
    // An interrupted backfill may still have to write this instance's next commit record.
    io.block_on(crate::jobs::finish_pending(lake.storage(), &config.name))?;
    let last = io.block_on(lake.recover(&config.name, &config.instance))?;
    let reader = lake.reader();
    let mut databases = Databases {
        clickhouse: match &config.clickhouse {
            Some(clickhouse) => Some(ClickHouseSink::connect(
                clickhouse,
                &config.name,
                options.stop.clone(),
            )?),
            None => None,
        },
        postgres: match &config.postgres {
            Some(postgres) => Some(PostgresSink::connect(
                postgres,
                &config.name,
                options.stop.clone(),
            )?),
            None => None,
        },
    };
    // The last commit may have become durable in the lake without reaching the databases.
    if let Some(last) = &last {
        databases.load(last, &reader, &io, true)?;
    }

    let mut modules = Vec::new();
    let mut versions = Vec::new();
    {
        let mut status = live.status();
        status.stages.clear();
        for (stage, path) in config.stages.iter().zip(&loaded.plugin_paths) {
            let in_stage = |source| PipelineError::Stage {
                stage: stage.name.clone(),
                source,
            };
            let module = PluginModule::load(path).map_err(in_stage)?;
            let config_json = serde_json::to_string(&stage.config).expect("JSON values serialise");
            // A first instance checks the stage config before any record is consumed.
            let probe = WasmStage::new(
                &stage.name,
                &module,
                stage.limits.clone(),
                &config_json,
                None,
            )
            .map_err(in_stage)?;
            let version = PluginVersion::of(&module, probe.info(), &path.display().to_string());
            metrics::PLUGIN_INFO
                .with_label_values(&plugin_labels(&config.name, &stage.name, &version))
                .set(1);
            status.stages.push(crate::live::StageStatus {
                name: stage.name.clone(),
                plugin: version.clone(),
                previous: vec![],
                watch: stage.watch,
                records_in: 0,
                records_out: 0,
                rejected: 0,
                failures: 0,
                swaps: 0,
                last_swap: None,
                config_json,
                limits: stage.limits.clone(),
                last_input: None,
            });
            if let Some(ran) = last.as_ref().and_then(|l| l.plugins.get(&stage.name))
                && ran.sha256 != version.sha256
            {
                tracing::warn!(stage = %stage.name, last_commit = %ran.stamp(), now = %version.stamp(), "the stage starts with a different plugin build than the last commit ran (a hot-swap is not kept across restarts)");
            }
            modules.push(module);
            versions.push(version);
        }
    }
    for (stage, path) in config.stages.iter().zip(&loaded.plugin_paths) {
        if stage.watch {
            live.watch(&stage.name, path, WATCH_INTERVAL);
        }
    }

    let (events, raw_events) = std::sync::mpsc::sync_channel(QUEUED_BATCHES);
    let own_lanes = last.as_ref().map(|l| l.lanes.clone()).unwrap_or_default();
    let resume = own_lanes.get(&0).map(|l| &l.position);
    let source: Box<dyn Source> = match given {
        Some(source) => source,
        None => match config.source.kind().expect("validated: exactly one source") {
            SourceKind::Generator(generator) => {
                Box::new(GeneratorSource::new(generator, config.batch_rows, resume)?)
            }
            SourceKind::Files(files) => Box::new(FileSource::new(
                &files.paths,
                files.topic.clone(),
                config.batch_rows,
                resume,
            )?),
            SourceKind::Kafka(kafka) => Box::new(KafkaSource::new(
                kafka,
                &config.name,
                config.batch_rows,
                events.clone(),
                options.stop.clone(),
            )?),
        },
    };
    let bounded = source.is_bounded();
    let closes_windows = source.closes_windows_at_end();
    let advances_watermarks = source.advances_watermarks();
    let bounded_lanes = source.lanes();
    let durable = source.durable_positions();
    let buffers = source.buffer_pool();
    let dead_letter_topic = match config.source.kind() {
        Some(SourceKind::Kafka(kafka)) => match &kafka.dead_letter_topic {
            Some(topic) => Some(DeadLetterTopic::new(kafka, topic)?),
            None => None,
        },
        _ => None,
    };
    spawn_source(source, events, options.stop.clone());
    let receiver = spawn_decoder(JsonDecoder::new(loaded.schemas.clone()), raw_events);

    let resumed_at = last.as_ref().map_or(0, |l| l.records);
    let stages = config.stages.len();
    let mut run = Run {
        loaded,
        modules,
        versions,
        previous: vec![Vec::new(); stages],
        live: live.clone(),
        sink: SinkThread::spawn(lake, databases, io),
        reader,
        reads: runtime()?,
        uncommitted_rows: 0,
        lanes: BTreeMap::new(),
        released: own_lanes,
        base_totals: last.as_ref().map(|l| l.totals.clone()).unwrap_or_default(),
        bronze: config.bronze.as_ref().map(|b| {
            Arc::new(Partitioning {
                keys: b.partition_by.clone(),
                event_time: config.event_time.clone(),
            })
        }),
        dead: Vec::new(),
        dead_letter_topic,
        summary: RunSummary {
            pipeline: config.name.clone(),
            resumed_at,
            ..Default::default()
        },
        epoch: last.as_ref().map_or(0, |l| l.epoch),
        consumed: resumed_at,
        committed: resumed_at,
        durable,
        input_ended: false,
        advances_watermarks,
        stop: options.stop.clone(),
    };
    if bounded {
        // A finite source's lanes are known up front, each resumed from this instance's own
        // last commit.
        for lane in bounded_lanes {
            let checkpoint = run.released.remove(&lane);
            run.open_lane(lane, checkpoint.as_ref())?;
        }
    }

    let mut schedule = crate::jobs::schedule::Schedule::new(&config.schedule, chrono::Utc::now());
    let interval = Duration::from_millis(config.lake.commit_interval_ms.max(1));
    let mut last_commit = Instant::now();
    let mut last_progress = Instant::now();
    // Whether everything consumed so far ends at a consistent cut (see `RawBatch::position`).
    let mut at_cut = true;
    live.status().state = RunState::Running;
    loop {
        let event = match receiver.recv_timeout(interval.min(Duration::from_millis(500))) {
            Ok(event) => Some(event?),
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => None,
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => break,
        };
        match event {
            Some(SourceEvent::Batch(DecodedBatch { raw, decoded })) => {
                run.consumed += raw.len() as u64;
                run.summary.records += raw.len() as u64;
                run.process(&raw, decoded)?;
                run.advance_watermarks()?;
                at_cut = raw.position.is_some();
                if let Some(buffers) = &buffers {
                    buffers.give(raw.data);
                }
            }
            Some(SourceEvent::Assigned { lanes, reply }) => {
                let checkpoints = run
                    .reads
                    .block_on(run.reader.lane_checkpoints(&config.name))?;
                let mut resume = BTreeMap::new();
                for lane in lanes {
                    let checkpoint = checkpoints.get(&lane);
                    run.released.remove(&lane);
                    run.open_lane(lane, checkpoint)?;
                    if let Some(checkpoint) = checkpoint {
                        resume.insert(lane, checkpoint.clone());
                    }
                }
                tracing::info!(lanes = ?run.lanes.keys().collect::<Vec<_>>(), "lanes assigned");
                let _ = reply.send(resume);
            }
            Some(SourceEvent::Revoked { lanes, reply }) => {
                let record = run.commit_and_wait()?;
                let mut positions = BTreeMap::new();
                for lane in lanes {
                    run.lanes.remove(&lane);
                    if let Some(checkpoint) = record.lanes.get(&lane) {
                        positions.insert(lane, checkpoint.position.clone());
                        run.released.insert(lane, checkpoint.clone());
                    }
                }
                last_commit = Instant::now();
                tracing::info!(lanes = ?run.lanes.keys().collect::<Vec<_>>(), "lanes revoked");
                let _ = reply.send(positions);
            }
            None => {}
        }
        // Swaps and rollbacks apply between two batches, at a cut, so that a commit can close
        // the old version's files first.
        if at_cut {
            while let Ok(control) = controls.try_recv() {
                run.control(control)?;
            }
        }
        let pending = run.consumed > run.committed || run.uncommitted_rows > 0;
        let due = run.consumed - run.committed >= config.lake.commit_rows
            || run.sink.buffered_bytes() >= config.lake.max_buffer_mb << 20
            || (!bounded && pending && last_commit.elapsed() >= interval);
        if at_cut && due {
            run.commit(None)?;
            last_commit = Instant::now();
        }
        if at_cut && let Some(job) = schedule.due(chrono::Utc::now()) {
            run.run_job(&job)?;
            schedule.ran(&job.name, chrono::Utc::now());
            last_commit = Instant::now();
        }
        if options.progress && last_progress.elapsed() >= Duration::from_millis(500) {
            last_progress = Instant::now();
            run.print_progress(started);
        }
    }
    let stopped = options
        .stop
        .as_ref()
        .is_some_and(|s| s.load(Ordering::Relaxed));
    live.status().state = RunState::Stopping;
    if bounded && closes_windows && !stopped {
        // End of a finite source: the watermark goes to +∞ so stateful stages emit what is
        // open. A stream only stopped: its open state is checkpointed instead.
        run.end_of_input()?;
        run.input_ended = true;
    }
    let newly_ended = run.input_ended && !last.as_ref().is_some_and(|l| l.input_ended);
    if run.consumed > run.committed
        || run.uncommitted_rows > 0
        || !run.dead.is_empty()
        || newly_ended
    {
        run.commit(None)?;
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
    events: std::sync::mpsc::SyncSender<Result<SourceEvent, SourceError>>,
    stop: Option<Arc<AtomicBool>>,
) {
    std::thread::Builder::new()
        .name("sluice-source".into())
        .spawn(move || {
            // A stop waits for a consistent cut: a generator round's batches (one per topic)
            // only resume as a whole, so stopping inside one would commit half of it.
            let mut at_cut = true;
            loop {
                if at_cut && stop.as_ref().is_some_and(|s| s.load(Ordering::Relaxed)) {
                    source.stop();
                    break;
                }
                let next = source.next_batch();
                if let Ok(Some(batch)) = &next {
                    at_cut = batch.position.is_some();
                }
                let stop = !matches!(next, Ok(Some(_)));
                let item = match next {
                    Ok(Some(batch)) => Ok(SourceEvent::Batch(batch)),
                    Ok(None) => break,
                    Err(e) => Err(e),
                };
                if events.send(item).is_err() || stop {
                    break;
                }
            }
        })
        .expect("spawning the source thread");
}

/// A source batch and what the decoder made of it.
struct DecodedBatch {
    raw: RawBatch,
    decoded: Decoded,
}

/// Decodes on a thread of its own, so that JSON → Arrow overlaps with the plugins: on two
/// cores the pipeline thread was the bottleneck and decoding a fifth of its time. Events other
/// than batches (a rebalance) pass through in order.
fn spawn_decoder(
    mut decoder: JsonDecoder,
    input: std::sync::mpsc::Receiver<Result<SourceEvent, SourceError>>,
) -> std::sync::mpsc::Receiver<Result<SourceEvent<DecodedBatch>, SourceError>> {
    let (output, receiver) = std::sync::mpsc::sync_channel(QUEUED_BATCHES);
    std::thread::Builder::new()
        .name("sluice-decode".into())
        .spawn(move || {
            for event in input {
                let event = event.map(|event| match event {
                    SourceEvent::Batch(mut raw) => {
                        let decoded = match raw.decoded.take() {
                            Some(batch) => Decoded {
                                batch: Some(batch),
                                dead: vec![],
                            },
                            None => decoder.decode(&raw),
                        };
                        SourceEvent::Batch(DecodedBatch { raw, decoded })
                    }
                    SourceEvent::Assigned { lanes, reply } => {
                        SourceEvent::Assigned { lanes, reply }
                    }
                    SourceEvent::Revoked { lanes, reply } => SourceEvent::Revoked { lanes, reply },
                });
                if output.send(event).is_err() {
                    break;
                }
            }
        })
        .expect("spawning the decode thread");
    receiver
}

impl Run<'_> {
    /// Creates a lane's plugin instances, restoring their state from `checkpoint`.
    fn open_lane(
        &mut self,
        lane: u32,
        checkpoint: Option<&LaneCheckpoint>,
    ) -> Result<(), PipelineError> {
        let config = &self.loaded.config;
        let snapshots = match checkpoint {
            Some(checkpoint) => self.reads.block_on(self.reader.read_state(checkpoint))?,
            None => BTreeMap::new(),
        };
        let mut stages = Vec::new();
        for (stage, module) in config.stages.iter().zip(&self.modules) {
            let config_json = serde_json::to_string(&stage.config).expect("JSON values serialise");
            let mut runtime = WasmStage::new(
                &stage.name,
                module,
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
            let max_event_time = checkpoint.and_then(|c| c.event_times.get(&stage.name).copied());
            tracing::debug!(lane, stage = %stage.name, plugin = %runtime.info().name, version = %runtime.info().version, "stage ready");
            stages.push(Stage {
                config: stage.clone(),
                runtime,
                partitioning,
                max_event_time,
                watermark: None,
            });
        }
        self.lanes.insert(
            lane,
            Lane {
                stages,
                records: checkpoint.map_or(0, |c| c.records),
                position: checkpoint.map(|c| c.position.clone()),
            },
        );
        Ok(())
    }

    fn process(&mut self, raw: &RawBatch, decoded: Decoded) -> Result<(), PipelineError> {
        self.add_dead(raw.rejected.clone());
        let lane = self.lanes.get_mut(&raw.lane).ok_or_else(|| {
            SourceError::Kafka(format!(
                "a batch for lane {} this instance does not hold",
                raw.lane
            ))
        })?;
        lane.records += raw.len() as u64;
        let pipeline = self.loaded.config.name.as_str();
        metrics::SOURCE_RECORDS
            .with_label_values(&[pipeline, &raw.topic])
            .inc_by(raw.len() as u64);
        metrics::SOURCE_BYTES
            .with_label_values(&[pipeline, &raw.topic])
            .inc_by(raw.data.len() as u64);
        self.live.status().add_records(raw.len() as u64);
        if raw.position.is_some() {
            lane.position = raw.position.clone();
        }
        self.add_dead(decoded.dead);
        let Some(batch) = decoded.batch.filter(|b| b.num_rows() > 0) else {
            return Ok(());
        };
        if let Some(partitioning) = self.bronze.clone() {
            self.write("bronze", &raw.topic, batch.clone(), partitioning)?;
        }
        self.flow(raw.lane, 0, &raw.topic, batch)
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
        metrics::LAKE_ROWS
            .with_label_values(&[self.loaded.config.name.as_str(), layer, table])
            .inc_by(rows);
        *self
            .live
            .status()
            .layers
            .entry(layer.to_string())
            .or_default() += rows;
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
        if letters.is_empty() {
            return;
        }
        let mut status = self.live.status();
        status.rejected += letters.len() as u64;
        for letter in &letters {
            let kind = reason_kind(&letter.reason);
            *self
                .summary
                .rejects
                .entry(format!("{}: {kind}", letter.stage))
                .or_default() += 1;
            metrics::STAGE_RECORDS_REJECTED
                .with_label_values(&[self.loaded.config.name.as_str(), &letter.stage, kind])
                .inc();
            if let Some(stage) = status.stage_mut(&letter.stage) {
                stage.rejected += 1;
            }
        }
        drop(status);
        self.dead.extend(letters);
    }

    /// Sends a batch of `topic` through the lane's stages from index `from` on.
    fn flow(
        &mut self,
        lane: u32,
        from: usize,
        topic: &str,
        batch: RecordBatch,
    ) -> Result<(), PipelineError> {
        let mut pending = vec![(from, topic.to_string(), batch)];
        while let Some((index, topic, batch)) = pending.pop() {
            let Some(stage) = self
                .lanes
                .get_mut(&lane)
                .and_then(|l| l.stages.get_mut(index))
            else {
                continue;
            };
            if !stage.runtime.applies_to(&topic) {
                pending.push((index + 1, topic, batch));
                continue;
            }
            if let Some(latest) = max_event_time(&batch, &self.loaded.config.event_time) {
                stage.max_event_time = Some(stage.max_event_time.map_or(latest, |m| m.max(latest)));
            }
            let started = Instant::now();
            let outputs = stage.runtime.process(&topic, &batch);
            let rows = batch.num_rows() as u64;
            self.observe_call(lane, index, started, rows, &outputs);
            if let Some(status) = self.live.status().stages.get_mut(index) {
                status.records_in += rows;
                if status
                    .last_input
                    .as_ref()
                    .is_none_or(|(t, s)| *t != topic || *s != batch.schema())
                {
                    status.last_input = Some((topic.clone(), batch.schema()));
                }
            }
            let routed = self.route(lane, index, &topic, outputs, Some(batch))?;
            // Keep batch order: later outputs are pushed first so the first is processed first.
            pending.extend(routed.into_iter().rev());
        }
        Ok(())
    }

    /// Writes a stage's outputs to its layer and dead letters; returns what flows on.
    fn route(
        &mut self,
        lane: u32,
        index: usize,
        topic: &str,
        outputs: Result<Vec<(String, RecordBatch)>, StageError>,
        input: Option<RecordBatch>,
    ) -> Result<Vec<(usize, String, RecordBatch)>, PipelineError> {
        let stage = &self.lanes[&lane].stages[index];
        let plugin = self.versions[index].label();
        let stamp = self.versions[index].stamp();
        let stage_name = stage.config.name.clone();
        let outputs = match outputs {
            Ok(outputs) => outputs,
            Err(error) => {
                let rows = input.as_ref().and_then(describe_rows).unwrap_or_default();
                tracing::warn!(stage = %stage_name, plugin = %plugin, reason = %error.reason, rows = %rows, "batch failed; its rows go to the dead-letter output");
                self.live.status().error(format!(
                    "stage `{stage_name}` ({plugin}): {}, in the batch of {rows}",
                    error.reason
                ));
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
            let stage = &self.lanes[&lane].stages[index];
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
            metrics::STAGE_RECORDS_OUT
                .with_label_values(&[self.loaded.config.name.as_str(), &stage_name, &name])
                .inc_by(batch.num_rows() as u64);
            if let Some(status) = self.live.status().stages.get_mut(index) {
                status.records_out += batch.num_rows() as u64;
            }
            if let Some(layer) = layer {
                let partitioning = stage.partitioning.clone();
                // Every file records the plugin build that produced its rows (a swap commits
                // first, so no file mixes two).
                let stamped = with_metadata(&batch, PLUGIN_METADATA, &stamp);
                self.write(&layer, &table, stamped, partitioning)?;
            }
            onward.push((index + 1, table, batch));
        }
        Ok(onward)
    }

    /// Sends each stage whose watermark advanced its new watermark — the latest event time
    /// that reached it minus the allowed lateness — and passes on what that closes. Watermarks
    /// are assigned per lane and stage, from the rows that reach it, so rows an earlier stage
    /// rejected (an impossible timestamp, say) cannot push event time forward.
    fn advance_watermarks(&mut self) -> Result<(), PipelineError> {
        if !self.advances_watermarks {
            return Ok(());
        }
        let lateness = self.loaded.config.allowed_lateness_ms;
        let lanes: Vec<u32> = self.lanes.keys().copied().collect();
        for lane in lanes {
            for index in 0..self.lanes[&lane].stages.len() {
                let stage = &self.lanes[&lane].stages[index];
                let Some(latest) = stage.max_event_time else {
                    continue;
                };
                let watermark = latest.saturating_sub(lateness);
                if stage.watermark.is_some_and(|w| w >= watermark) {
                    continue;
                }
                self.send_watermark(lane, index, watermark)?;
            }
        }
        Ok(())
    }

    fn send_watermark(
        &mut self,
        lane: u32,
        index: usize,
        watermark: i64,
    ) -> Result<(), PipelineError> {
        let stage = &mut self.lanes.get_mut(&lane).expect("open lane").stages[index];
        stage.watermark = Some(watermark);
        let name = stage.config.name.clone();
        let started = Instant::now();
        let outputs = stage.runtime.on_watermark(watermark);
        self.observe_call(lane, index, started, 0, &outputs);
        let onward = self.route(lane, index, &name, outputs, None)?;
        for (next, table, batch) in onward {
            self.flow(lane, next, &table, batch)?;
        }
        Ok(())
    }

    /// End of a finite source: the watermark goes to +∞ so stateful stages emit all they hold.
    fn end_of_input(&mut self) -> Result<(), PipelineError> {
        let lanes: Vec<u32> = self.lanes.keys().copied().collect();
        for lane in lanes {
            for index in 0..self.lanes[&lane].stages.len() {
                self.send_watermark(lane, index, i64::MAX)?;
            }
        }
        Ok(())
    }

    /// Metrics and status of one plugin call.
    fn observe_call(
        &self,
        lane: u32,
        index: usize,
        started: Instant,
        rows: u64,
        outputs: &Result<Vec<(String, RecordBatch)>, StageError>,
    ) {
        let stage = &self.lanes[&lane].stages[index];
        let pipeline = self.loaded.config.name.as_str();
        let name = stage.config.name.as_str();
        metrics::STAGE_BATCH_SECONDS
            .with_label_values(&[pipeline, name])
            .observe(started.elapsed().as_secs_f64());
        let plugin = &self.versions[index].name;
        metrics::PLUGIN_FUEL
            .with_label_values(&[pipeline, name, plugin])
            .inc_by(stage.runtime.last_fuel());
        if rows > 0 {
            metrics::STAGE_RECORDS_IN
                .with_label_values(&[pipeline, name])
                .inc_by(rows);
        }
        if outputs.is_err() {
            metrics::PLUGIN_FAILURES
                .with_label_values(&[pipeline, name, plugin])
                .inc();
            if let Some(status) = self.live.status().stages.get_mut(index) {
                status.failures += 1;
            }
        }
    }

    /// Applies a hot-swap or rollback and answers it. Only a failing commit is an error of
    /// the pipeline; a refused swap is the requester's.
    fn control(&mut self, control: Control) -> Result<(), PipelineError> {
        let result = self.swap_stage(&control.stage, control.request)?;
        if let Ok(version) = &result {
            let pipeline = self.loaded.config.name.as_str();
            metrics::PLUGIN_RELOADS
                .with_label_values(&[pipeline, &control.stage, "swapped"])
                .inc();
            let previous = self.previous[self.stage_index(&control.stage).unwrap_or(0)]
                .iter()
                .map(|(_, v)| v.clone())
                .collect();
            if let Some(status) = self.live.status().stage_mut(&control.stage) {
                status.plugin = version.clone();
                status.previous = previous;
                status.swaps += 1;
            }
        }
        let _ = control.reply.send(result);
        Ok(())
    }

    fn stage_index(&self, stage: &str) -> Option<usize> {
        self.loaded
            .config
            .stages
            .iter()
            .position(|s| s.name == stage)
    }

    /// Swaps a stage's plugin in every lane: commits what the old version produced, hands
    /// each lane's state over, then replaces the instances — all or none.
    fn swap_stage(
        &mut self,
        stage: &str,
        request: ControlRequest,
    ) -> Result<Result<PluginVersion, SwapError>, PipelineError> {
        let Some(index) = self.stage_index(stage) else {
            return Ok(Err(SwapError::UnknownStage {
                pipeline: self.loaded.config.name.clone(),
                stage: stage.to_string(),
            }));
        };
        let (module, mut version, rollback) = match request {
            ControlRequest::Swap(candidate) => {
                let Candidate { module, version } = *candidate;
                (module, version, false)
            }
            ControlRequest::Rollback => match self.previous[index].pop() {
                Some((module, version)) => (module, version, true),
                None => {
                    return Ok(Err(SwapError::NoPrevious {
                        stage: stage.to_string(),
                    }));
                }
            },
        };
        if self.consumed > self.committed || self.uncommitted_rows > 0 || !self.dead.is_empty() {
            self.commit(None)?;
        }
        let config = &self.loaded.config.stages[index];
        let config_json = serde_json::to_string(&config.config).expect("JSON values serialise");
        let mut fresh = BTreeMap::new();
        let mut refusal = None;
        for (&number, lane) in &mut self.lanes {
            let old = &mut lane.stages[index].runtime;
            let handed_over = WasmStage::new(
                stage,
                &module,
                config.limits.clone(),
                &config_json,
                config.topics.clone(),
            )
            .map_err(|e| e.to_string())
            .and_then(|mut runtime| {
                if old.info().stateful {
                    let state = old
                        .snapshot()
                        .map_err(|e| format!("snapshot of the running version: {}", e.reason))?;
                    runtime
                        .restore(&state)
                        .map_err(|e| format!("restore into the new version: {}", e.reason))?;
                }
                Ok(runtime)
            });
            match handed_over {
                Ok(runtime) => {
                    fresh.insert(number, runtime);
                }
                Err(reason) => {
                    refusal = Some(format!("lane {number}: {reason}"));
                    break;
                }
            }
        }
        if let Some(reason) = refusal {
            if rollback {
                self.previous[index].push((module, version));
            }
            return Ok(Err(SwapError::refused(stage, reason)));
        }
        for (number, runtime) in fresh {
            if let Some(lane) = self.lanes.get_mut(&number) {
                lane.stages[index].runtime = runtime;
            }
        }
        if rollback {
            version.origin = format!("rollback to {}", version.origin);
        }
        let pipeline = self.loaded.config.name.clone();
        let old_version = std::mem::replace(&mut self.versions[index], version.clone());
        let old_module = std::mem::replace(&mut self.modules[index], module);
        let _ = metrics::PLUGIN_INFO.remove_label_values(&plugin_labels(
            &pipeline,
            stage,
            &old_version,
        ));
        metrics::PLUGIN_INFO
            .with_label_values(&plugin_labels(&pipeline, stage, &version))
            .set(1);
        if !rollback {
            self.previous[index].push((old_module, old_version));
        }
        Ok(Ok(version))
    }

    /// Commits and waits until the commit is durable; returns its record.
    fn commit_and_wait(&mut self) -> Result<CommitRecord, PipelineError> {
        let (done, wait) = std::sync::mpsc::channel();
        self.commit(Some(done))?;
        match wait.recv() {
            Ok(record) => Ok(record),
            // The sink thread ended without committing: it failed, and says why.
            Err(_) => self.sink.finish().and(Err(PipelineError::Sink)),
        }
    }

    /// Makes everything sent so far durable, with every lane's position and state: one epoch.
    fn commit(
        &mut self,
        done: Option<std::sync::mpsc::Sender<CommitRecord>>,
    ) -> Result<(), PipelineError> {
        self.epoch += 1;
        if !self.dead.is_empty() {
            let letters = std::mem::take(&mut self.dead);
            if let Some(topic) = &mut self.dead_letter_topic {
                topic.send(&letters)?;
            }
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
        let mut lanes = self.released.clone();
        for (&number, lane) in &mut self.lanes {
            let mut checkpoint = LaneCheckpoint {
                records: lane.records,
                position: lane.position.clone().unwrap_or_default(),
                ..Default::default()
            };
            for stage in &mut lane.stages {
                if let Some(latest) = stage.max_event_time {
                    checkpoint
                        .event_times
                        .insert(stage.config.name.clone(), latest);
                }
                if stage.runtime.info().stateful {
                    let snapshot =
                        stage
                            .runtime
                            .snapshot()
                            .map_err(|e| PipelineError::Restore {
                                stage: stage.config.name.clone(),
                                reason: e.reason,
                            })?;
                    snapshots.insert((number, stage.config.name.clone()), snapshot);
                }
            }
            lanes.insert(number, checkpoint);
        }
        let record = CommitRecord {
            pipeline: self.loaded.config.name.clone(),
            instance: self.loaded.config.instance.clone(),
            epoch: self.epoch,
            records: self.consumed,
            files: vec![],
            totals: self.totals(),
            lanes,
            plugins: self
                .loaded
                .config
                .stages
                .iter()
                .map(|s| s.name.clone())
                .zip(self.versions.iter().cloned())
                .collect(),
            input_ended: self.input_ended,
        };
        let durable = self.durable.clone();
        let owned: Vec<u32> = self.lanes.keys().copied().collect();
        let live = self.live.clone();
        let notify: Box<dyn FnOnce(&CommitRecord) + Send> = Box::new(move |record| {
            let now = std::time::SystemTime::now();
            metrics::COMMITS
                .with_label_values(&[&record.pipeline])
                .inc();
            metrics::LAST_COMMIT
                .with_label_values(&[&record.pipeline])
                .set(crate::live::unix_ms(now) as f64 / 1000.0);
            live.status().last_commit = Some(crate::live::CommitStatus {
                epoch: record.epoch,
                at_ms: crate::live::unix_ms(now),
            });
            if let Some(durable) = durable {
                let positions = owned
                    .iter()
                    .filter_map(|lane| Some((*lane, record.lanes.get(lane)?.position.clone())))
                    .collect();
                let _ = durable.send(positions);
            }
            if let Some(done) = done {
                let _ = done.send(record.clone());
            }
        });
        self.sink.send(SinkCommand::Commit {
            record,
            snapshots,
            first: self.committed,
            last: self.consumed.saturating_sub(1),
            notify,
        })?;
        self.committed = self.consumed;
        self.uncommitted_rows = 0;
        self.summary.commits += 1;
        Ok(())
    }

    /// Runs a scheduled job between two batches: everything consumed is committed first, and
    /// the source waits (back pressure) until the job is done. A backfill hands every lane the
    /// state it rebuilt; a compaction changes no state. A failed compaction is logged and
    /// counted, and the stream goes on; a failed backfill stops the run (its half-applied
    /// change is finished by the next start, before anything else is written).
    fn run_job(&mut self, job: &crate::config::ScheduledJob) -> Result<(), PipelineError> {
        use crate::config::JobKind;
        let pipeline = self.loaded.config.name.clone();
        let kind = job.job.name();
        let started = Instant::now();
        tracing::info!(pipeline = %pipeline, job = %job.name, kind, "scheduled job starts");
        self.commit_and_wait()?;
        let outcome = match job.job {
            JobKind::Compact => {
                let options = crate::jobs::compact::CompactOptions {
                    layers: job.layers.clone(),
                    min_files: job.min_files,
                    target_file_mb: job.target_file_mb,
                };
                match crate::jobs::compact::compact(self.loaded, &options) {
                    Ok(report) => {
                        tracing::info!(job = %job.name, folders = report.folders, before = report.files_before, after = report.files_after, "compaction done");
                        "ok"
                    }
                    Err(error) => {
                        tracing::warn!(job = %job.name, %error, "compaction failed; the stream goes on");
                        self.live
                            .status()
                            .error(format!("job `{}`: {error}", job.name));
                        "failed"
                    }
                }
            }
            JobKind::Backfill => self.scheduled_backfill(&job.name)?,
        };
        metrics::JOB_RUNS
            .with_label_values(&[pipeline.as_str(), &job.name, kind, outcome])
            .inc();
        metrics::JOB_SECONDS
            .with_label_values(&[pipeline.as_str(), &job.name, kind])
            .observe(started.elapsed().as_secs_f64());
        if outcome == "ok" {
            metrics::JOB_LAST_SUCCESS
                .with_label_values(&[pipeline.as_str(), &job.name])
                .set(crate::live::unix_ms(std::time::SystemTime::now()) as f64 / 1000.0);
        }
        Ok(())
    }

    /// A backfill inside the running pipeline; its lanes then resume from the rebuilt state.
    fn scheduled_backfill(&mut self, job: &str) -> Result<&'static str, PipelineError> {
        let config = &self.loaded.config;
        let others: Vec<String> = self
            .reads
            .block_on(self.reader.latest_records(&config.name))?
            .into_iter()
            .map(|r| r.instance)
            .filter(|i| *i != config.instance)
            .collect();
        if !others.is_empty() {
            // They would go on writing while the layers are rebuilt under them.
            let reason = format!(
                "job `{job}`: not run — instances {} also run this pipeline; backfill with all of them stopped",
                others.join(", ")
            );
            tracing::warn!("{reason}");
            self.live.status().error(reason);
            return Ok("refused");
        }
        let options = crate::jobs::backfill::BackfillOptions {
            from: "bronze".into(),
            progress: false,
            stop: self.stop.clone(),
        };
        let report = crate::jobs::backfill::backfill(self.loaded, &options)
            .map_err(|e| PipelineError::Job(format!("job `{job}`: {e}")))?;
        tracing::info!(
            job,
            generation = report.generation,
            records = report.summary.records,
            "backfill done"
        );
        let record = self
            .reads
            .block_on(self.reader.latest_records(&config.name))?
            .into_iter()
            .find(|r| r.instance == config.instance)
            .ok_or(PipelineError::Sink)?;
        // What this run added to the totals so far is in the rebuilt ones already.
        let run = self.run_totals();
        self.base_totals = record
            .totals
            .iter()
            .map(|(k, v)| {
                (
                    k.clone(),
                    v.saturating_sub(run.get(k).copied().unwrap_or(0)),
                )
            })
            .collect();
        self.epoch = record.epoch;
        let lanes: Vec<u32> = self.lanes.keys().copied().collect();
        for lane in lanes {
            self.lanes.remove(&lane);
            self.open_lane(lane, record.lanes.get(&lane))?;
        }
        self.released = record
            .lanes
            .into_iter()
            .filter(|(lane, _)| !self.lanes.contains_key(lane))
            .collect();
        Ok("ok")
    }

    /// Running totals since the pipeline first ran: the last commit's plus this run's.
    fn totals(&self) -> BTreeMap<String, u64> {
        let mut totals = self.base_totals.clone();
        for (key, value) in self.run_totals() {
            *totals.entry(key).or_default() += value;
        }
        totals
    }

    /// What this run counted: rows per layer, dead letters per reason, records.
    fn run_totals(&self) -> BTreeMap<String, u64> {
        let mut totals = BTreeMap::new();
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
        snapshots: BTreeMap<(u32, String), Vec<u8>>,
        first: u64,
        last: u64,
        /// Called with the written record once it is durable.
        notify: Box<dyn FnOnce(&CommitRecord) + Send>,
    },
}

/// The databases a layer is loaded into after each lake commit.
struct Databases {
    clickhouse: Option<ClickHouseSink>,
    postgres: Option<PostgresSink>,
}

impl Databases {
    /// Loads what `record` committed into every database; `catching_up` (at start, for the
    /// last commit) logs what had not arrived yet.
    fn load(
        &mut self,
        record: &CommitRecord,
        reader: &LakeReader,
        io: &tokio::runtime::Runtime,
        catching_up: bool,
    ) -> Result<(), PipelineError> {
        if let Some(clickhouse) = &mut self.clickhouse {
            let report = clickhouse.load(record, reader, io)?;
            if catching_up && !report.rows.is_empty() {
                tracing::info!(epoch = record.epoch, rows = ?report.rows, "ClickHouse caught up with the lake");
            }
        }
        if let Some(postgres) = &mut self.postgres {
            let report = postgres.load(record, reader, io)?;
            if catching_up && !report.rows.is_empty() {
                tracing::info!(epoch = record.epoch, rows = ?report.rows, "PostgreSQL caught up with the lake");
            }
        }
        Ok(())
    }
}

/// Partitioning and Parquet encoding run on their own thread, so they overlap with decoding
/// and plugins. The bounded channel is the back pressure: a slow lake slows the pipeline.
struct SinkThread {
    commands: Option<std::sync::mpsc::SyncSender<SinkCommand>>,
    /// Bytes of the open files, as of the last command the sink thread finished.
    buffered: Arc<AtomicU64>,
    /// Commits sent, and commits the sink thread has finished: while one is in flight, the
    /// published `buffered` still counts the files that commit is closing.
    commits_sent: u64,
    commits_done: Arc<AtomicU64>,
    thread: Option<std::thread::JoinHandle<Result<(), PipelineError>>>,
}

impl SinkThread {
    fn spawn(mut lake: LakeWriter, mut databases: Databases, io: tokio::runtime::Runtime) -> Self {
        let reader = lake.reader();
        let (commands, receiver) =
            std::sync::mpsc::sync_channel::<SinkCommand>(QUEUED_SINK_COMMANDS);
        let buffered = Arc::new(AtomicU64::new(0));
        let published = buffered.clone();
        let commits_done = Arc::new(AtomicU64::new(0));
        let finished_commits = commits_done.clone();
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
                            notify,
                        } => {
                            let started = Instant::now();
                            let pipeline = record.pipeline.clone();
                            let record =
                                io.block_on(lake.commit(record, snapshots, first, last))?;
                            metrics::SINK_WRITE_SECONDS
                                .with_label_values(&[pipeline.as_str(), "lake", ""])
                                .observe(started.elapsed().as_secs_f64());
                            published.store(0, Ordering::Relaxed);
                            finished_commits.fetch_add(1, Ordering::Release);
                            // Positions become durable only once every sink has the rows.
                            databases.load(&record, &reader, &io, false)?;
                            notify(&record);
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
            commits_sent: 0,
            commits_done,
            thread: Some(thread),
        }
    }

    /// What the open files hold, for the `max_buffer_mb` trigger. Nothing while a commit is
    /// in flight: the figure published then is of the files that commit closes, and reading it
    /// made the pipeline commit again at each of the next few batches, a file of one batch each.
    fn buffered_bytes(&self) -> u64 {
        if self.commits_done.load(Ordering::Acquire) < self.commits_sent {
            return 0;
        }
        self.buffered.load(Ordering::Relaxed)
    }

    fn send(&mut self, command: SinkCommand) -> Result<(), PipelineError> {
        if matches!(command, SinkCommand::Commit { .. }) {
            self.commits_sent += 1;
        }
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
            Some(Ok(Err(error))) => Err(error),
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

/// Batches waiting between the source, decode and pipeline threads, and commands waiting for
/// the sink thread: enough to keep each thread busy while another is scheduled, few enough
/// that the batches in flight stay in cache. Twice as many held 11 to 35 MiB more at 1M events
/// and were no faster (the benchmark's jobs; clean 2 % slower).
const QUEUED_BATCHES: usize = 2;
const QUEUED_SINK_COMMANDS: usize = 4;

/// How often a watched plugin file is polled.
const WATCH_INTERVAL: Duration = Duration::from_secs(1);

fn plugin_labels<'a>(
    pipeline: &'a str,
    stage: &'a str,
    version: &'a PluginVersion,
) -> [&'a str; 5] {
    [
        pipeline,
        stage,
        version.name.as_str(),
        version.version.as_str(),
        version.sha256.as_str(),
    ]
}

/// The batch with one more schema metadata entry.
fn with_metadata(batch: &RecordBatch, key: &str, value: &str) -> RecordBatch {
    let schema = batch.schema();
    let mut metadata = schema.metadata().clone();
    metadata.insert(key.to_string(), value.to_string());
    let schema = Arc::new(arrow::datatypes::Schema::new_with_metadata(
        schema.fields().clone(),
        metadata,
    ));
    batch
        .clone()
        .with_schema(schema)
        .expect("only the metadata changed")
}
