//! The bronze layer as a source, for `sluice backfill`: replays what a pipeline's commits put
//! in bronze, epoch by epoch, in the order and batches the original source delivered.
//!
//! Each commit record lists its epoch's files, so the replay reads one epoch at a time: memory
//! is bounded by the largest epoch (`commit_rows`, `max_buffer_mb`), not by the lake. Within an
//! epoch the rows are put back in source order and cut into batches where the source cut them:
//! - generator: by `_offset` (its sequence number), in rounds that end when one topic's batch
//!   is full, one batch per topic — the generator source's own batches;
//! - files: file by file (sorted, as the source reads them), by line, `batch_rows` a batch;
//! - Kafka: per partition (a lane) and topic by offset, `batch_rows` a batch, the topics'
//!   batches interleaved by their first event time. The stream also closed a batch after
//!   `max_batch_ms`, which no record keeps, so a replay of Kafka input equals the stream's
//!   result for plugins whose output does not depend on where batches end.
//!
//! Records that did not decode (`_rejects/<topic>/stage=decode/`) count towards batch sizes as
//! they did in the stream, so boundaries fall where they fell. Lanes are replayed one after
//! the other, each in the order its epochs were committed (over every instance that held it).
use super::{RawBatch, Source, SourceError};
use crate::config::SourceKind;
use crate::decode::{OFFSET_COLUMN, ORIGIN_COLUMN};
use crate::sink::dead_letter;
use crate::sink::lake::{CommitRecord, LakeError, LakeReader, epoch_millis};
use arrow::array::{Array, AsArray, RecordBatch, UInt32Array};
use arrow::compute::{concat_batches, take_record_batch};
use arrow::datatypes::Int64Type;
use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

/// How the original source cut its input into batches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Batching {
    Rounds,
    Files,
    Partitions,
}

impl Batching {
    pub fn of(source: &SourceKind) -> Self {
        match source {
            SourceKind::Generator(_) => Batching::Rounds,
            SourceKind::Files(_) => Batching::Files,
            SourceKind::Kafka(_) => Batching::Partitions,
        }
    }

    /// The lane a row of `origin` belongs to: its Kafka partition, else 0.
    fn lane_of(self, origin: &str) -> u32 {
        match self {
            Batching::Partitions => origin
                .rsplit_once('/')
                .and_then(|(_, p)| p.parse().ok())
                .unwrap_or(0),
            _ => 0,
        }
    }
}

/// The files of one committed epoch a replay reads.
#[derive(Debug, Default)]
struct EpochFiles {
    bronze: Vec<String>,
    /// Dead letters of the decode step.
    undecoded: Vec<String>,
}

/// What a replay will read: per lane, its epochs in commit order.
#[derive(Debug, Default)]
pub struct ReplayPlan {
    lanes: BTreeMap<u32, Vec<Arc<EpochFiles>>>,
    /// Whether the stream saw the end of its input (and so closed every window).
    pub input_ended: bool,
}

impl ReplayPlan {
    /// The plan for `records` (every commit record of every instance of the pipeline).
    pub fn new(records: &[CommitRecord]) -> Self {
        let mut lanes: BTreeMap<u32, Vec<(u64, Arc<EpochFiles>)>> = BTreeMap::new();
        let mut by_instance: BTreeMap<&str, Vec<&CommitRecord>> = BTreeMap::new();
        for record in records {
            by_instance
                .entry(&record.instance)
                .or_default()
                .push(record);
        }
        let mut input_ended = false;
        for records in by_instance.values_mut() {
            records.sort_by_key(|r| r.epoch);
            input_ended |= records.last().is_some_and(|r| r.input_ended);
            let mut before: BTreeMap<u32, u64> = BTreeMap::new();
            for record in records.iter() {
                let mut files = EpochFiles::default();
                for file in &record.files {
                    if file.layer == "bronze" {
                        files.bronze.push(file.path.clone());
                    } else if file.layer == dead_letter::LAYER
                        && file.path.contains("/stage=decode/")
                    {
                        files.undecoded.push(file.path.clone());
                    }
                }
                let files = Arc::new(files);
                for (&lane, checkpoint) in &record.lanes {
                    let previous = before.insert(lane, checkpoint.records).unwrap_or(0);
                    let grew = checkpoint.records > previous;
                    if grew && !(files.bronze.is_empty() && files.undecoded.is_empty()) {
                        lanes
                            .entry(lane)
                            .or_default()
                            .push((checkpoint.records, files.clone()));
                    }
                }
            }
        }
        ReplayPlan {
            lanes: lanes
                .into_iter()
                .map(|(lane, mut epochs)| {
                    // A lane's records only grow, whichever instance held it.
                    epochs.sort_by_key(|(records, _)| *records);
                    (lane, epochs.into_iter().map(|(_, f)| f).collect())
                })
                .collect(),
            input_ended,
        }
    }

