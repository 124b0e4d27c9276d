//! `sluice compact PIPELINE`: merges the small files a stream leaves (one per partition folder
//! per commit) into files of about `target_file_mb`, folder by folder.
//!
//! Files of the same folder are merged in name order (the order commits wrote them), only
//! with files of the same schema, metadata included: a merged file still holds one plugin
//! build's rows, as its stamp says. Left alone: bronze and the decode step's dead letters,
//! which are the log a backfill replays (their commit records name them), and every file the
//! latest commit record of an instance lists (a restart may still load them into ClickHouse or
//! PostgreSQL). Committed files do not change after their commit, so compaction may run while
//! the pipeline does. The change is a `jobs::Rewrite`: merged files move in first, then the
//! small ones go — a reader listing the folder in between sees both.
use super::Rewrite;
use crate::config::LoadedPipeline;
use crate::sink::lake::{LakeError, LakeWriter};
use crate::sink::{dead_letter, delta};
use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use parquet::arrow::ArrowWriter;
use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

#[derive(Debug, thiserror::Error)]
pub enum CompactError {
    #[error(transparent)]
    Lake(#[from] LakeError),
    #[error("parquet: {0}")]
    Parquet(#[from] parquet::errors::ParquetError),
    #[error("cannot compact `{0}`: bronze is the log a backfill replays, file by file")]
    Bronze(String),
    #[error("cannot start the I/O runtime: {0}")]
    Runtime(std::io::Error),
}

#[derive(Debug, Clone)]
pub struct CompactOptions {
    /// Layers to compact; empty means every layer the stages write, and their dead letters.
    pub layers: Vec<String>,
    /// A folder is compacted once it has this many small files.
    pub min_files: usize,
    /// Merged files stop growing at about this size; files at least this big are left.
    pub target_file_mb: u64,
}

impl Default for CompactOptions {
    fn default() -> Self {
        CompactOptions {
            layers: vec![],
            min_files: 4,
            target_file_mb: 128,
        }
    }
}

#[derive(Debug, Clone, Default)]
pub struct CompactReport {
    pub number: u64,
    pub layers: Vec<String>,
    /// Partition folders merged.
    pub folders: usize,
    pub files_before: usize,
    pub files_after: usize,
    pub rows: u64,
    pub elapsed: Duration,
}

/// Compacts `loaded`'s lake (see the module docs).
pub fn compact(
    loaded: &LoadedPipeline,
    options: &CompactOptions,
) -> Result<CompactReport, CompactError> {
    let started = Instant::now();
    let config = &loaded.config;
    let pipeline = config.name.as_str();
    let layers: Vec<String> = if options.layers.is_empty() {
        let mut layers: BTreeSet<String> = config
            .stages
            .iter()
            .map(|s| s.layer.clone().unwrap_or_else(|| s.name.clone()))
            .collect();
        layers.insert(dead_letter::LAYER.to_string());
        layers.into_iter().collect()
    } else {
        options.layers.clone()
    };
    if let Some(bronze) = layers.iter().find(|l| *l == "bronze") {
        return Err(CompactError::Bronze(bronze.clone()));
    }
    let io = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(CompactError::Runtime)?;
    let lake = LakeWriter::configured(&config.lake)?.retrying(pipeline, None);
    let storage = lake.storage().clone();
    let reader = lake.reader();
    io.block_on(super::finish_pending(&storage, pipeline))?;
    let protected: BTreeSet<String> = io
        .block_on(reader.latest_records(pipeline))?
        .into_iter()
        .flat_map(|r| r.files.into_iter().map(|f| f.path))
        .collect();
    let number = io.block_on(super::next_number(&storage, pipeline))?;
    let mut rewrite = Rewrite::new(pipeline, "compact", number);
    let target = options.target_file_mb.max(1) << 20;
    let mut report = CompactReport {
        number,
        layers: layers.clone(),
        ..Default::default()
    };

    rewrite.delta_layers = config.lake.delta_layers();
    for layer in &layers {
        let delta = rewrite.delta_layers.contains(layer);
        let mut folders: BTreeMap<String, Vec<(String, u64)>> = BTreeMap::new();
        for (path, size) in io.block_on(delta::layer_files(&storage, layer, delta))? {
            let Some((folder, name)) = path.rsplit_once('/') else {
                continue;
            };
            let replay_log = layer == dead_letter::LAYER && folder.ends_with("/stage=decode");
            if name.ends_with(".parquet")
                && !name.starts_with('.')
                && size < target
                && !replay_log
                && !protected.contains(&path)
            {
                folders
                    .entry(folder.to_string())
                    .or_default()
                    .push((path, size));
            }
        }
        for (folder, mut files) in folders {
            if files.len() < options.min_files.max(2) {
                continue;
            }
            files.sort();
            let mut merged = Merged::new(&lake, target);
            for (path, _) in &files {
                let batches = io.block_on(reader.read_parquet(path))?;
                merged.add(path, batches)?;
            }
            let outputs = merged.finish()?;
            if outputs.iter().all(|o| o.inputs.len() < 2) {
                continue;
            }
            report.folders += 1;
            for (k, output) in outputs.into_iter().enumerate() {
                if output.inputs.len() < 2 {
                    continue;
                }
                let scratch = format!("{}/{}/{k:05}.parquet", rewrite.scratch(), report.folders);
                io.block_on(storage.put(&scratch, output.bytes))?;
                let name = format!("{folder}/part-compact-{number}-{k:05}.parquet");
                rewrite.moves.push((scratch, name));
                report.files_before += output.inputs.len();
                report.files_after += 1;
                report.rows += output.rows;
                rewrite.remove.extend(output.inputs);
            }
        }
    }
    if !rewrite.moves.is_empty() {
        io.block_on(rewrite.commit(&storage))?;
    }
    report.elapsed = started.elapsed();
    tracing::info!(
        pipeline,
        number,
        folders = report.folders,
        before = report.files_before,
        after = report.files_after,
        "compacted"
    );
    Ok(report)
}

/// One merged file: its bytes and the files it replaces.
struct Output {
    bytes: Vec<u8>,
    inputs: Vec<String>,
    rows: u64,
}

/// The merged file being written.
struct Open {
    schema: SchemaRef,
    writer: ArrowWriter<Vec<u8>>,
    inputs: Vec<String>,
    rows: u64,
}

/// Merges one folder's files, in order, into outputs of one schema each and about `target`
/// bytes.
struct Merged<'a> {
    lake: &'a LakeWriter,
    target: u64,
    open: Option<Open>,
    done: Vec<Output>,
}

impl<'a> Merged<'a> {
    fn new(lake: &'a LakeWriter, target: u64) -> Self {
        Merged {
            lake,
            target,
            open: None,
            done: vec![],
        }
    }

    fn add(&mut self, path: &str, batches: Vec<RecordBatch>) -> Result<(), CompactError> {
        let Some(schema) = batches.first().map(RecordBatch::schema) else {
            return Ok(());
        };
        let fits = self.open.as_ref().is_some_and(|open| {
            open.schema == schema
                && (open.writer.bytes_written() + open.writer.memory_size()) < self.target as usize
        });
        if !fits {
            self.close()?;
            self.open = Some(Open {
                writer: self.lake.parquet_writer(&batches[0])?,
                schema,
                inputs: vec![],
                rows: 0,
            });
        }
        let open = self.open.as_mut().expect("opened above");
        for batch in &batches {
            open.writer.write(batch)?;
            open.rows += batch.num_rows() as u64;
        }
        open.inputs.push(path.to_string());
        Ok(())
    }

    fn close(&mut self) -> Result<(), CompactError> {
        if let Some(open) = self.open.take() {
            self.done.push(Output {
                bytes: open.writer.into_inner()?,
                inputs: open.inputs,
                rows: open.rows,
            });
        }
        Ok(())
    }

    fn finish(mut self) -> Result<Vec<Output>, CompactError> {
        self.close()?;
        Ok(self.done)
    }
}
