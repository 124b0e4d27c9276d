//! Parquet encoding on worker threads. Each open lake file belongs to one worker, which
//! encodes its batches in the order they were written; different files (a bronze and a silver
//! directory, two days) encode in parallel. With one sink thread encoding every file, that
//! thread was busy 90 % of the benchmark's silver job and set its pace while the other
//! threads waited for it.
use arrow::array::RecordBatch;
use parquet::arrow::ArrowWriter;
use parquet::errors::ParquetError;
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;

/// Batches waiting per worker before a write blocks: the back pressure of a slow encoder
/// (see the pipeline's `QUEUED_BATCHES` for why so few).
const QUEUED_COMMANDS: usize = 2;

/// The workers, started on the first file.
pub struct ParquetEncoders {
    workers: Vec<mpsc::SyncSender<Command>>,
    count: usize,
    opened: u64,
}

/// A file one worker encodes into memory.
pub struct EncodingFile {
    id: u64,
    worker: mpsc::SyncSender<Command>,
    /// Encoded plus buffered bytes, as of the last batch the worker finished.
    size: Arc<AtomicUsize>,
}

/// A file being closed: its bytes once the worker has encoded what was queued before.
pub struct ClosingFile(mpsc::Receiver<Result<Vec<u8>, ParquetError>>);

enum Command {
    Open {
        id: u64,
        writer: Box<ArrowWriter<Vec<u8>>>,
        size: Arc<AtomicUsize>,
    },
    Write(u64, RecordBatch),
    Close(u64, mpsc::Sender<Result<Vec<u8>, ParquetError>>),
}

/// An encoding file, and the first error encoding it met (reported when it is closed).
struct WorkerFile {
    writer: Box<ArrowWriter<Vec<u8>>>,
    size: Arc<AtomicUsize>,
    failed: Option<ParquetError>,
}

fn stopped() -> ParquetError {
    ParquetError::General("the Parquet encoding thread stopped".into())
}

impl ParquetEncoders {
    /// As many workers as cores (at most four): they share the cores with the source, the
    /// decoder and the plugins, and the OS gives each what is idle.
    pub fn new() -> Self {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        Self::with_workers(cores.min(4))
    }

    pub fn with_workers(count: usize) -> Self {
        ParquetEncoders {
            workers: Vec::new(),
            count: count.max(1),
            opened: 0,
        }
    }

    /// Hands `writer` to the next worker in turn: files open in the order batches reach
    /// them, so neighbours (a layer after the one it was derived from) land on different
    /// workers.
    pub fn open(&mut self, writer: ArrowWriter<Vec<u8>>) -> Result<EncodingFile, ParquetError> {
        if self.workers.is_empty() {
            for n in 0..self.count {
                let (commands, receiver) = mpsc::sync_channel(QUEUED_COMMANDS);
                std::thread::Builder::new()
                    .name(format!("sluice-encode-{n}"))
                    .spawn(move || work(receiver))
                    .map_err(|e| ParquetError::External(Box::new(e)))?;
                self.workers.push(commands);
            }
        }
        let id = self.opened;
        self.opened += 1;
        let worker = self.workers[id as usize % self.workers.len()].clone();
        let size = Arc::new(AtomicUsize::new(0));
        worker
            .send(Command::Open {
                id,
                writer: Box::new(writer),
                size: size.clone(),
            })
            .map_err(|_| stopped())?;
        Ok(EncodingFile { id, worker, size })
    }
}

impl Default for ParquetEncoders {
    fn default() -> Self {
        Self::new()
    }
}

impl EncodingFile {
    /// Queues `batch`; an error encoding it is reported by [`EncodingFile::close`].
    pub fn write(&self, batch: RecordBatch) -> Result<(), ParquetError> {
        self.worker
            .send(Command::Write(self.id, batch))
            .map_err(|_| stopped())
    }

    pub fn buffered_bytes(&self) -> usize {
        self.size.load(Ordering::Relaxed)
    }

    /// Asks for the file's bytes. Closing every file before waiting for any lets the workers
    /// finish them in parallel.
    pub fn close(self) -> ClosingFile {
        let (reply, receiver) = mpsc::channel();
        // A stopped worker drops `reply`, which `ClosingFile::bytes` reports.
        let _ = self.worker.send(Command::Close(self.id, reply));
        ClosingFile(receiver)
    }
}