    pub fn epochs(&self) -> usize {
        self.lanes.values().map(Vec::len).sum()
    }
}

/// Replays a plan as a source (see the module docs).
pub struct ReplaySource {
    reader: LakeReader,
    io: tokio::runtime::Runtime,
    batching: Batching,
    batch_rows: usize,
    event_time: String,
    lanes: Vec<u32>,
    input_ended: bool,
    advances_watermarks: bool,
    work: VecDeque<(u32, Arc<EpochFiles>)>,
    pending: VecDeque<RawBatch>,
    replayed_epochs: u64,
}

impl ReplaySource {
    pub fn new(
        plan: ReplayPlan,
        reader: LakeReader,
        batching: Batching,
        batch_rows: usize,
        event_time: &str,
    ) -> Result<Self, SourceError> {
        let io = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|source| SourceError::Io {
                path: "the replay's I/O runtime".into(),
                source,
            })?;
        let lanes = plan.lanes.keys().copied().collect();
        let work = plan
            .lanes
            .into_iter()
            .flat_map(|(lane, epochs)| epochs.into_iter().map(move |e| (lane, e)))
            .collect();
        Ok(ReplaySource {
            reader,
            io,
            batching,
            batch_rows: batch_rows.max(1),
            event_time: event_time.to_string(),
            lanes,
            input_ended: plan.input_ended,
            advances_watermarks: true,
            work,
            pending: VecDeque::new(),
            replayed_epochs: 0,
        })
    }

    /// Whether the replay advances watermarks as the stream did (`Source::advances_watermarks`:
    /// a stream that read several files did not).
    pub fn advancing_watermarks(mut self, advances: bool) -> Self {
        self.advances_watermarks = advances;
        self
    }

    /// One epoch's rows of `lane` as the source's batches.
    fn epoch(&mut self, lane: u32, files: &EpochFiles) -> Result<VecDeque<RawBatch>, LakeError> {
        let replay_error = |path: &str, message: String| LakeError::CommitRecord {
            path: path.to_string(),
            message,
        };
        // Each topic's rows of this lane, and every record in source order.
        let mut tables: BTreeMap<String, RecordBatch> = BTreeMap::new();
        let mut by_topic: BTreeMap<String, Vec<RecordBatch>> = BTreeMap::new();
        for path in &files.bronze {
            let topic = path.split('/').nth(1).unwrap_or_default().to_string();
            let batches = self.io.block_on(self.reader.read_parquet(path))?;
            by_topic.entry(topic).or_default().extend(batches);
        }
        let mut entries = Vec::new();
        for (topic, batches) in by_topic {
            let Some(first) = batches.first() else {
                continue;
            };
            let schema = first.schema();
            let all = concat_batches(&schema, &batches)
                .map_err(|e| replay_error(&topic, format!("bronze files disagree: {e}")))?;
            let origins = all
                .column_by_name(ORIGIN_COLUMN)
                .and_then(|c| c.as_string_opt::<i32>())
                .ok_or_else(|| replay_error(&topic, format!("no {ORIGIN_COLUMN} column")))?;
            let offsets = all
                .column_by_name(OFFSET_COLUMN)
                .and_then(|c| c.as_primitive_opt::<Int64Type>())
                .ok_or_else(|| replay_error(&topic, format!("no {OFFSET_COLUMN} column")))?;
            let times = epoch_millis(&all, &self.event_time);
            for row in 0..all.num_rows() {
                let origin = origins.value(row);
                if self.batching.lane_of(origin) != lane {
                    continue;
                }
                entries.push(Entry {
                    topic: topic.clone(),
                    origin: origin.to_string(),
                    offset: offsets.value(row),
                    row: Some(row as u32),
                    time: times
                        .as_ref()
                        .filter(|t| t.is_valid(row))
                        .map(|t| t.value(row)),
                });
            }
            tables.insert(topic, all);
        }
        for path in &files.undecoded {
            for batch in self.io.block_on(self.reader.read_parquet(path))? {
                let (Some(topics), Some(origins), Some(offsets)) = (
                    batch
                        .column_by_name("topic")
                        .and_then(|c| c.as_string_opt::<i32>()),
                    batch
                        .column_by_name("origin")
                        .and_then(|c| c.as_string_opt::<i32>()),
                    batch
                        .column_by_name("offset")
                        .and_then(|c| c.as_primitive_opt::<Int64Type>()),
                ) else {
                    return Err(replay_error(path, "not a dead-letter file".into()));
                };
                for row in 0..batch.num_rows() {
                    if self.batching.lane_of(origins.value(row)) != lane {
                        continue;
                    }
                    entries.push(Entry {
                        topic: topics.value(row).to_string(),
                        origin: origins.value(row).to_string(),
                        offset: offsets.value(row),
                        row: None,
                        time: None,
                    });
                }
            }
        }
        let chunks = self.cut(entries);
        let mut batches = VecDeque::new();
        for chunk in chunks {
            let first = &chunk[0];
            let mut raw = RawBatch::new(&first.topic, &first.origin);
            raw.lane = lane;
            for entry in &chunk {
                raw.ends.push(0);
                raw.offsets.push(entry.offset);
            }
            let rows: Vec<u32> = chunk.iter().filter_map(|e| e.row).collect();
            raw.decoded = match tables.get(&first.topic) {
                Some(table) => Some(take_record_batch(table, &UInt32Array::from(rows))?),
                None => None,
            };
            batches.push_back(raw);
        }
        Ok(batches)
    }

    /// Puts an epoch's records in source order and cuts them into the source's batches.
    fn cut(&self, mut entries: Vec<Entry>) -> Vec<Vec<Entry>> {
        let size = self.batch_rows;
        let mut chunks = Vec::new();
        match self.batching {
            Batching::Rounds => {
                entries.sort_by(|a, b| (&a.origin, a.offset).cmp(&(&b.origin, b.offset)));
                let mut round: BTreeMap<(usize, String), Vec<Entry>> = BTreeMap::new();
                for entry in entries {
                    let key = (topic_order(&entry.topic), entry.topic.clone());
                    let batch = round.entry(key).or_default();
                    batch.push(entry);
                    if batch.len() >= size {
                        chunks.extend(std::mem::take(&mut round).into_values());
                    }
                }
                chunks.extend(round.into_values());
            }
            Batching::Files | Batching::Partitions => {
                entries.sort_by(|a, b| {
                    (&a.origin, &a.topic, a.offset).cmp(&(&b.origin, &b.topic, b.offset))
                });
                let mut run: Vec<Entry> = Vec::new();
                for entry in entries {
                    if run.len() >= size
                        || run
                            .last()
                            .is_some_and(|e| e.origin != entry.origin || e.topic != entry.topic)
                    {
                        chunks.push(std::mem::take(&mut run));
                    }
                    run.push(entry);
                }
                if !run.is_empty() {
                    chunks.push(run);
                }
                if self.batching == Batching::Partitions {
                    // Topics of a partition arrived interleaved; event time is the best record
                    // of how (a stable sort keeps each topic's own order).
                    chunks.sort_by_key(|c| c.iter().filter_map(|e| e.time).min());
                }
            }
        }
        chunks
    }
}

