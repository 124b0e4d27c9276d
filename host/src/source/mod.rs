//! Sources produce raw records in batches, each batch of one topic, with a position to
//! resume from. Sources are synchronous and run on their own thread; the pipeline pulls
//! batches through a bounded channel, so a slow sink slows the source (back pressure).
//!
//! A batch belongs to a lane: a Kafka partition number (0 for sources without partitions).
//! Each lane has its own plugin instances and state, so keyed state (a user's session) moves
//! with its partition when a consumer group rebalances.
pub mod files;
pub mod generator;
pub mod kafka;
pub mod replay;

use crate::decode::DeadLetter;
use crate::sink::lake::LaneCheckpoint;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, mpsc};

/// Batch buffers the pipeline hands back once a batch is through, for a source to read the
/// next batches into. A buffer the allocator gives out fresh costs a page fault per 4 KiB on
/// first write: the files source's batches were a third of a run's faults.
#[derive(Clone, Default)]
pub struct BufferPool(Arc<Mutex<Vec<Vec<u8>>>>);

impl BufferPool {
    /// Buffers kept: about the batches in flight between the source and the pipeline.
    const KEPT: usize = 4;

    /// An empty buffer, with the capacity of one used before when there is one.
    pub fn take(&self) -> Vec<u8> {
        self.0
            .lock()
            .expect("no one panics holding the pool")
            .pop()
            .unwrap_or_default()
    }

    pub fn give(&self, mut buffer: Vec<u8>) {
        buffer.clear();
        let mut kept = self.0.lock().expect("no one panics holding the pool");
        if kept.len() < Self::KEPT {
            kept.push(buffer);
        }
    }
}

/// Raw records of one topic: newline-terminated bytes with an offset per record.
#[derive(Debug, Clone, Default)]
pub struct RawBatch {
    pub topic: String,
    /// Where the records come from: a file path, `generator`, `topic/partition`.
    pub origin: String,
    pub data: Vec<u8>,
    /// End (exclusive, before the newline) of each record in `data`.
    pub ends: Vec<usize>,
    /// Offset of each record in its origin (line number, sequence number, Kafka offset).
    pub offsets: Vec<i64>,
    /// Set on the last batch of a consistent cut: resuming from it neither skips nor repeats
    /// a record. The pipeline commits only at such batches.
    pub position: Option<serde_json::Value>,
    pub lane: u32,
    /// Records the source itself could not decode (bad Avro, say), for the dead-letter output.
    pub rejected: Vec<DeadLetter>,
    /// Set by a source that reads Arrow already (the bronze replay): the decode step passes it
    /// on. `ends` and `offsets` still count the source records the batch stands for.
    pub decoded: Option<arrow::array::RecordBatch>,
}

/// What flows from the source thread to the pipeline: raw batches from the source, decoded
/// ones (`B`) after the decode thread.
pub enum SourceEvent<B = RawBatch> {
    Batch(B),
    /// The consumer group gave this instance these lanes. The pipeline opens them (restoring
    /// plugin state) and replies with each lane's checkpoint, from which the source seeks.
    Assigned {
        lanes: Vec<u32>,
        reply: mpsc::Sender<BTreeMap<u32, LaneCheckpoint>>,
    },
    /// These lanes are being taken away. The pipeline commits everything it holds (output and
    /// state durable) and closes them, then replies with the committed position of each.
    Revoked {
        lanes: Vec<u32>,
        reply: mpsc::Sender<BTreeMap<u32, serde_json::Value>>,
    },
}

impl RawBatch {
    pub fn new(topic: &str, origin: &str) -> Self {
        RawBatch {
            topic: topic.to_string(),
            origin: origin.to_string(),
            ..Default::default()
        }
    }

    pub fn push(&mut self, record: &[u8], offset: i64) {
        self.data.extend_from_slice(record);
        self.end_record(offset);
    }

    /// Ends the record a source has written into `data` itself, after the previous one (a
    /// reader that fills `data` directly saves copying each record once more).
    pub fn end_record(&mut self, offset: i64) {
        self.ends.push(self.data.len());
        self.data.push(b'\n');
        self.offsets.push(offset);
    }

    pub fn len(&self) -> usize {
        self.ends.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    pub fn record(&self, i: usize) -> &[u8] {
        let start = if i == 0 { 0 } else { self.ends[i - 1] + 1 };
        &self.data[start..self.ends[i]]
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("cannot read {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("cannot resume from position {position}: {reason}")]
    BadPosition { position: String, reason: String },
    #[error("{0}")]
    Config(String),
    #[error("kafka: {0}")]
    Kafka(String),
}

pub trait Source: Send {
    /// The next batch, or `None` when a finite source is exhausted or a stream is stopped.
    fn next_batch(&mut self) -> Result<Option<RawBatch>, SourceError>;

    /// A finite source ends when its input does: the pipeline then closes every window. An
    /// unbounded one (Kafka) only stops; its open state is checkpointed, not flushed.
    fn is_bounded(&self) -> bool {
        true
    }

    /// Where the pipeline reports the lane positions it has durably committed (Kafka commits
    /// them to the consumer group), if the source wants to know.
    fn durable_positions(&self) -> Option<mpsc::Sender<BTreeMap<u32, serde_json::Value>>> {
        None
    }

    /// The run is asked to stop. A stream hands its lanes back first (as on a rebalance), so
    /// whoever takes its partitions next resumes from a durable checkpoint.
    fn stop(&mut self) {}

    /// The lanes a bounded source feeds, opened before its first batch.
    fn lanes(&self) -> Vec<u32> {
        vec![0]
    }

    /// Whether the end of a bounded source is the end of its input, after which stateful
    /// stages emit everything they hold (watermark +∞). A replay of a stream that never
    /// ended says no: its state is checkpointed instead, as the stream's was.
    fn closes_windows_at_end(&self) -> bool {
        self.is_bounded()
    }

    /// Whether the event time read so far bounds what is still to come, so that watermarks
    /// may close windows as it advances. A source that reads files one after another says no
    /// when there are several (one per topic, say, each covering the same days): a later
    /// file may hold earlier times than any read so far, so its windows close at the end of
    /// input instead, and no row of a later file is late.
    fn advances_watermarks(&self) -> bool {
        true
    }

    /// Where the pipeline gives back the `data` of batches it is done with, if the source
    /// reads into buffers from a pool.
    fn buffer_pool(&self) -> Option<BufferPool> {
        None
    }
}
