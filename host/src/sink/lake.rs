//! The medallion lake: `<root>/<layer>/<table>/<key>=<value>/…/part-<instance>-<first>-<last>.parquet`.
//!
//! Files are written in two phases. During an epoch, batches accumulate in Parquet writers in
//! memory, one per partition directory. At commit: (1) every file is closed and uploaded under
//! `_tmp/<pipeline>/<instance>/`; (2) a commit record listing each file's temporary and final
//! name and, per lane, the source position and plugin state is written atomically to
//! `_commits/<pipeline>/<instance>/`; (3) files are renamed into place. A reader never sees a
//! partial file. On start, `recover` finishes the renames of the instance's last commit record
//! and deletes its uncommitted leftovers, then the source resumes from the recorded positions:
//! no record is lost or written twice. A local lake flushes each phase to disk before the next
//! (`Storage::sync`), so that holds after a crash of the machine too.
//!
//! Several host processes (instances) may share a pipeline and a lake, as members of one Kafka
//! consumer group: each keeps its own commit log, and a lane (a Kafka partition number) that
//! moves between them is resumed from whichever log holds its furthest checkpoint.
use super::encode::{EncodingFile, ParquetEncoders};
use crate::config::ColumnStatistics;
use arrow::array::{Array, AsArray, RecordBatch};
use arrow::array::{Int64Array, UInt32Array};
use arrow::compute::take_record_batch;
use arrow::datatypes::{DataType, Int64Type, SchemaRef, TimeUnit, TimestampMillisecondType};
use futures::{StreamExt, TryStreamExt};
use object_store::local::LocalFileSystem;
use object_store::path::Path as StorePath;
use object_store::prefix::PrefixStore;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

pub const NULL_PARTITION: &str = "__HIVE_DEFAULT_PARTITION__";

#[derive(Debug, thiserror::Error)]
pub enum LakeError {
    #[error(
        "`{0}` is not a supported lake URI (use file:///absolute/path, file://./relative/path or hdfs://HOST:PORT/path)"
    )]
    Uri(String),
    #[error("lake storage: {0}")]
    Store(#[from] object_store::Error),
    #[error("HDFS: {0}")]
    Hdfs(String),
    #[error("parquet: {0}")]
    Parquet(#[from] parquet::errors::ParquetError),
    #[error("arrow: {0}")]
    Arrow(#[from] arrow::error::ArrowError),
    #[error("table {table}: batch schema differs from the schema of the open file: {detail}")]
    SchemaChanged { table: String, detail: String },
    #[error("commit record {path}: {message}")]
    CommitRecord { path: String, message: String },
    #[error("Delta table {table}: {message}")]
    Delta { table: String, message: String },
    /// What no retry fixes: rows whose columns the table does not have, say.
    #[error("Delta table {table}: {message}")]
    DeltaRefused { table: String, message: String },
    #[error("cannot create lake folder {path}: {source}")]
    CreateDir {
        path: String,
        source: std::io::Error,
    },
    #[error("cannot flush {path} to disk: {source}")]
    Sync {
        path: String,
        source: std::io::Error,
    },
}

/// Where the lake lives.
#[derive(Debug, Clone, PartialEq)]
pub enum LakeUri {
    Local(PathBuf),
    /// `hdfs://HOST:PORT/path`: the NameNode and the lake's root folder in HDFS.
    Hdfs {
        namenode: String,
        root: String,
    },
}

impl LakeUri {
    pub fn parse(uri: &str) -> Result<Self, LakeError> {
        let invalid = || LakeError::Uri(uri.to_string());
        if let Some(rest) = uri.strip_prefix("hdfs://") {
            let (authority, root) = rest.split_once('/').ok_or_else(invalid)?;
            let root = root.trim_end_matches('/');
            if authority.is_empty() || root.is_empty() {
                return Err(invalid());
            }
            return Ok(LakeUri::Hdfs {
                namenode: format!("hdfs://{authority}"),
                root: root.to_string(),
            });
        }
        let Some(path) = uri.strip_prefix("file://") else {
            return Err(invalid());
        };
        if path.is_empty() {
            return Err(invalid());
        }
        Ok(LakeUri::Local(PathBuf::from(path)))
    }

    /// The lake rooted at `folder` inside this one.
    pub fn child(&self, folder: &str) -> LakeUri {
        match self {
            LakeUri::Local(path) => LakeUri::Local(path.join(folder)),
            LakeUri::Hdfs { namenode, root } => LakeUri::Hdfs {
                namenode: namenode.clone(),
                root: format!("{root}/{folder}"),
            },
        }
    }

    pub fn open(&self) -> Result<Storage, LakeError> {
        match self {
            LakeUri::Local(path) => {
                std::fs::create_dir_all(path).map_err(|source| LakeError::CreateDir {
                    path: path.display().to_string(),
                    source,
                })?;
                let root = std::fs::canonicalize(path).map_err(|source| LakeError::CreateDir {
                    path: path.display().to_string(),
                    source,
                })?;
                let mut storage = Storage::new(
                    Arc::new(LocalFileSystem::new_with_prefix(&root)?),
                    format!("file://{}", root.display()),
                    false,
                );
                storage.local_root = Some(root);
                Ok(storage)
            }
            LakeUri::Hdfs { namenode, root } => {
                // The client's connections and DataNode streams run on a runtime of their own,
                // so they progress whichever thread awaits them.
                let io = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(1)
                    .thread_name("sluice-hdfs")
                    .enable_all()
                    .build()
                    .map_err(|e| LakeError::Hdfs(format!("cannot start its I/O runtime: {e}")))?;
                let client = hdfs_native::ClientBuilder::new()
                    .with_url(namenode)
                    .with_io_runtime(io)
                    .build()
                    .map_err(|e| LakeError::Hdfs(format!("{namenode}: {e}")))?;
                let store = hdfs_native_object_store::HdfsObjectStore::new(client);
                Ok(Storage::new(
                    Arc::new(PrefixStore::new(store, root.as_str())),
                    format!("{namenode}/{root}"),
                    true,
                ))
            }
        }
    }
}

impl std::fmt::Display for LakeUri {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LakeUri::Local(path) => write!(f, "file://{}", path.display()),
            LakeUri::Hdfs { namenode, root } => write!(f, "{namenode}/{root}"),
        }
    }
}

/// The lake's object store. Remote stores (HDFS) fail for reasons waiting fixes — a NameNode
/// restarting, in safe mode, unreachable — so there every operation that fails that way is
/// retried with exponential back-off (logged and counted as `sluice_sink_retries_total`),
/// until it succeeds or the pipeline is stopping. The caller waits meanwhile, which is the
/// back pressure: nothing is committed, so no source position advances.
#[derive(Clone)]
pub struct Storage {
    store: Arc<dyn ObjectStore>,
    /// Where the store points, for log lines.
    location: String,
    remote: bool,
    /// The folder of a local lake: object stores have no folders, but a local one leaves
    /// empty directories behind when files are moved out.
    local_root: Option<PathBuf>,
    pipeline: String,
    stop: Option<Arc<AtomicBool>>,
}

