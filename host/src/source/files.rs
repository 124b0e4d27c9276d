//! JSON lines files matched by globs, read in sorted order. Offsets are 1-based line numbers;
//! blank lines are skipped but still counted, so offsets match what an editor shows.
use super::{BufferPool, RawBatch, Source, SourceError};
use serde::{Deserialize, Serialize};
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
    reader: Option<LineReader>,
    /// Of the last batch: how much to read for the next one.
    bytes_per_record: usize,
    /// Buffers to read batches into.
    buffers: BufferPool,
}

/// Reads are at least this large (a system call per few hundred KiB of lines), or a whole
/// batch when batches are smaller: what a read brings beyond a batch is copied to the next.
const MIN_READ_BYTES: usize = 256 * 1024;

/// An open file read in large blocks straight into batches. Lines are found with a SIMD
/// search and stay where they were read unless a blank line or a `\r` has to be cut out:
/// splitting line by line through a `BufReader` copied every byte once more and searched for
/// newlines a word at a time, 7 % of a benchmark run.
struct LineReader {
    file: std::fs::File,
    /// Bytes read past the last line handed out: the start of the next batch.
    rest: Vec<u8>,
    at_end: bool,
}

/// The smallest read for batches of `rows` records of about `bytes_per_record`.
fn min_read(rows: usize, bytes_per_record: usize) -> usize {
    (rows * bytes_per_record).min(MIN_READ_BYTES)
}

impl LineReader {
    /// Appends up to `want` more bytes of the file to `data`; false at the end of the file.
    fn fill(&mut self, data: &mut Vec<u8>, want: usize) -> std::io::Result<bool> {
        use std::io::Read;
        if self.at_end {
            return Ok(false);
        }
        data.reserve(want);
        let read = (&mut self.file).take(want as u64).read_to_end(data)?;
        self.at_end = read == 0;
        Ok(!self.at_end)
    }

    /// Skips `lines` lines (a resumed position).
    fn skip(&mut self, mut lines: i64) -> std::io::Result<()> {
        let mut data = std::mem::take(&mut self.rest);
        while lines > 0 {
            // One pass over the block: the newlines still to skip, and where the last one is.
            let (mut found, mut last) = (0, None);
            for newline in memchr::memchr_iter(b'\n', &data).take(lines as usize) {
                found += 1;
                last = Some(newline);
            }
            lines -= found;
            if lines == 0 {
                data.drain(..=last.expect("a newline was found"));
                break;
            }
            data.clear();
            if !self.fill(&mut data, MIN_READ_BYTES)? {
                break;
            }
        }
        self.rest = data;
        Ok(())
    }

    /// Reads lines into `batch` until it holds `rows` records or the file ends, numbering
    /// them after `line` (blank lines count but are left out). Returns the last line number.
    fn read_batch(
        &mut self,
        batch: &mut RawBatch,
        buffers: &BufferPool,
        rows: usize,
        bytes_per_record: usize,
        mut line: i64,
    ) -> std::io::Result<i64> {
        let mut data = buffers.take();
        data.extend_from_slice(&self.rest);
        // Room for one more read past the estimate: records a little longer than the last
        // batch's took a second read, whose `reserve` doubled the buffer and copied it (a
        // fifth of the run's page faults).
        let expected = rows * bytes_per_record;
        data.reserve_exact(expected + expected / 8 + min_read(rows, bytes_per_record));
        // `data[..kept]` holds the records taken, each ended by a newline; `data[unread..]` the
        // bytes not yet taken, of which `data[unread..searched]` holds no newline.
        let (mut kept, mut unread, mut searched) = (0, 0, 0);
        while batch.ends.len() < rows {
            let newline = match memchr::memchr(b'\n', &data[searched..]) {
                Some(at) => searched + at,
                None => {
                    // Close the gap left by cut-out lines before reading more after it.
                    data.copy_within(unread.., kept);
                    data.truncate(data.len() - (unread - kept));
                    unread = kept;
                    searched = data.len();
                    // A line longer than the reads so far doubles the next one.
                    let want = ((rows - batch.ends.len()) * bytes_per_record)
                        .max(min_read(rows, bytes_per_record))
                        .max(searched - unread);
                    if self.fill(&mut data, want)? {
                        continue;
                    }
                    if unread == data.len() {
                        break;
                    }
                    // The last line has no newline: give it one.
                    data.push(b'\n');
                    data.len() - 1
                }
            };
            line += 1;
            let record = &data[unread..newline];
            let record = record.strip_suffix(b"\r").unwrap_or(record);
            let len = record.len();
            if !record.iter().all(u8::is_ascii_whitespace) {
                if kept != unread {
                    data.copy_within(unread..unread + len, kept);
                }
                kept += len;
                data[kept] = b'\n';
                batch.ends.push(kept);
                batch.offsets.push(line);
                kept += 1;
            }
            unread = newline + 1;
            searched = unread;
        }
        self.rest.clear();
        self.rest.extend_from_slice(&data[unread..]);
        data.truncate(kept);
        batch.data = data;
        Ok(line)
    }
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
            bytes_per_record: 256,
            buffers: BufferPool::default(),
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

