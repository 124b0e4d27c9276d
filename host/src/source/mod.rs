//! Sources produce raw records in batches, each batch of one topic, with a position to
//! resume from. Sources are synchronous and run on their own thread; the pipeline pulls
//! batches through a bounded channel, so a slow sink slows the source (back pressure).
pub mod files;
pub mod generator;

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
}

pub trait Source: Send {
    /// The next batch, or `None` when a finite source is exhausted.
    fn next_batch(&mut self) -> Result<Option<RawBatch>, SourceError>;
}