impl Storage {
    fn new(store: Arc<dyn ObjectStore>, location: String, remote: bool) -> Self {
        Storage {
            store,
            location,
            remote,
            local_root: None,
            pipeline: String::new(),
            stop: None,
        }
    }

    /// Size, rows and schema of a Parquet file (what a Delta `add` action and a table's
    /// schema need). The whole file is fetched: object_store's ranged reads are not worth it
    /// for files of at most `max_buffer_mb`.
    pub async fn parquet_facts(&self, path: &str) -> Result<ParquetFacts, LakeError> {
        let bytes = self.get(path).await?;
        let size = bytes.len() as u64;
        let builder =
            parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(bytes)?;
        Ok(ParquetFacts {
            size,
            rows: builder.metadata().file_metadata().num_rows() as u64,
            schema: builder.schema().clone(),
        })
    }

    /// The folder of a local lake (`None` for HDFS).
    pub fn local_root(&self) -> Option<&std::path::Path> {
        self.local_root.as_deref()
    }

    /// The object store itself, without retries (for readers that bring their own, such as
    /// DataFusion).
    pub fn object_store(&self) -> Arc<dyn ObjectStore> {
        self.store.clone()
    }

    fn stopping(&self) -> bool {
        self.stop
            .as_ref()
            .is_some_and(|s| s.load(Ordering::Relaxed))
    }

    async fn retry<T, F, Fut>(&self, what: &str, path: &str, op: F) -> Result<T, LakeError>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, object_store::Error>>,
    {
        // Local errors (a full disk, a permission) and answers about the object itself do not
        // go away by waiting.
        let transient = |error: &object_store::Error| {
            matches!(
                error,
                object_store::Error::Generic { .. } | object_store::Error::JoinError { .. }
            )
        };
        self.retry_when(what, path, transient, op)
            .await
            .map_err(LakeError::from)
    }

    /// `op` until it succeeds, or fails in a way `transient` says waiting cannot fix, or the
    /// pipeline is stopping; on a local lake, once.
    pub async fn retry_when<T, E, F, Fut>(
        &self,
        what: &str,
        path: &str,
        transient: impl Fn(&E) -> bool,
        mut op: F,
    ) -> Result<T, E>
    where
        E: std::fmt::Display,
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, E>>,
    {
        let mut backoff = super::Backoff::new(MAX_BACKOFF);
        let mut attempt = 1u32;
        loop {
            let error = match op().await {
                Ok(value) => {
                    if attempt > 1 {
                        tracing::info!(lake = %self.location, path, attempts = attempt, "lake {what} succeeded after retries");
                    }
                    return Ok(value);
                }
                Err(error) => error,
            };
            let transient = self.remote && transient(&error);
            if !transient || self.stopping() {
                if transient {
                    crate::metrics::SINK_ERRORS
                        .with_label_values(&[self.pipeline.as_str(), "lake", "unavailable"])
                        .inc();
                }
                return Err(error);
            }
            let wait = backoff.next_wait();
            tracing::warn!(lake = %self.location, path, attempt, %error, "lake {what} failed; retrying in {wait:?}");
            crate::metrics::SINK_RETRIES
                .with_label_values(&[self.pipeline.as_str(), "lake"])
                .inc();
            let until = tokio::time::Instant::now() + wait;
            while tokio::time::Instant::now() < until && !self.stopping() {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            attempt += 1;
        }
    }

    pub async fn put(&self, path: &str, bytes: Vec<u8>) -> Result<(), LakeError> {
        let payload = PutPayload::from(bytes);
        let location = StorePath::from(path);
        let mut attempts = 0;
        self.retry("write", path, || {
            attempts += 1;
            self.store.put(&location, payload.clone())
        })
        .await?;
        if attempts > 1 {
            self.remove_put_leftovers(path).await?;
        }
        Ok(())
    }

    /// An HDFS put writes `.<name>.tmp.<n>` beside the target and renames it; an attempt cut
    /// off by an outage leaves that file behind. Readers skip hidden files, but the lake
    /// should hold only what commits put there.
    async fn remove_put_leftovers(&self, path: &str) -> Result<(), LakeError> {
        let (folder, name) = path.rsplit_once('/').unwrap_or(("", path));
        let prefix = format!(".{name}.tmp.");
        for sibling in self.list(folder).await? {
            let file = sibling.rsplit('/').next().unwrap_or(&sibling);
            if file.starts_with(&prefix) {
                tracing::info!(lake = %self.location, path = %sibling, "removing what an interrupted write left");
                self.delete_if_present(&sibling).await?;
            }
        }
        Ok(())
    }

    /// Makes the files (or folders) at `paths` and the folders that hold them, up to the
    /// lake's root, survive a crash of the machine, not only of the process: a local folder's
    /// writes and renames sit in the page cache until the kernel flushes them, which may be
    /// after the source positions they carry were committed. HDFS needs nothing here: a closed
    /// file is already on its DataNodes.
    pub async fn sync<'a>(
        &self,
        paths: impl IntoIterator<Item = &'a str>,
    ) -> Result<(), LakeError> {
        let Some(root) = &self.local_root else {
            return Ok(());
        };
        let mut targets = std::collections::BTreeSet::new();
        for path in paths {
            let file = root.join(path);
            targets.extend(
                file.ancestors()
                    .skip(1)
                    .take_while(|folder| folder.starts_with(root))
                    .map(PathBuf::from),
            );
            targets.insert(file);
        }
        futures::stream::iter(targets)
            .map(|target| async move {
                let fail = |source| LakeError::Sync {
                    path: target.display().to_string(),
                    source,
                };
                let synced = {
                    let target = target.clone();
                    tokio::task::spawn_blocking(move || std::fs::File::open(target)?.sync_all())
                };
                match synced.await {
                    Ok(Ok(())) => Ok(()),
                    Ok(Err(e)) => Err(fail(e)),
                    Err(e) => Err(fail(std::io::Error::other(e))),
                }
            })
            .buffer_unordered(PARALLEL_FILES)
            .try_collect::<Vec<()>>()
            .await?;
        Ok(())
    }

