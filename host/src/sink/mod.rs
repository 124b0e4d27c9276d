//! Sinks: where batches end up. The lake sink writes hive-partitioned Parquet through
//! `object_store`, with a two-phase commit that makes every file appear exactly once.
pub mod clickhouse;
pub mod dead_letter;
pub mod lake;

use std::time::Duration;

/// The waits between retries of a sink operation: 100 ms, doubling, capped at `max`. The lake
/// (on HDFS) and ClickHouse retry with it.
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