    fn buffer_pool(&self) -> Option<BufferPool> {
        Some(self.buffers.clone())
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
                let mut reader = LineReader {
                    file,
                    rest: Vec::new(),
                    at_end: false,
                };
                reader.skip(self.position.line).map_err(io)?;
                self.reader = Some(reader);
            }
            let mut batch = RawBatch::new(&self.topic_of(&path), &path.display().to_string());
            let reader = self.reader.as_mut().expect("opened above");
            self.position.line = reader
                .read_batch(
                    &mut batch,
                    &self.buffers,
                    self.batch_rows,
                    self.bytes_per_record,
                    self.position.line,
                )
                .map_err(io)?;
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

    /// What an editor shows: every line numbered from 1, blank ones left out.
    fn expected_records(text: &str) -> Vec<(String, i64)> {
        text.lines()
            .zip(1..)
            .filter(|(line, _)| !line.trim().is_empty())
            .map(|(line, number)| (line.to_string(), number))
            .collect()
    }

    #[test]
    fn lines_across_read_blocks_are_split_and_resumed_exactly() {
        // Several read blocks of lines of every length, with CRLF endings, blank and
        // whitespace-only lines cut out of the middle of a block, and no final newline.
        let mut text = String::new();
        let mut seed = 7u64;
        for i in 0..12_000 {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            match seed >> 60 {
                0 => text.push('\n'),
                1 => text.push_str(" \t\r\n"),
                kind => {
                    let width = (seed >> 32) as usize % 400;
                    text.push_str(&format!("{{\"i\":{i},\"pad\":\"{}\"}}", "x".repeat(width)));
                    text.push_str(if kind == 2 { "\r\n" } else { "\n" });
                }
            }
        }
        text.push_str("{\"last\":true}");
        assert!(text.len() > 4 * MIN_READ_BYTES);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events.jsonl");
        std::fs::write(&path, &text).unwrap();
        let pattern = path.display().to_string();
        let expected = expected_records(&text);

        for batch_rows in [1, 7, 1000, 100_000] {
            let mut source =
                FileSource::new(std::slice::from_ref(&pattern), None, batch_rows, None).unwrap();
            // Every other batch's buffer is given back, as the pipeline gives them, and read
            // into again with what it held before cleared.
            let buffers = source.buffer_pool().unwrap();
            let mut read = Vec::new();
            let mut positions = Vec::new();
            while let Some(batch) = source.next_batch().unwrap() {
                assert!(batch.len() <= batch_rows);
                assert_eq!(batch.data.len(), batch.ends.last().unwrap() + 1);
                read.extend(records(&batch));
                positions.push((read.len(), batch.position.unwrap()));
                if positions.len() % 2 == 0 {
                    buffers.give(batch.data);
                }
            }
            assert_eq!(read, expected, "batch_rows {batch_rows}");

            // A resumed source reads exactly what followed each position.
            for (taken, position) in positions.iter().step_by(positions.len() / 5 + 1) {
                let mut resumed =
                    FileSource::new(std::slice::from_ref(&pattern), None, 5000, Some(position))
                        .unwrap();
                let mut rest = Vec::new();
                while let Some(batch) = resumed.next_batch().unwrap() {
                    rest.extend(records(&batch));
                }
                assert_eq!(rest, expected[*taken..], "batch_rows {batch_rows}");
            }
        }
    }

    #[test]
    fn a_line_far_longer_than_a_read_is_one_record() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events.jsonl");
        let long = format!("{{\"pad\":\"{}\"}}", "y".repeat(3 * MIN_READ_BYTES));
        std::fs::write(&path, format!("{{\"a\":1}}\n{long}\n{{\"a\":2}}\n")).unwrap();
        let pattern = path.display().to_string();
        let mut source = FileSource::new(&[pattern], None, 1, None).unwrap();
        let mut read = Vec::new();
        while let Some(batch) = source.next_batch().unwrap() {
            read.extend(records(&batch));
        }
        assert_eq!(
            read,
            [
                ("{\"a\":1}".to_string(), 1),
                (long, 2),
                ("{\"a\":2}".to_string(), 3)
            ]
        );
    }
}