    /// Makes the deletion of the files at `paths` survive a crash of the machine: flushes the
    /// folders that held them or, where a folder is gone as well, the nearest one left.
    pub async fn sync_removals<'a>(
        &self,
        paths: impl IntoIterator<Item = &'a str>,
    ) -> Result<(), LakeError> {
        let Some(root) = &self.local_root else {
            return Ok(());
        };
        let folders: BTreeSet<&str> = paths
            .into_iter()
            .filter_map(|path| {
                std::path::Path::new(path)
                    .ancestors()
                    .skip(1)
                    .find(|folder| root.join(folder).is_dir())
                    .and_then(|folder| folder.to_str())
            })
            .collect();
        self.sync(folders).await
    }

    pub async fn get(&self, path: &str) -> Result<bytes::Bytes, LakeError> {
        let location = StorePath::from(path);
        self.retry("read", path, || async {
            self.store.get(&location).await?.bytes().await
        })
        .await
    }

    pub async fn rename(&self, from: &str, to: &str) -> Result<(), LakeError> {
        let (from_path, to_path) = (StorePath::from(from), StorePath::from(to));
        self.retry("rename", from, || self.store.rename(&from_path, &to_path))
            .await
    }

    pub async fn exists(&self, path: &str) -> Result<bool, LakeError> {
        let location = StorePath::from(path);
        match self
            .retry("stat", path, || self.store.head(&location))
            .await
        {
            Ok(_) => Ok(true),
            Err(LakeError::Store(object_store::Error::NotFound { .. })) => Ok(false),
            Err(e) => Err(e),
        }
    }

    pub async fn delete(&self, path: &str) -> Result<(), LakeError> {
        let location = StorePath::from(path);
        self.retry("delete", path, || self.store.delete(&location))
            .await
    }

    /// [`Self::delete`], where a file already gone is no error: a deletion retried, replayed
    /// after a crash, or raced by another cleaner.
    pub async fn delete_if_present(&self, path: &str) -> Result<(), LakeError> {
        match self.delete(path).await {
            Ok(()) | Err(LakeError::Store(object_store::Error::NotFound { .. })) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Every object under `prefix`, recursively.
    pub async fn list(&self, prefix: &str) -> Result<Vec<String>, LakeError> {
        let location = StorePath::from(prefix);
        self.retry("list", prefix, || async {
            let listed: Vec<_> = self.store.list(Some(&location)).collect().await;
            listed
                .into_iter()
                .map(|meta| Ok(meta?.location.to_string()))
                .collect()
        })
        .await
    }

    /// Every object under `prefix`, recursively, with its size in bytes.
    pub async fn list_sizes(&self, prefix: &str) -> Result<Vec<(String, u64)>, LakeError> {
        let location = StorePath::from(prefix);
        self.retry("list", prefix, || async {
            let listed: Vec<_> = self.store.list(Some(&location)).collect().await;
            listed
                .into_iter()
                .map(|meta| meta.map(|m| (m.location.to_string(), m.size)))
                .collect()
        })
        .await
    }

    /// Deletes every object under `prefix` and, in a local lake, the folders left empty.
    pub async fn clear(&self, prefix: &str) -> Result<(), LakeError> {
        for path in self.list(prefix).await? {
            self.delete_if_present(&path).await?;
        }
        self.prune_empty_folders(prefix);
        Ok(())
    }

    /// In a local lake, removes the folders under `prefix` (and it) that hold no file.
    pub fn prune_empty_folders(&self, prefix: &str) {
        fn prune(dir: &std::path::Path) -> bool {
            let Ok(entries) = std::fs::read_dir(dir) else {
                return false;
            };
            let mut empty = true;
            for entry in entries.flatten() {
                let path = entry.path();
                empty &= path.is_dir() && prune(&path);
            }
            empty && std::fs::remove_dir(dir).is_ok()
        }
        if let Some(root) = &self.local_root {
            prune(&root.join(prefix));
        }
    }

    /// The folders directly under `prefix`.
    pub async fn folders(&self, prefix: &str) -> Result<Vec<String>, LakeError> {
        let location = StorePath::from(prefix);
        self.retry("list", prefix, || async {
            let listing = self.store.list_with_delimiter(Some(&location)).await?;
            Ok(listing
                .common_prefixes
                .into_iter()
                .map(|p| p.to_string())
                .collect())
        })
        .await
    }
}

/// Files uploaded or renamed at once during a commit. On HDFS a file costs several round trips,
/// and closing one often waits 500 ms for the DataNode's block report (hdfs-native's
/// `complete` retry): measured with bench/hdfs.sh, 8 → 32 took HDFS from 0.22x to 0.37x of a
/// local folder's throughput, 64 gained little more.
const PARALLEL_FILES: usize = 32;

/// Retries of a remote store back off up to this.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// One file of a commit: where it was staged and where it lives once committed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CommittedFile {
    pub staged: String,
    pub path: String,
    pub layer: String,
    pub rows: u64,
}

/// What `_commits/<pipeline>/<instance>/<epoch>.json` holds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CommitRecord {
    pub pipeline: String,
    pub instance: String,
    pub epoch: u64,
    /// Source records this instance consumed up to and including this commit.
    pub records: u64,
    pub files: Vec<CommittedFile>,
    /// Running totals of this instance since it first started (rows per layer, rejects per
    /// reason).
    pub totals: BTreeMap<String, u64>,
    /// Every lane this instance has checkpointed, by lane number (a Kafka partition number; 0
    /// for sources without partitions). Lanes it gave away keep their last checkpoint here:
    /// `Lake::lane_checkpoints` picks the furthest one over all instances.
    #[serde(default)]
    pub lanes: BTreeMap<u32, LaneCheckpoint>,
    /// The plugin each stage ran for this epoch's rows, by stage name.
    #[serde(default)]
    pub plugins: BTreeMap<String, crate::stage::PluginVersion>,
    /// Set on the commit after a finite source ended and every window was closed: a replay
    /// of this input (`sluice backfill`) closes them too.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub input_ended: bool,
}

/// Where a lane resumes: its source position, its stages' state and event times.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LaneCheckpoint {
    /// Source records of this lane consumed by every instance that owned it: the larger, the
    /// later the checkpoint.
    pub records: u64,
    /// Where the lane's source resumes (source-specific).
    pub position: serde_json::Value,
    /// Where each stateful stage's snapshot lives (`_state/…`), by stage name. The snapshot
    /// files are staged and renamed with the data files, so state and output always match.
    #[serde(default)]
    pub state: BTreeMap<String, String>,
    /// Per stage, the latest event time that had reached it: its watermark resumes from here.
    #[serde(default)]
    pub event_times: BTreeMap<String, i64>,
}

struct OpenFile {
    layer: String,
    schema: SchemaRef,
    encoding: EncodingFile,
    rows: u64,
}

/// How a layer's rows are split into directories.
#[derive(Debug, Clone, Default)]
pub struct Partitioning {
    /// `date` / `hour` derive from `event_time`; any other key is a column.
    pub keys: Vec<String>,
    pub event_time: String,
}

/// Reads what commits left behind: checkpoints and state.
#[derive(Clone)]
pub struct LakeReader {
    store: Storage,
}

pub struct LakeWriter {
    store: Storage,
    properties: WriterProperties,
    open: BTreeMap<String, OpenFile>,
    encoders: ParquetEncoders,
    /// Layers whose statistics are not the default (`ColumnStatistics::of_layer`).
    statistics: BTreeMap<String, ColumnStatistics>,
    /// Layers stored as Delta Lake tables.
    delta_layers: std::collections::BTreeSet<String>,
}

impl LakeWriter {
    pub fn new(uri: &LakeUri, zstd_level: i32) -> Result<Self, LakeError> {
        let store = uri.open()?;
        let properties = WriterProperties::builder()
            .set_compression(Compression::ZSTD(ZstdLevel::try_new(zstd_level)?))
            .build();
        Ok(LakeWriter {
            store,
            properties,
            open: BTreeMap::new(),
            encoders: ParquetEncoders::new(),
            statistics: BTreeMap::new(),
            delta_layers: Default::default(),
        })
    }

