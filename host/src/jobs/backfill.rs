//! `sluice backfill PIPELINE --from bronze`: rebuilds every layer the pipeline's stages write
//! (silver, gold, their dead letters) from the bronze layer, as a batch job — after a plugin
//! changed, say. The result is what the stream would have written had it run the current
//! plugins from the start.
//!
//! 1. Finish what an interrupted backfill left (below), and recover every instance's last
//!    commit, so bronze holds exactly what was committed.
//! 2. Replay bronze (`source::replay`, the stream's batches in the stream's order) through the
//!    pipeline's stages, into a shadow lake in the job's scratch folder — an ordinary run with
//!    its own commits, of an instance named `backfill-<number>`.
//! 3. Record and apply the change as a `jobs::Rewrite`: the shadow's files move in, the
//!    layers' current files go, and each instance gets its next commit record, whose lanes
//!    keep their source positions but carry the backfill's plugin state, so a resumed stream
//!    goes on from the rebuilt state. A crash in 3 is finished by the next start; a crash
//!    before it leaves only a shadow, which the next job deletes.
//!
//! Running a backfill twice gives the same layers. The pipeline must not be running meanwhile
//! (a `schedule:` runs backfills inside the pipeline's own process, between two batches).
use super::Rewrite;
use crate::config::{LoadedPipeline, PipelineConfig, SourceKind};
use crate::pipeline::{PipelineError, RunOptions, RunSummary, run_with_source};
use crate::sink::lake::{CommitRecord, LakeError, LakeUri, LakeWriter, partition_value};
use crate::sink::{dead_letter, delta};
use crate::source::Source;
use crate::source::files::FileSource;
use crate::source::replay::{Batching, ReplayPlan, ReplaySource};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

#[derive(Debug, thiserror::Error)]
pub enum BackfillError {
    #[error(transparent)]
    Lake(#[from] LakeError),
    #[error("the backfill's run failed: {0}")]
    Run(#[from] PipelineError),
    #[error("cannot backfill from `{0}`: only `bronze` is kept raw enough to replay")]
    From(String),
    #[error(
        "stage `{stage}` writes to layer `{layer}`, which a backfill from bronze cannot rebuild"
    )]
    Layer { stage: String, layer: String },
    #[error("pipeline `{pipeline}` has no commits in {lake}: nothing to backfill")]
    Empty { pipeline: String, lake: String },
    #[error("pipeline `{0}` has no bronze layer to backfill from")]
    NoBronze(String),
    #[error("cannot start the I/O runtime: {0}")]
    Runtime(std::io::Error),
}

/// What a backfill did.
#[derive(Debug, Clone)]
pub struct BackfillReport {
    pub generation: u64,
    /// The layers rebuilt (silver, gold, …).
    pub layers: Vec<String>,
    /// Committed epochs of bronze replayed (per lane).
    pub epochs: usize,
    /// The run over the replay: records replayed, rows per layer, dead letters.
    pub summary: RunSummary,
    pub removed: usize,
    pub added: usize,
    pub elapsed: Duration,
}

pub struct BackfillOptions {
    /// The layer to replay (only `bronze`).
    pub from: String,
    pub progress: bool,
    pub stop: Option<Arc<AtomicBool>>,
}

/// Runs a backfill of `loaded`'s pipeline (see the module docs).
pub fn backfill(
    loaded: &LoadedPipeline,
    options: &BackfillOptions,
) -> Result<BackfillReport, BackfillError> {
    let started = Instant::now();
    let config = &loaded.config;
    if options.from != "bronze" {
        return Err(BackfillError::From(options.from.clone()));
    }
    if config.bronze.is_none() {
        return Err(BackfillError::NoBronze(config.name.clone()));
    }
    let layers = rebuilt_layers(loaded)?;
    let io = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(BackfillError::Runtime)?;
    let uri = LakeUri::parse(&config.lake.uri)?;
    let lake = LakeWriter::configured(&config.lake)?.retrying(&config.name, None);
    let storage = lake.storage().clone();
    let pipeline = config.name.as_str();

    io.block_on(super::finish_pending(&storage, pipeline))?;
    let reader = lake.reader();
    let instances = io.block_on(reader.latest_records(pipeline))?;
    for record in &instances {
        io.block_on(lake.recover(pipeline, &record.instance))?;
    }
    let records = io.block_on(reader.records(pipeline))?;
    if records.is_empty() {
        return Err(BackfillError::Empty {
            pipeline: pipeline.to_string(),
            lake: config.lake.uri.clone(),
        });
    }
    let generation = io.block_on(super::next_number(&storage, pipeline))?;
    let mut rewrite = Rewrite::new(pipeline, "backfill", generation);
    let shadow = rewrite.scratch();

    // 2. The stages over the replay, into the shadow lake.
    let plan = ReplayPlan::new(&records);
    let epochs = plan.epochs();
    let batching = Batching::of(&config.source.kind().expect("validated: one source"));
    let source = ReplaySource::new(
        plan,
        reader.clone(),
        batching,
        config.batch_rows,
        &config.event_time,
    )
    .map_err(PipelineError::from)?
    .advancing_watermarks(stream_advanced_watermarks(config)?);
    let mut shadow_run = loaded.clone();
    let instance = format!("backfill-{generation}");
    // A name of its own, so that its metrics are not counted as the pipeline's.
    shadow_run.config.name = format!("{pipeline}-backfill");
    shadow_run.config.instance = instance.clone();
    shadow_run.config.lake.uri = uri.child(&shadow).to_string();
    shadow_run.config.bronze = None;
    shadow_run.config.clickhouse = None;
    shadow_run.config.postgres = None;
    shadow_run.config.admin = None;
    for stage in &mut shadow_run.config.stages {
        stage.watch = false;
    }
    let mut summary = run_with_source(
        &shadow_run,
        &RunOptions {
            progress: options.progress,
            stop: options.stop.clone(),
            live: None,
        },
        Box::new(source),
    )?;
    summary.pipeline = pipeline.to_string();
    let shadow_last = io
        .block_on(
            LakeWriter::new(&uri.child(&shadow), config.lake.zstd_level)?
                .reader()
                .latest_records(&shadow_run.config.name),
        )?
        .into_iter()
        .find(|r| r.instance == instance);

    // 3. The change, recorded and applied.
    rewrite.delta_layers = config.lake.delta_layers();
    for layer in &layers {
        let delta = rewrite.delta_layers.contains(layer);
        let current = io.block_on(delta::layer_files(&storage, layer, delta))?;
        rewrite
            .remove
            .extend(current.into_iter().map(|(path, _)| path));
        for file in io.block_on(storage.list(&format!("{shadow}/{layer}")))? {
            // The shadow's Delta logs stay behind: the lake's tables get commits of their own.
            if !delta::is_log(&file) {
                let to = file[shadow.len() + 1..].to_string();
                rewrite.moves.push((file, to));
            }
        }
    }
    let stage_rejects: BTreeSet<String> = config
        .stages
        .iter()
        .map(|s| format!("stage={}", partition_value(&s.name)))
        .collect();
    for file in io.block_on(storage.list(dead_letter::LAYER))? {
        if file
            .split('/')
            .nth(2)
            .is_some_and(|p| stage_rejects.contains(p))
        {
            rewrite.remove.push(file);
        }
    }
    for file in io.block_on(storage.list(&format!("{shadow}/{}", dead_letter::LAYER)))? {
        let to = file[shadow.len() + 1..].to_string();
        rewrite.moves.push((file, to));
    }
    rewrite.records = next_records(
        &instances,
        shadow_last.as_ref(),
        &shadow,
        &layers,
        &mut rewrite.moves,
    );
    let (removed, added) = (rewrite.remove.len(), rewrite.moves.len());
    io.block_on(rewrite.commit(&storage))?;
    for layer in &layers {
        storage.prune_empty_folders(layer);
    }
    tracing::info!(pipeline, generation, removed, added, "backfill swapped in");
    Ok(BackfillReport {
        generation,
        layers: layers.into_iter().collect(),
        epochs,
        summary,
        removed,
        added,
        elapsed: started.elapsed(),
    })
}

