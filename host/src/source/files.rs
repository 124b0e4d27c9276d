//! JSON lines files matched by globs, read in sorted order. Offsets are 1-based line numbers;
//! blank lines are skipped but still counted, so offsets match what an editor shows.
use super::{RawBatch, Source, SourceError};
use serde::{Deserialize, Serialize};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
struct FilePosition {
    /// Index into the sorted file list.
    file: usize,
    /// Lines of that file already read.
    line: i64,
}

pub struct FileSource {
    files: Vec<PathBuf>,
    topic: Option<String>,
    batch_rows: usize,
    position: FilePosition,
    reader: Option<BufReader<std::fs::File>>,
    /// Of the last batch: how much to reserve for the next one.
    bytes_per_record: usize,
}

/// Large reads: the files are read front to back, and an 8 KiB buffer was a system call
/// every 18 EventSim records.
const READ_BUFFER_BYTES: usize = 256 * 1024;

impl FileSource {
    pub fn new(
        patterns: &[String],
        topic: Option<String>,
        batch_rows: usize,
        resume: Option<&serde_json::Value>,
    ) -> Result<Self, SourceError> {
        let mut files = Vec::new();
        for pattern in patterns {
            let matches = glob::glob(pattern)
                .map_err(|e| SourceError::Config(format!("bad glob `{pattern}`: {e}")))?;
            files.extend(matches.filter_map(Result::ok).filter(|p| p.is_file()));
        }
        files.sort();
        files.dedup();
        let position = match resume {
            None => FilePosition::default(),
            Some(value) => {
                serde_json::from_value(value.clone()).map_err(|e| SourceError::BadPosition {
                    position: value.to_string(),
                    reason: e.to_string(),
                })?
            }
        };
        Ok(FileSource {
            files,
            topic,
            batch_rows,
            position,
            reader: None,
            bytes_per_record: 256,
        })
    }

    fn topic_of(&self, path: &Path) -> String {
        self.topic.clone().unwrap_or_else(|| {
            path.file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default()
        })
    }
}

impl Source for FileSource {
    fn advances_watermarks(&self) -> bool {
        self.files.len() <= 1
    }

    fn next_batch(&mut self) -> Result<Option<RawBatch>, SourceError> {
        loop {
            let Some(path) = self.files.get(self.position.file).cloned() else {
                return Ok(None);
            };
            let io = |source| SourceError::Io {
                path: path.display().to_string(),
                source,
            };
            if self.reader.is_none() {
                let file = std::fs::File::open(&path).map_err(io)?;
                let mut reader = BufReader::with_capacity(READ_BUFFER_BYTES, file);
                let mut skip = String::new();
                for _ in 0..self.position.line {
                    skip.clear();
                    if reader.read_line(&mut skip).map_err(io)? == 0 {
                        break;
                    }
                }
                self.reader = Some(reader);
            }
            let mut batch = RawBatch::new(&self.topic_of(&path), &path.display().to_string());
            let reader = self.reader.as_mut().expect("opened above");
            batch.data.reserve(self.batch_rows * self.bytes_per_record);
            while batch.len() < self.batch_rows {
                // Lines are read straight into the batch; a blank one is taken back out.
                let start = batch.data.len();
                if reader.read_until(b'\n', &mut batch.data).map_err(io)? == 0 {
                    break;
                }
                self.position.line += 1;
                let line = &batch.data[start..];
                let record = line.strip_suffix(b"\n").unwrap_or(line);
                let record = record.strip_suffix(b"\r").unwrap_or(record);
                let (len, blank) = (record.len(), record.iter().all(u8::is_ascii_whitespace));
                if blank {
                    batch.data.truncate(start);
                } else {
                    batch.data.truncate(start + len);
                    batch.end_record(self.position.line);
                }
            }
            if !batch.is_empty() {
                self.bytes_per_record = batch.data.len().div_ceil(batch.len());
            }
            if batch.len() < self.batch_rows {
                // End of this file: the next call starts the next one.
                self.position = FilePosition {
                    file: self.position.file + 1,
                    line: 0,
                };
                self.reader = None;
            }
            if batch.is_empty() {
                continue;
            }
            batch.position =
                Some(serde_json::to_value(&self.position).expect("position serialises"));
            return Ok(Some(batch));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn records(batch: &RawBatch) -> Vec<(String, i64)> {
        (0..batch.len())
            .map(|i| {
                let text = String::from_utf8(batch.record(i).to_vec()).unwrap();
                (text, batch.offsets[i])
            })
            .collect()
    }

    #[test]
    fn lines_become_records_numbered_as_an_editor_shows_them() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events.jsonl");
        std::fs::write(
            &path,
            "{\"a\":1}\n\n{\"a\":2}\r\n  \t\n{\"a\":3}\n{\"a\":4}",
        )
        .unwrap();
        let pattern = path.display().to_string();
        let mut source = FileSource::new(std::slice::from_ref(&pattern), None, 2, None).unwrap();
        let first = source.next_batch().unwrap().unwrap();
        assert_eq!(first.topic, "events");
        assert_eq!(
            records(&first),
            [("{\"a\":1}".to_string(), 1), ("{\"a\":2}".to_string(), 3)]
        );
        assert_eq!(first.data, b"{\"a\":1}\n{\"a\":2}\n");
        let second = source.next_batch().unwrap().unwrap();
        assert_eq!(
            records(&second),
            [("{\"a\":3}".to_string(), 5), ("{\"a\":4}".to_string(), 6)]
        );
        assert!(source.next_batch().unwrap().is_none());

        // Resuming from the first batch's position reads what followed it, and only that.
        let mut resumed = FileSource::new(&[pattern], None, 10, first.position.as_ref()).unwrap();
        assert_eq!(
            records(&resumed.next_batch().unwrap().unwrap()),
            [("{\"a\":3}".to_string(), 5), ("{\"a\":4}".to_string(), 6)]
        );
    }
}