    /// The lake a pipeline's `lake:` block describes.
    pub fn configured(config: &crate::config::LakeConfig) -> Result<Self, LakeError> {
        Ok(Self::new(&LakeUri::parse(&config.uri)?, config.zstd_level)?
            .with_delta_layers(config.delta_layers())
            .with_statistics(config.statistics.clone()))
    }

    /// Names the pipeline in metrics, and gives up retrying a remote store once `stop` is
    /// set (the epoch in flight is then not committed; the source resumes before it).
    pub fn retrying(mut self, pipeline: &str, stop: Option<Arc<AtomicBool>>) -> Self {
        self.store.pipeline = pipeline.to_string();
        self.store.stop = stop;
        self
    }

    pub fn reader(&self) -> LakeReader {
        LakeReader {
            store: self.store.clone(),
        }
    }

    pub fn storage(&self) -> &Storage {
        &self.store
    }

    /// A Parquet encoder with the lake's settings for rows like `first`, writing to memory.
    pub fn parquet_writer(&self, first: &RecordBatch) -> Result<ArrowWriter<Vec<u8>>, LakeError> {
        let properties = properties_for(&self.properties, first, ColumnStatistics::All);
        parquet_writer(&properties, first.schema())
    }

    /// Memory held by open files: encoders in progress plus encoded row groups.
    pub fn buffered_bytes(&self) -> usize {
        self.open
            .values()
            .map(|f| f.encoding.buffered_bytes())
            .sum()
    }

    /// Adds a batch to `<layer>/<table>/`, split by `partitioning`.
    pub fn write(
        &mut self,
        layer: &str,
        table: &str,
        batch: &RecordBatch,
        partitioning: &Partitioning,
    ) -> Result<(), LakeError> {
        if batch.num_rows() == 0 {
            return Ok(());
        }
        for (dir, rows) in partition(batch, partitioning)? {
            let parts = match rows {
                Rows::Runs(runs) => runs
                    .into_iter()
                    .map(|run| batch.slice(run.start, run.len()))
                    .collect(),
                Rows::Scattered(indices) => {
                    vec![take_record_batch(batch, &UInt32Array::from(indices))?]
                }
            };
            let mut key = format!("{layer}/{table}");
            if !dir.is_empty() {
                key.push('/');
                key.push_str(&dir);
            }
            let file = match self.open.entry(key.clone()) {
                std::collections::btree_map::Entry::Occupied(entry) => entry.into_mut(),
                std::collections::btree_map::Entry::Vacant(entry) => {
                    // Encodings are chosen from the largest part: a run may be one stray row.
                    let sample = parts
                        .iter()
                        .max_by_key(|part| part.num_rows())
                        .expect("a directory has rows");
                    let statistics = ColumnStatistics::of_layer(&self.statistics, layer);
                    let properties = properties_for(&self.properties, sample, statistics);
                    let writer = parquet_writer(&properties, batch.schema())?;
                    entry.insert(OpenFile {
                        layer: layer.to_string(),
                        schema: batch.schema(),
                        encoding: self.encoders.open(writer)?,
                        rows: 0,
                    })
                }
            };
            if file.schema != batch.schema() {
                return Err(LakeError::SchemaChanged {
                    table: key,
                    detail: format!(
                        "open file has {:?}, batch has {:?}",
                        file.schema.fields(),
                        batch.schema().fields()
                    ),
                });
            }
            for part in parts {
                file.rows += part.num_rows() as u64;
                file.encoding.write(part)?;
            }
        }
        Ok(())
    }

    /// Closes every open file and commits them with the record (see the module docs).
    /// `first`..=`last` is the range of this instance's source records the files hold;
    /// `snapshots` are stage states by (lane, stage).
    pub async fn commit(
        &mut self,
        mut record: CommitRecord,
        snapshots: BTreeMap<(u32, String), Vec<u8>>,
        first: u64,
        last: u64,
    ) -> Result<CommitRecord, LakeError> {
        let staging = format!(
            "_tmp/{}/{}/{:010}",
            record.pipeline, record.instance, record.epoch
        );
        let mut files = Vec::new();
        let mut uploads = Vec::new();
        // Files of Delta layers go where they live: their table's log makes them visible.
        let mut delta_files = Vec::new();
        // Every file is asked for first, so that the encoders finish them in parallel.
        let closing: Vec<_> = std::mem::take(&mut self.open)
            .into_iter()
            .map(|(dir, file)| {
                (
                    dir,
                    file.layer,
                    file.schema,
                    file.rows,
                    file.encoding.close(),
                )
            })
            .collect();
        for (n, (dir, layer, schema, rows, closing)) in closing.into_iter().enumerate() {
            let path = format!(
                "{dir}/part-{}-{first:012}-{last:012}.parquet",
                record.instance
            );
            let bytes = closing.bytes()?;
            let staged = if self.delta_layers.contains(&layer) {
                delta_files.push((files.len(), bytes.len() as u64, schema));
                path.clone()
            } else {
                format!("{staging}/{n:05}.parquet")
            };
            uploads.push((staged.clone(), bytes));
            files.push(CommittedFile {
                staged,
                path,
                layer,
                rows,
            });
        }
        for ((lane, stage), snapshot) in snapshots {
            let staged = format!("{staging}/state-{lane}-{stage}.bin");
            let path = format!(
                "_state/{}/{}/{:010}/lane-{lane}/{stage}.bin",
                record.pipeline, record.instance, record.epoch
            );
            let rows = snapshot.len() as u64;
            uploads.push((staged.clone(), snapshot));
            record
                .lanes
                .entry(lane)
                .or_default()
                .state
                .insert(stage, path.clone());
            files.push(CommittedFile {
                staged,
                path,
                layer: "_state".into(),
                rows,
            });
        }
        // Remote stores take a few round trips per file: keep several in flight.
        let store = &self.store;
        futures::stream::iter(uploads)
            .map(|(staged, bytes)| async move { store.put(&staged, bytes).await })
            .buffer_unordered(PARALLEL_FILES)
            .try_collect::<Vec<()>>()
            .await?;
        // On disk before the record that names them, and the record before anything reports
        // the source positions durable.
        store
            .sync(files.iter().map(|file| file.staged.as_str()))
            .await?;
        record.files = files;
        let record_path = commit_path(&record.pipeline, &record.instance, record.epoch);
        let json = serde_json::to_vec_pretty(&record).expect("commit records serialise");
        // A put is itself atomic on both stores (temporary file + rename), so a reader of
        // `_commits/` never sees half a record.
        self.store.put(&record_path, json).await?;
        self.store.sync([record_path.as_str()]).await?;
        self.finish(&record).await?;
        let new: Vec<super::delta::NewFile> = delta_files
            .iter()
            .map(|(i, size, schema)| super::delta::NewFile {
                file: &record.files[*i],
                size: *size,
                schema: schema.as_ref(),
            })
            .collect();
        self.commit_to_delta(&record, &new).await?;
        if let Err(error) = self.remove_stale_state(&record).await {
            // The commit stands; the next one tries again.
            tracing::warn!(lake = %self.store.location, %error, "could not remove old state snapshots");
        }
        Ok(record)
    }