impl ClosingFile {
    pub fn bytes(self) -> Result<Vec<u8>, ParquetError> {
        self.0.recv().map_err(|_| stopped())?
    }
}

fn work(commands: mpsc::Receiver<Command>) {
    let mut files: HashMap<u64, WorkerFile> = HashMap::new();
    for command in commands {
        match command {
            Command::Open { id, writer, size } => {
                files.insert(
                    id,
                    WorkerFile {
                        writer,
                        size,
                        failed: None,
                    },
                );
            }
            Command::Write(id, batch) => {
                let file = files
                    .get_mut(&id)
                    .expect("a file is opened before it is written");
                if file.failed.is_some() {
                    continue;
                }
                match file.writer.write(&batch) {
                    Ok(()) => file.size.store(
                        file.writer.memory_size() + file.writer.bytes_written(),
                        Ordering::Relaxed,
                    ),
                    Err(e) => file.failed = Some(e),
                }
            }
            Command::Close(id, reply) => {
                let file = files
                    .remove(&id)
                    .expect("a file is opened before it is closed");
                let bytes = match file.failed {
                    Some(e) => Err(e),
                    None => file.writer.into_inner(),
                };
                let _ = reply.send(bytes);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{AsArray, Int64Array};
    use arrow::datatypes::{DataType, Field, Int64Type, Schema};
    use parquet::arrow::arrow_reader::ParquetRecordBatchReader;

    fn numbers(values: std::ops::Range<i64>) -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![Field::new("n", DataType::Int64, false)]));
        RecordBatch::try_new(schema, vec![Arc::new(Int64Array::from_iter_values(values))]).unwrap()
    }

    fn read(bytes: Vec<u8>) -> Vec<i64> {
        ParquetRecordBatchReader::try_new(bytes::Bytes::from(bytes), 1024)
            .unwrap()
            .flat_map(|batch| {
                let batch = batch.unwrap();
                batch
                    .column(0)
                    .as_primitive::<Int64Type>()
                    .values()
                    .to_vec()
            })
            .collect()
    }

    #[test]
    fn files_spread_over_workers_keep_their_batches_in_order() {
        let mut encoders = ParquetEncoders::with_workers(2);
        let files: Vec<EncodingFile> = (0..5)
            .map(|_| {
                let writer = ArrowWriter::try_new(Vec::new(), numbers(0..0).schema(), None);
                encoders.open(writer.unwrap()).unwrap()
            })
            .collect();
        // File f gets batches f*1000 + [0, 10), [10, 20), …, interleaved with the others.
        for part in 0..50 {
            for (f, file) in files.iter().enumerate() {
                let start = f as i64 * 1000 + part * 10;
                file.write(numbers(start..start + 10)).unwrap();
            }
        }
        let closing: Vec<ClosingFile> = files.into_iter().map(EncodingFile::close).collect();
        for (f, closing) in closing.into_iter().enumerate() {
            let start = f as i64 * 1000;
            assert_eq!(
                read(closing.bytes().unwrap()),
                (start..start + 500).collect::<Vec<_>>()
            );
        }
    }

    #[test]
    fn an_encoding_error_is_reported_when_the_file_closes() {
        let mut encoders = ParquetEncoders::with_workers(1);
        let writer = ArrowWriter::try_new(Vec::new(), numbers(0..0).schema(), None).unwrap();
        let file = encoders.open(writer).unwrap();
        file.write(numbers(0..3)).unwrap();
        // A batch of another schema cannot be encoded into this file.
        let other = Arc::new(Schema::new(vec![Field::new("s", DataType::Utf8, false)]));
        let strings = arrow::array::StringArray::from(vec!["a"]);
        file.write(RecordBatch::try_new(other, vec![Arc::new(strings)]).unwrap())
            .unwrap();
        file.write(numbers(3..6)).unwrap();
        assert!(file.close().bytes().is_err());
        // The worker goes on with other files.
        let writer = ArrowWriter::try_new(Vec::new(), numbers(0..0).schema(), None).unwrap();
        let file = encoders.open(writer).unwrap();
        file.write(numbers(0..3)).unwrap();
        assert_eq!(read(file.close().bytes().unwrap()), [0, 1, 2]);
    }
}