/// The layers the stages write: a stage's `layer`, or its own name for its named outputs.
/// Whether the stream that wrote bronze advanced watermarks: not when it read several files
/// (`Source::advances_watermarks`), judged by what the source's globs match now.
fn stream_advanced_watermarks(config: &PipelineConfig) -> Result<bool, PipelineError> {
    Ok(match config.source.kind() {
        Some(SourceKind::Files(files)) => {
            FileSource::new(&files.paths, None, 1, None)?.advances_watermarks()
        }
        _ => true,
    })
}

fn rebuilt_layers(loaded: &LoadedPipeline) -> Result<BTreeSet<String>, BackfillError> {
    let mut layers = BTreeSet::new();
    for stage in &loaded.config.stages {
        let layer = stage.layer.clone().unwrap_or_else(|| stage.name.clone());
        if layer == "bronze" || layer.starts_with('_') {
            return Err(BackfillError::Layer {
                stage: stage.name.clone(),
                layer,
            });
        }
        layers.insert(layer);
    }
    Ok(layers)
}

/// Each instance's next commit record: the same source positions and totals, with the
/// backfill's plugin state for the lanes whose furthest checkpoint it holds, and the
/// rebuilt layers' totals (given to the first instance, so that the sums stay right).
fn next_records(
    instances: &[CommitRecord],
    shadow_last: Option<&CommitRecord>,
    shadow: &str,
    layers: &BTreeSet<String>,
    moves: &mut Vec<(String, String)>,
) -> Vec<CommitRecord> {
    let mut owner: BTreeMap<u32, (&str, u64)> = BTreeMap::new();
    for record in instances {
        for (&lane, checkpoint) in &record.lanes {
            if owner
                .get(&lane)
                .is_none_or(|(_, r)| checkpoint.records > *r)
            {
                owner.insert(lane, (&record.instance, checkpoint.records));
            }
        }
    }
    let rebuilt = |key: &str| {
        key.strip_prefix("rows.")
            .is_some_and(|l| layers.contains(l))
            || key.starts_with("rejects.") && !key.starts_with("rejects.decode:")
    };
    let mut next = Vec::new();
    for (n, record) in instances.iter().enumerate() {
        let mut record = record.clone();
        record.epoch += 1;
        record.files.clear();
        record.totals.retain(|k, _| !rebuilt(k));
        if n == 0
            && let Some(last) = shadow_last
        {
            for (key, value) in &last.totals {
                if rebuilt(key) {
                    record.totals.insert(key.clone(), *value);
                }
            }
        }
        if let Some(last) = shadow_last {
            for (&lane, rebuilt_lane) in &last.lanes {
                if owner.get(&lane).is_none_or(|(i, _)| *i != record.instance) {
                    continue;
                }
                let checkpoint = record.lanes.entry(lane).or_default();
                checkpoint.state.clear();
                for (stage, path) in &rebuilt_lane.state {
                    let to = format!(
                        "_state/{}/{}/{:010}/lane-{lane}/{stage}.bin",
                        record.pipeline, record.instance, record.epoch
                    );
                    moves.push((format!("{shadow}/{path}"), to.clone()));
                    checkpoint.state.insert(stage.clone(), to);
                }
                checkpoint.event_times = rebuilt_lane.event_times.clone();
            }
        }
        next.push(record);
    }
    next
}