    /// Deletes the state snapshots of `record`'s instance that the record does not name.
    /// State is only ever read through the latest record of an instance (recovery,
    /// `lane_checkpoints`, a backfill's next records), and a lane that another instance took
    /// over stays named in every later record of the one that gave it away, so nothing that
    /// can still be read goes. Without this `_state/` grew by a snapshot per stateful stage
    /// and lane at every commit (every 5 s by default).
    async fn remove_stale_state(&self, record: &CommitRecord) -> Result<(), LakeError> {
        let named: BTreeSet<&str> = record
            .lanes
            .values()
            .flat_map(|lane| lane.state.values())
            .map(String::as_str)
            .collect();
        let folder = format!("_state/{}/{}", record.pipeline, record.instance);
        let listed = match self.store.list(&folder).await {
            Ok(listed) => listed,
            // A stateless pipeline's instance has no such folder (HDFS says so).
            Err(LakeError::Store(object_store::Error::NotFound { .. })) => return Ok(()),
            Err(e) => return Err(e),
        };
        let stale: Vec<&String> = listed
            .iter()
            .filter(|path| !named.contains(path.as_str()))
            .collect();
        if stale.is_empty() {
            return Ok(());
        }
        futures::stream::iter(stale)
            .map(|path| self.store.delete_if_present(path))
            .buffer_unordered(PARALLEL_FILES)
            .try_collect::<Vec<()>>()
            .await?;
        self.store.prune_empty_folders(&folder);
        Ok(())
    }

    /// Moves the staged files of a written commit record into place (idempotent).
    async fn finish(&self, record: &CommitRecord) -> Result<(), LakeError> {
        let renamed = || record.files.iter().filter(|f| f.staged != f.path);
        futures::stream::iter(renamed())
            .map(|file| async move {
                match self.store.rename(&file.staged, &file.path).await {
                    Ok(()) => Ok(()),
                    // Already moved by an earlier, interrupted attempt.
                    Err(LakeError::Store(object_store::Error::NotFound { .. }))
                        if self.store.exists(&file.path).await? =>
                    {
                        Ok(())
                    }
                    Err(e) => Err(e),
                }
            })
            .buffer_unordered(PARALLEL_FILES)
            .try_collect::<Vec<()>>()
            .await?;
        // Recovery completes only the last record's renames: an earlier record's must be on
        // disk before the next commit. The files' bytes were flushed before the record; a
        // rename changes only the folders.
        let folders = renamed().map(|file| match file.path.rsplit_once('/') {
            Some((folder, _)) => folder,
            None => "",
        });
        self.store.sync(folders).await
    }

    /// Completes the last commit of this instance of `pipeline` after a crash and removes its
    /// uncommitted staging files; returns that commit, from which the instance resumes.
    pub async fn recover(
        &self,
        pipeline: &str,
        instance: &str,
    ) -> Result<Option<CommitRecord>, LakeError> {
        let record = self
            .reader()
            .latest_record(&format!("_commits/{pipeline}/{instance}"))
            .await?;
        if let Some(record) = &record {
            self.finish(record).await?;
            self.recover_delta(record).await?;
        }
        if !self.delta_layers.is_empty() {
            self.remove_unlogged(instance, record.as_ref().map_or(0, |r| r.records))
                .await?;
        }
        for leftover in self
            .store
            .list(&format!("_tmp/{pipeline}/{instance}"))
            .await?
        {
            self.store.delete(&leftover).await?;
        }
        Ok(record)
    }
}

/// See `Storage::parquet_facts`.
pub struct ParquetFacts {
    pub size: u64,
    pub rows: u64,
    pub schema: SchemaRef,
}

impl LakeWriter {
    /// Stores these layers' tables as Delta Lake tables (`sink::delta`).
    pub fn with_delta_layers(mut self, layers: impl IntoIterator<Item = String>) -> Self {
        self.delta_layers = layers.into_iter().collect();
        self
    }

    pub fn with_statistics(mut self, statistics: BTreeMap<String, ColumnStatistics>) -> Self {
        self.statistics = statistics;
        self
    }

    /// Commits to their Delta tables the files of `record` the tables' logs do not have yet.
    async fn recover_delta(&self, record: &CommitRecord) -> Result<(), LakeError> {
        // Per Delta table of the record: whether its log lacks the epoch. Only those tables'
        // files are read (for their size and schema), so a clean restart reads none.
        let mut missing = BTreeMap::new();
        for file in &record.files {
            if let Some((table, _)) = super::delta::table_of(&file.path)
                && self.delta_layers.contains(&file.layer)
                && !missing.contains_key(table)
            {
                let logged = super::delta::has_epoch(&self.store, record, table).await?;
                missing.insert(table, !logged);
            }
        }
        let mut files = Vec::new();
        for file in &record.files {
            let table = super::delta::table_of(&file.path).map(|(table, _)| table);
            if table.is_some_and(|table| missing.get(table) == Some(&true)) {
                files.push((file, self.store.parquet_facts(&file.path).await?));
            }
        }
        let new: Vec<super::delta::NewFile> = files
            .iter()
            .map(|(file, facts)| super::delta::NewFile {
                file,
                size: facts.size,
                schema: facts.schema.as_ref(),
            })
            .collect();
        self.commit_to_delta(record, &new).await
    }

    /// A Delta commit is idempotent (the table's `txn` says whether it is there), so on a
    /// remote store one that failed is tried again, as every other lake operation is.
    async fn commit_to_delta(
        &self,
        record: &CommitRecord,
        files: &[super::delta::NewFile<'_>],
    ) -> Result<(), LakeError> {
        if files.is_empty() {
            return Ok(());
        }
        let transient = |error: &LakeError| matches!(error, LakeError::Delta { .. });
        self.store
            .retry_when("Delta commit", &record.pipeline, transient, || {
                super::delta::commit_epoch(&self.store, record, files)
            })
            .await
    }

    /// Deletes the files an epoch of `instance` wrote into Delta layers before a crash kept it
    /// from its commit record: no log lists them, and their names begin at the instance's next
    /// record range, `records` (the count its last commit reached).
    async fn remove_unlogged(&self, instance: &str, records: u64) -> Result<(), LakeError> {
        let prefix = format!("part-{instance}-");
        for layer in &self.delta_layers {
            for path in self.store.list(layer).await? {
                let name = path.rsplit('/').next().unwrap_or_default();
                let first = name
                    .strip_prefix(&prefix)
                    .and_then(|rest| rest.split('-').next())
                    .and_then(|n| n.parse::<u64>().ok());
                if first.is_some_and(|first| first >= records) && name.ends_with(".parquet") {
                    tracing::info!(path, "removing a Delta file no commit logged");
                    self.store.delete(&path).await?;
                }
            }
        }
        Ok(())
    }
}

impl LakeReader {
    /// The rows of one committed Parquet file (a lake-relative path, as commit records
    /// list them).
    pub async fn read_parquet(&self, path: &str) -> Result<Vec<RecordBatch>, LakeError> {
        let bytes = self.store.get(path).await?;
        let builder =
            parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(bytes)?;
        // Only the builder's schema keeps the file's schema metadata (a plugin's `sluice.key`,
        // say); the reader and its batches drop it.
        let schema = builder.schema().clone();
        builder
            .build()?
            .map(|batch| Ok(batch?.with_schema(schema.clone())?))
            .collect()
    }

