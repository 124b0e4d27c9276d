//! Sinks: where batches end up. The lake sink writes hive-partitioned Parquet through
//! `object_store`, with a two-phase commit that makes every file appear exactly once; the
//! database sinks (ClickHouse, PostgreSQL) load a layer's tables from each commit.
pub mod clickhouse;
pub mod dead_letter;
pub mod delta;
pub mod encode;
pub mod lake;
pub mod postgres;

use crate::metrics;
use lake::CommitRecord;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// The waits between retries of a sink operation: 100 ms, doubling, capped at `max`. The lake
/// (on HDFS), ClickHouse and PostgreSQL retry with it.
#[derive(Debug, Clone)]
pub struct Backoff {
    next: Duration,
    max: Duration,
}

impl Backoff {
    pub fn new(max: Duration) -> Self {
        Backoff {
            next: Duration::from_millis(100),
            max,
        }
    }

    /// How long to wait before the next attempt.
    pub fn next_wait(&mut self) -> Duration {
        let wait = self.next;
        self.next = (wait * 2).min(self.max);
        wait
    }
}

/// An error of a sink that loads committed epochs into a database: whether waiting may fix it,
/// and its kind for `sluice_sink_errors_total{kind}`.
pub trait SinkFailure: std::fmt::Display {
    fn retryable(&self) -> bool;
    fn kind(&self) -> &'static str;
}

/// How a database sink retries: with back-off up to `max_backoff`, forever, until the pipeline
/// is asked to stop. Each failure counts as an error, each wait as a retry, both logged.
#[derive(Clone)]
pub struct Retry {
    /// The sink's metric label (`clickhouse`, `postgres`); its display name is `title`.
    pub sink: &'static str,
    pub title: &'static str,
    pub pipeline: String,
    pub max_backoff: Duration,
    pub stop: Option<Arc<AtomicBool>>,
}

impl Retry {
    fn stopping(&self) -> bool {
        self.stop
            .as_ref()
            .is_some_and(|s| s.load(Ordering::Relaxed))
    }

    /// Runs `op` on `state` until it succeeds or fails for a reason waiting cannot fix; a stop
    /// request during the waits ends it with `stopped(last error)`.
    pub fn run<S, T, E: SinkFailure>(
        &self,
        state: &mut S,
        epoch: u64,
        what: &str,
        stopped: impl FnOnce(String) -> E,
        mut op: impl FnMut(&mut S) -> Result<T, E>,
    ) -> Result<T, E> {
        let title = self.title;
        let mut backoff = Backoff::new(self.max_backoff);
        let mut attempt = 1u32;
        loop {
            let error = match op(state) {
                Ok(value) => {
                    if attempt > 1 {
                        tracing::info!(epoch, attempts = attempt, "{title} {what}: succeeded");
                    }
                    return Ok(value);
                }
                Err(error) => error,
            };
            metrics::SINK_ERRORS
                .with_label_values(&[self.pipeline.as_str(), self.sink, error.kind()])
                .inc();
            if !error.retryable() {
                return Err(error);
            }
            if self.stopping() {
                return Err(stopped(error.to_string()));
            }
            let wait = backoff.next_wait();
            tracing::warn!(epoch, attempt, %error, "{title} {what} failed; retrying in {wait:?}");
            metrics::SINK_RETRIES
                .with_label_values(&[self.pipeline.as_str(), self.sink])
                .inc();
            // Sleep in slices so a stop request is noticed promptly.
            let until = Instant::now() + wait;
            while Instant::now() < until && !self.stopping() {
                std::thread::sleep(Duration::from_millis(50).min(until - Instant::now()));
            }
            attempt += 1;
        }
    }
}

/// What one load of a committed epoch into a database inserted.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct LoadReport {
    /// Rows inserted per table.
    pub rows: BTreeMap<String, u64>,
    /// Tables skipped because their marker said they had arrived.
    pub already_loaded: Vec<String>,
}

/// The files of `layer` that `record` committed, by table (the folder under the layer), without
/// empty files and, when `include` is given, only those tables.
pub fn layer_tables<'a>(
    record: &'a CommitRecord,
    layer: &str,
    include: Option<&[String]>,
) -> BTreeMap<String, Vec<&'a str>> {
    let mut files: BTreeMap<String, Vec<&str>> = BTreeMap::new();
    let prefix = format!("{layer}/");
    for file in &record.files {
        if file.layer != layer || file.rows == 0 {
            continue;
        }
        let table = file
            .path
            .strip_prefix(&prefix)
            .and_then(|rest| rest.split('/').next())
            .unwrap_or_default();
        if include.is_some_and(|include| !include.iter().any(|t| t == table)) {
            continue;
        }
        files.entry(table.to_string()).or_default().push(&file.path);
    }
    files
}
