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
}

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
                let mut reader = BufReader::new(std::fs::File::open(&path).map_err(io)?);
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
            let mut line = Vec::new();
            while batch.len() < self.batch_rows {
                line.clear();
                if reader.read_until(b'\n', &mut line).map_err(io)? == 0 {
                    break;
                }
                self.position.line += 1;
                let record = line.strip_suffix(b"\n").unwrap_or(&line);
                let record = record.strip_suffix(b"\r").unwrap_or(record);
                if !record.iter().all(u8::is_ascii_whitespace) {
                    batch.push(record, self.position.line);
                }
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