    /// The stage snapshots a lane checkpoint points to.
    pub async fn read_state(
        &self,
        lane: &LaneCheckpoint,
    ) -> Result<BTreeMap<String, Vec<u8>>, LakeError> {
        let mut state = BTreeMap::new();
        for (stage, path) in &lane.state {
            let bytes = self.store.get(path).await?;
            state.insert(stage.clone(), bytes.to_vec());
        }
        Ok(state)
    }

    /// The furthest checkpoint of every lane of `pipeline`, over the commit logs of all its
    /// instances: where a lane resumes when this instance takes it over.
    pub async fn lane_checkpoints(
        &self,
        pipeline: &str,
    ) -> Result<BTreeMap<u32, LaneCheckpoint>, LakeError> {
        let mut lanes: BTreeMap<u32, LaneCheckpoint> = BTreeMap::new();
        for record in self.latest_records(pipeline).await? {
            for (lane, checkpoint) in record.lanes {
                if lanes
                    .get(&lane)
                    .is_none_or(|known| checkpoint.records > known.records)
                {
                    lanes.insert(lane, checkpoint);
                }
            }
        }
        Ok(lanes)
    }

    /// Every commit record of every instance of `pipeline`, by instance and epoch.
    pub async fn records(&self, pipeline: &str) -> Result<Vec<CommitRecord>, LakeError> {
        let mut paths: Vec<String> = self
            .store
            .list(&format!("_commits/{pipeline}"))
            .await?
            .into_iter()
            .filter(|path| path.ends_with(".json"))
            .collect();
        paths.sort();
        // A stream writes a record every few seconds, so a long one has tens of thousands,
        // and on HDFS each read is round trips to the NameNode and a DataNode: read several
        // at once, as the lake writes files.
        futures::stream::iter(&paths)
            .map(|path| self.record(path))
            .buffered(PARALLEL_FILES)
            .try_collect()
            .await
    }

    /// The newest commit record of each instance of `pipeline`.
    pub async fn latest_records(&self, pipeline: &str) -> Result<Vec<CommitRecord>, LakeError> {
        let mut records = Vec::new();
        for instance in self.store.folders(&format!("_commits/{pipeline}")).await? {
            records.extend(self.latest_record(&instance).await?);
        }
        Ok(records)
    }

    async fn record(&self, path: &str) -> Result<CommitRecord, LakeError> {
        let bytes = self.store.get(path).await?;
        serde_json::from_slice(&bytes).map_err(|e| LakeError::CommitRecord {
            path: path.to_string(),
            message: e.to_string(),
        })
    }