/// A source record in the replay: a bronze row, or a record that did not decode (`row` None),
/// which counts towards its batch but is not in it.
struct Entry {
    topic: String,
    origin: String,
    offset: i64,
    row: Option<u32>,
    time: Option<i64>,
}

/// The generator hands out a round's batches in this topic order.
fn topic_order(topic: &str) -> usize {
    crate::source::generator::Topic::ALL
        .iter()
        .position(|t| t.name() == topic)
        .unwrap_or(usize::MAX)
}

impl Source for ReplaySource {
    fn next_batch(&mut self) -> Result<Option<RawBatch>, SourceError> {
        while self.pending.is_empty() {
            let Some((lane, files)) = self.work.pop_front() else {
                return Ok(None);
            };
            let mut batches = self
                .epoch(lane, &files)
                .map_err(|e| SourceError::Config(format!("replaying bronze: {e}")))?;
            self.replayed_epochs += 1;
            // An epoch ends at a cut of the stream, so it is one here too.
            if let Some(last) = batches.back_mut() {
                last.position = Some(serde_json::Value::from(self.replayed_epochs));
            }
            self.pending = batches;
        }
        Ok(self.pending.pop_front())
    }

    fn lanes(&self) -> Vec<u32> {
        if self.lanes.is_empty() {
            vec![0]
        } else {
            self.lanes.clone()
        }
    }

    fn closes_windows_at_end(&self) -> bool {
        self.input_ended
    }

    fn advances_watermarks(&self) -> bool {
        self.advances_watermarks
    }
}