    /// The newest commit record under `prefix` (records are named by zero-padded epoch).
    async fn latest_record(&self, prefix: &str) -> Result<Option<CommitRecord>, LakeError> {
        let latest = self
            .store
            .list(prefix)
            .await?
            .into_iter()
            .filter(|path| path.ends_with(".json"))
            .max();
        let Some(path) = latest else {
            return Ok(None);
        };
        Ok(Some(self.record(&path).await?))
    }
}

/// The lake's settings with the encodings `first` (a file's first rows) calls for, and the
/// layer's `statistics`. Integer and timestamp columns that come mostly ascending and mostly
/// distinct (offsets, event times) are delta-encoded instead of dictionary-encoded — on the
/// benchmark job that is 26 % less lake and 6.5 % fewer instructions, as a dictionary of unique
/// values only costs.
fn properties_for(
    base: &WriterProperties,
    first: &RecordBatch,
    statistics: ColumnStatistics,
) -> WriterProperties {
    let mut builder: Option<parquet::file::properties::WriterPropertiesBuilder> = None;
    for field in first.schema().fields() {
        let without = match statistics {
            ColumnStatistics::All => false,
            ColumnStatistics::Numbers => {
                !(field.data_type().is_numeric()
                    || field.data_type().is_temporal()
                    || *field.data_type() == DataType::Boolean)
            }
            ColumnStatistics::None => true,
        };
        if without {
            builder = Some(
                builder
                    .unwrap_or_else(|| base.clone().into_builder())
                    .set_column_statistics_enabled(
                        parquet::schema::types::ColumnPath::from(field.name().as_str()),
                        EnabledStatistics::None,
                    ),
            );
        }
    }
    for (field, column) in first.schema().fields().iter().zip(first.columns()) {
        if !matches!(
            column.data_type(),
            DataType::Int64 | DataType::Timestamp(_, _)
        ) || column.len() < 64
            || column.null_count() > 0
        {
            continue;
        }
        let data = column.to_data();
        let values = &data.buffers()[0].typed_data::<i64>()[data.offset()..][..data.len()];
        if mostly_ascending(&values[..values.len().min(1024)]) {
            let path = parquet::schema::types::ColumnPath::from(field.name().as_str());
            builder = Some(
                builder
                    .unwrap_or_else(|| base.clone().into_builder())
                    .set_column_dictionary_enabled(path.clone(), false)
                    .set_column_encoding(path, parquet::basic::Encoding::DELTA_BINARY_PACKED),
            );
        }
    }
    builder.map_or_else(|| base.clone(), |b| b.build())
}

/// At least 90 % of neighbours ascend and at least half of them differ.
fn mostly_ascending(values: &[i64]) -> bool {
    let pairs = values.len() - 1;
    let (mut ascending, mut distinct) = (0, 0);
    for pair in values.windows(2) {
        ascending += (pair[1] >= pair[0]) as usize;
        distinct += (pair[1] != pair[0]) as usize;
    }
    ascending * 10 >= pairs * 9 && distinct * 2 >= pairs
}

fn parquet_writer(
    properties: &WriterProperties,
    schema: SchemaRef,
) -> Result<ArrowWriter<Vec<u8>>, LakeError> {
    Ok(ArrowWriter::try_new(
        Vec::new(),
        schema,
        Some(properties.clone()),
    )?)
}

pub fn commit_path(pipeline: &str, instance: &str, epoch: u64) -> String {
    format!("_commits/{pipeline}/{instance}/{epoch:010}.json")
}

/// Which rows of a batch go to one partition directory.
#[derive(Debug, PartialEq)]
enum Rows {
    /// Runs of consecutive rows: slices of the batch, no copy. Input ordered by time (files,
    /// a Kafka partition) splits this way, at day and hour boundaries and around the odd
    /// record of another day.
    Runs(Vec<std::ops::Range<usize>>),
    /// Rows in no useful order, gathered into a copy.
    Scattered(Vec<u32>),
}

/// A directory whose rows come in more runs than this gets a copy of them instead: each
/// write of a slice costs a call per column.
const MAX_RUNS: usize = 8;

/// A partition directory (`k=v/k=v`) and its rows.
type PartitionRows = (String, Rows);

/// Splits a batch by partition directory. Rows are grouped by integer codes; a directory name
/// is formatted once per group, not once per row.
fn partition(
    batch: &RecordBatch,
    partitioning: &Partitioning,
) -> Result<Vec<PartitionRows>, LakeError> {
    let rows = batch.num_rows();
    if rows == 0 {
        return Ok(Vec::new());
    }
    // `group[row]` identifies the combination of key values seen so far; `paths[group]` holds
    // the directory of each combination.
    let mut group = vec![0u32; rows];
    let mut paths: Vec<String> = vec![String::new()];
    for key in &partitioning.keys {
        let (codes, values) = key_codes(batch, key, &partitioning.event_time)?;
        let mut combined: HashMap<(u32, u32), u32> = HashMap::new();
        let mut next_paths = Vec::new();
        // Neighbouring rows nearly always share their directory: the map is asked only when
        // a row's combination differs from the one before it.
        let mut last: Option<((u32, u32), u32)> = None;
        for (g, code) in group.iter_mut().zip(codes) {
            if let Some((seen, next)) = last
                && seen == (*g, code)
            {
                *g = next;
                continue;
            }
            let seen = (*g, code);
            *g = *combined.entry(seen).or_insert_with(|| {
                let parent = &paths[*g as usize];
                let value = &values[code as usize];
                next_paths.push(if parent.is_empty() {
                    format!("{key}={value}")
                } else {
                    format!("{parent}/{key}={value}")
                });
                (next_paths.len() - 1) as u32
            });
            last = Some((seen, *g));
        }
        paths = next_paths;
    }
    // Each group's runs of consecutive rows.
    let mut runs: Vec<Vec<std::ops::Range<usize>>> = vec![Vec::new(); paths.len()];
    let mut start = 0;
    for row in 1..=rows {
        if row == rows || group[row] != group[start] {
            runs[group[start] as usize].push(start..row);
            start = row;
        }
    }
    let mut parts: Vec<PartitionRows> = paths
        .into_iter()
        .zip(runs)
        .map(|(dir, runs)| {
            let rows = if runs.len() <= MAX_RUNS {
                Rows::Runs(runs)
            } else {
                Rows::Scattered(runs.into_iter().flatten().map(|row| row as u32).collect())
            };
            (dir, rows)
        })
        .collect();
    parts.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(parts)
}

/// One small integer per row for a partition key, and the directory value of each integer.
fn key_codes(
    batch: &RecordBatch,
    key: &str,
    event_time: &str,
) -> Result<(Vec<u32>, Vec<String>), LakeError> {
    let rows = batch.num_rows();
    let mut values: Vec<String> = Vec::new();
    let mut codes = Vec::with_capacity(rows);
    match key {
        "date" | "hour" => {
            let (unit, format) = if key == "date" {
                (86_400_000, "%Y-%m-%d")
            } else {
                (3_600_000, "%H")
            };
            let mut seen: HashMap<Option<i64>, u32> = HashMap::new();
            let mut last: Option<(Option<i64>, u32)> = None;
            let millis = epoch_millis(batch, event_time);
            for row in 0..rows {
                let ms = millis
                    .as_ref()
                    .filter(|ms| ms.is_valid(row))
                    .map(|ms| ms.value(row));
                let period = ms.map(|ms| ms.div_euclid(unit));
                if let Some((previous, code)) = last
                    && previous == period
                {
                    codes.push(code);
                    continue;
                }
                let code = *seen.entry(period).or_insert_with(|| {
                    values.push(
                        ms.and_then(chrono::DateTime::from_timestamp_millis)
                            .map_or_else(
                                || NULL_PARTITION.to_string(),
                                |t| t.format(format).to_string(),
                            ),
                    );
                    (values.len() - 1) as u32
                });
                last = Some((period, code));
                codes.push(code);
            }
        }
        column => match batch.column_by_name(column) {
            None => {
                values.push(NULL_PARTITION.to_string());
                codes.resize(rows, 0);
            }
            Some(array) => {
                let strings = arrow::compute::cast(array, &DataType::Utf8)?;
                let strings = strings.as_string::<i32>();
                let mut seen: HashMap<Option<&str>, u32> = HashMap::new();
                for value in strings.iter() {
                    let code = *seen.entry(value).or_insert_with(|| {
                        values.push(
                            value.map_or_else(|| NULL_PARTITION.to_string(), partition_value),
                        );
                        (values.len() - 1) as u32
                    });
                    codes.push(code);
                }
            }
        },
    }
    Ok((codes, values))
}

/// The epoch-millisecond values of an Int64 or Timestamp(ms) column (a timestamp column is
/// reinterpreted, not converted); `None` when the batch has no such column.
pub fn epoch_millis(batch: &RecordBatch, column: &str) -> Option<Int64Array> {
    let array = batch.column_by_name(column)?;
    match array.data_type() {
        DataType::Int64 => Some(array.as_primitive::<Int64Type>().clone()),
        DataType::Timestamp(TimeUnit::Millisecond, _) => Some(
            array
                .as_primitive::<TimestampMillisecondType>()
                .reinterpret_cast::<Int64Type>(),
        ),
        _ => None,
    }
}

/// Keeps partition values path-safe: the folder name a value gets (`key=<this>`).
pub fn partition_value(value: &str) -> String {
    if value.is_empty() {
        return NULL_PARTITION.to_string();
    }
    value
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-_.".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// A local lake in a new temporary folder, and a runtime to drive its storage: for tests.
#[cfg(test)]
pub(crate) fn temporary_lake() -> (tempfile::TempDir, Storage, tokio::runtime::Runtime) {
    let dir = tempfile::tempdir().expect("a temporary folder");
    let storage = LakeUri::Local(dir.path().to_path_buf())
        .open()
        .expect("a local lake opens");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    (dir, storage, runtime)
}

#[cfg(test)]
// `vec![a..b]`: a list of one run is what these tests mean.
#[allow(clippy::single_range_in_vec_init)]
mod tests {
    use super::*;
    use arrow::array::StringArray;

    const DAY: i64 = 86_400_000;

    fn batch(ts: &[i64]) -> RecordBatch {
        let names: StringArray = ts.iter().map(|t| Some(format!("row at {t}"))).collect();
        RecordBatch::try_from_iter([
            ("ts", Arc::new(Int64Array::from(ts.to_vec())) as _),
            ("name", Arc::new(names) as _),
        ])
        .unwrap()
    }

    fn by(keys: &[&str]) -> Partitioning {
        Partitioning {
            keys: keys.iter().map(|k| k.to_string()).collect(),
            event_time: "ts".into(),
        }
    }

    /// Which columns of the file `key` of `lake` carry min/max statistics.
    fn columns_with_statistics(lake: &mut LakeWriter, key: &str) -> Vec<String> {
        use parquet::file::reader::FileReader;
        let bytes = lake.open.remove(key).unwrap().encoding.close().bytes();
        let reader = parquet::file::serialized_reader::SerializedFileReader::new(
            bytes::Bytes::from(bytes.unwrap()),
        )
        .unwrap();
        let row_group = reader.metadata().row_group(0);
        row_group
            .columns()
            .iter()
            .filter(|c| c.statistics().is_some_and(|s| s.min_bytes_opt().is_some()))
            .map(|c| c.column_path().string())
            .collect()
    }

    #[test]
    fn bronze_keeps_statistics_of_numbers_and_other_layers_of_every_column() {
        let dir = tempfile::tempdir().unwrap();
        let uri = LakeUri::Local(dir.path().to_path_buf());
        let mut lake = LakeWriter::new(&uri, 1)
            .unwrap()
            .with_statistics([("gold".to_string(), ColumnStatistics::None)].into());
        for layer in ["bronze", "silver", "gold"] {
            lake.write(layer, "t", &batch(&[10, 20]), &by(&[])).unwrap();
        }
        assert_eq!(columns_with_statistics(&mut lake, "bronze/t"), ["ts"]);
        assert_eq!(
            columns_with_statistics(&mut lake, "silver/t"),
            ["ts", "name"]
        );
        assert!(columns_with_statistics(&mut lake, "gold/t").is_empty());
    }

    #[test]
    fn rows_in_time_order_split_into_runs_at_day_boundaries() {
        let parts =
            partition(&batch(&[10, 20, DAY + 1, DAY + 2, DAY + 3]), &by(&["date"])).unwrap();
        assert_eq!(
            parts,
            vec![
                ("date=1970-01-01".to_string(), Rows::Runs(vec![0..2])),
                ("date=1970-01-02".to_string(), Rows::Runs(vec![2..5])),
            ]
        );
    }

    #[test]
    fn a_stray_row_of_another_day_splits_a_run_and_many_make_a_copy() {
        let parts = partition(&batch(&[10, 20, 5 * DAY, 30, 40]), &by(&["date"])).unwrap();
        assert_eq!(
            parts,
            vec![
                ("date=1970-01-01".to_string(), Rows::Runs(vec![0..2, 3..5])),
                ("date=1970-01-06".to_string(), Rows::Runs(vec![2..3])),
            ]
        );
        // Days alternating row by row: more runs than slices are worth.
        let ts: Vec<i64> = (0..2 * MAX_RUNS as i64 + 2)
            .map(|n| (n % 2) * DAY + n)
            .collect();
        let parts = partition(&batch(&ts), &by(&["date"])).unwrap();
        let even: Vec<u32> = (0..ts.len() as u32).filter(|n| n % 2 == 0).collect();
        let odd: Vec<u32> = (0..ts.len() as u32).filter(|n| n % 2 == 1).collect();
        assert_eq!(
            parts,
            vec![
                ("date=1970-01-01".to_string(), Rows::Scattered(even)),
                ("date=1970-01-02".to_string(), Rows::Scattered(odd)),
            ]
        );
    }

    #[test]
    fn one_directory_or_no_keys_is_one_run_of_the_whole_batch() {
        let rows = batch(&[1, 2, 3]);
        assert_eq!(
            partition(&rows, &by(&["date", "hour"])).unwrap(),
            vec![(
                "date=1970-01-01/hour=00".to_string(),
                Rows::Runs(vec![0..3])
            )]
        );
        assert_eq!(
            partition(&rows, &by(&[])).unwrap(),
            vec![(String::new(), Rows::Runs(vec![0..3]))]
        );
    }

    #[test]
    fn keys_combine_into_nested_directories() {
        let hour = 3_600_000;
        let ts = [1, hour + 1, DAY + 1, DAY + 2, hour + 2];
        let parts = partition(&batch(&ts), &by(&["date", "hour"])).unwrap();
        assert_eq!(
            parts,
            vec![
                (
                    "date=1970-01-01/hour=00".to_string(),
                    Rows::Runs(vec![0..1])
                ),
                (
                    "date=1970-01-01/hour=01".to_string(),
                    Rows::Runs(vec![1..2, 4..5])
                ),
                (
                    "date=1970-01-02/hour=00".to_string(),
                    Rows::Runs(vec![2..4])
                ),
            ]
        );
    }

    #[test]
    fn sync_flushes_written_files_and_names_one_it_cannot() {
        let (_dir, store, runtime) = temporary_lake();
        runtime.block_on(async {
            store.put("silver/t/date=2026-01-01/a.parquet", b"a".to_vec()).await.unwrap();
            store.put("_commits/p/i/0000000001.json", b"{}".to_vec()).await.unwrap();
            store
                .sync(["silver/t/date=2026-01-01/a.parquet", "_commits/p/i/0000000001.json"])
                .await
                .unwrap();
            let error = store.sync(["silver/t/missing.parquet"]).await.unwrap_err();
            assert!(
                matches!(&error, LakeError::Sync { path, .. } if path.ends_with("silver/t/missing.parquet")),
                "{error}"
            );
        });
    }

    #[test]
    fn removals_are_flushed_through_the_folders_left() {
        let (dir, store, runtime) = temporary_lake();
        runtime.block_on(async {
            store
                .put("silver/t/date=2026-01-01/a.parquet", b"a".to_vec())
                .await
                .unwrap();
            store
                .put("silver/t/date=2026-01-02/b.parquet", b"b".to_vec())
                .await
                .unwrap();
            store
                .delete("silver/t/date=2026-01-01/a.parquet")
                .await
                .unwrap();
            store
                .delete("silver/t/date=2026-01-02/b.parquet")
                .await
                .unwrap();
            std::fs::remove_dir(dir.path().join("silver/t/date=2026-01-02")).unwrap();
            store
                .sync_removals([
                    "silver/t/date=2026-01-01/a.parquet",
                    "silver/t/date=2026-01-02/b.parquet",
                ])
                .await
                .unwrap();
            // What `sync` would refuse: the file, and for the second the folder, are gone.
            assert!(
                store
                    .sync(["silver/t/date=2026-01-01/a.parquet"])
                    .await
                    .is_err()
            );
            assert!(store.sync(["silver/t/date=2026-01-02"]).await.is_err());
        });
    }

    #[test]
    fn a_directory_written_in_slices_holds_every_row_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let uri = LakeUri::Local(dir.path().to_path_buf());
        let mut lake = LakeWriter::new(&uri, 1).unwrap();
        let ts = [10, 20, 5 * DAY, 30, 40];
        lake.write("bronze", "t", &batch(&ts), &by(&["date"]))
            .unwrap();
        let file = &lake.open["bronze/t/date=1970-01-01"];
        assert_eq!(file.rows, 4);
        let bytes = bytes::Bytes::from(
            lake.open
                .remove("bronze/t/date=1970-01-01")
                .unwrap()
                .encoding
                .close()
                .bytes()
                .unwrap(),
        );
        let read: Vec<RecordBatch> =
            parquet::arrow::arrow_reader::ParquetRecordBatchReader::try_new(bytes, 1024)
                .unwrap()
                .collect::<Result<_, _>>()
                .unwrap();
        let read = arrow::compute::concat_batches(&read[0].schema(), &read).unwrap();
        assert_eq!(
            read.column(0).as_primitive::<Int64Type>().values(),
            &[10, 20, 30, 40]
        );
        assert_eq!(read.column(1).as_string::<i32>().value(2), "row at 30");
    }
}
