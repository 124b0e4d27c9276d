//! `clean`: the silver step for EventSim events.
//!
//! Every row either goes to `out` (normalised, with an `event_time` timestamp column) or to
//! `rejects` with one of these reasons: `missing_ts`, `ts_out_of_range`, `missing_user_id`,
//! `negative_duration`, `duplicate`.
use foldhash::fast::FixedState;
use serde::Deserialize;
use sluice_sdk::arrow_array::TimestampMillisecondArray;
use sluice_sdk::arrow_array::builder::StringBuilder;
use sluice_sdk::prelude::*;
use std::collections::HashSet;
use std::hash::BuildHasher;
use std::sync::Arc;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CleanConfig {
    /// Earliest plausible event time, epoch ms (default 2000-01-01).
    pub min_ts_ms: i64,
    /// Latest plausible event time, epoch ms (default 2100-01-01).
    pub max_ts_ms: i64,
    /// `auth` values whose events must carry a `userId`.
    pub user_required_for: Vec<String>,
    /// String columns to lower-case / upper-case (all string columns are trimmed).
    pub lowercase: Vec<String>,
    pub uppercase: Vec<String>,
    /// Reject exact duplicates (all columns but `_`-prefixed metadata) within a batch.
    pub dedupe: bool,
}

impl Default for CleanConfig {
    fn default() -> Self {
        CleanConfig {
            min_ts_ms: 946_684_800_000,
            max_ts_ms: 4_102_444_800_000,
            user_required_for: vec!["Logged In".into(), "Cancelled".into()],
            lowercase: vec!["level".into()],
            uppercase: vec!["state".into(), "gender".into()],
            dedupe: true,
        }
    }
}

pub struct Clean {
    config: CleanConfig,
}

#[derive(Clone, Copy)]
enum Case {
    Keep,
    Lower,
    Upper,
}

impl Clean {
    fn case_of(&self, column: &str) -> Case {
        if self.config.lowercase.iter().any(|c| c == column) {
            Case::Lower
        } else if self.config.uppercase.iter().any(|c| c == column) {
            Case::Upper
        } else {
            Case::Keep
        }
    }

    /// Trims every string column and applies the configured case. A column whose values are
    /// all normalised already is passed on as it is, without a copy.
    fn normalise(&self, batch: &RecordBatch) -> Result<RecordBatch, PluginError> {
        let schema = batch.schema();
        let columns = schema
            .fields()
            .iter()
            .zip(batch.columns())
            .map(|(field, column)| match field.data_type() {
                DataType::Utf8 if !field.name().starts_with('_') => {
                    normalise_strings(column, self.case_of(field.name()))
                }
                _ => column.clone(),
            })
            .collect();
        Ok(RecordBatch::try_new(schema, columns)?)
    }

    fn reasons(&self, batch: &RecordBatch) -> Result<Vec<Option<String>>, PluginError> {
        let ts = batch.i64_column("ts")?;
        let user = batch.column_by_name("userId");
        let auth = batch.column_by_name("auth").map(|a| a.as_string::<i32>());
        let duration = batch
            .column_by_name("duration")
            .map(|d| d.as_primitive::<sluice_sdk::arrow_array::types::Float64Type>());
        let duplicates = if self.config.dedupe {
            duplicate_rows(batch)?
        } else {
            vec![false; batch.num_rows()]
        };

        Ok((0..batch.num_rows())
            .map(|row| {
                let reason = if ts.is_null(row) {
                    "missing_ts"
                } else if !(self.config.min_ts_ms..=self.config.max_ts_ms).contains(&ts.value(row))
                {
                    "ts_out_of_range"
                } else if user.is_some_and(|u| u.is_null(row))
                    && auth.is_some_and(|a| {
                        a.is_valid(row)
                            && self
                                .config
                                .user_required_for
                                .iter()
                                .any(|r| r == a.value(row))
                    })
                {
                    "missing_user_id"
                } else if duration.is_some_and(|d| d.is_valid(row) && d.value(row) < 0.0) {
                    "negative_duration"
                } else if duplicates[row] {
                    "duplicate"
                } else {
                    return None;
                };
                Some(reason.to_string())
            })
            .collect())
    }
}

fn normalised(value: &str, case: Case) -> std::borrow::Cow<'_, str> {
    let trimmed = value.trim();
    // Nearly every value is ASCII: a byte test is several times cheaper than char decoding.
    // Most columns keep their case, so their values are not scanned at all.
    let changes_case = match case {
        Case::Keep => false,
        Case::Lower if trimmed.is_ascii() => trimmed.bytes().any(|b| b.is_ascii_uppercase()),
        Case::Upper if trimmed.is_ascii() => trimmed.bytes().any(|b| b.is_ascii_lowercase()),
        Case::Lower => trimmed.chars().any(char::is_uppercase),
        Case::Upper => trimmed.chars().any(char::is_lowercase),
    };
    match (changes_case, case) {
        (false, _) | (true, Case::Keep) => std::borrow::Cow::Borrowed(trimmed),
        (true, Case::Lower) => std::borrow::Cow::Owned(trimmed.to_lowercase()),
        (true, Case::Upper) => std::borrow::Cow::Owned(trimmed.to_uppercase()),
    }
}

/// Whether `normalised` would give `value` back as it is. Nearly every value of a column
/// that keeps its case starts and ends with a visible ASCII character, and then trimming
/// cannot change it: two bytes tell, where `trim` decodes characters from both ends.
fn is_normalised(value: &str, case: Case) -> bool {
    let visible = |b: &u8| b.is_ascii() && !(*b as char).is_whitespace();
    let bytes = value.as_bytes();
    if matches!(case, Case::Keep)
        && bytes.first().is_none_or(visible)
        && bytes.last().is_none_or(visible)
    {
        return true;
    }
    matches!(normalised(value, case), std::borrow::Cow::Borrowed(n) if n.len() == value.len())
}

fn normalise_strings(column: &ArrayRef, case: Case) -> ArrayRef {
    let strings = column.as_string::<i32>();
    let unchanged = strings.iter().flatten().all(|v| is_normalised(v, case));
    if unchanged {
        return column.clone();
    }
    let mut builder = StringBuilder::with_capacity(strings.len(), strings.value_data().len());
    for value in strings.iter() {
        match value {
            Some(v) => builder.append_value(normalised(v, case)),
            None => builder.append_null(),
        }
    }
    Arc::new(builder.finish())
}

/// Marks every row that repeats an earlier row of the batch on all data columns.
fn duplicate_rows(batch: &RecordBatch) -> Result<Vec<bool>, PluginError> {
    let schema = batch.schema();
    let columns: Vec<ArrayRef> = schema
        .fields()
        .iter()
        .zip(batch.columns())
        .filter(|(field, _)| !field.name().starts_with('_'))
        .map(|(_, column)| column.clone())
        .collect();
    let rows = batch.num_rows();
    // Fixed-width columns first: they are cheap to hash, and in event data (times, ids,
    // counters) nearly unique per row together. Strings are hashed only when those leave
    // too many different rows with the same hash.
    let (fixed, rest): (Vec<ArrayRef>, Vec<ArrayRef>) = columns
        .iter()
        .cloned()
        .partition(|c| c.data_type().primitive_width().is_some());
    let mut hashes = vec![0u64; rows];
    if !fixed.is_empty() {
        mix_row_hashes(&mut hashes, &fixed);
        if let Some(repeats) = repeated_rows(&hashes, &columns, rows / 64) {
            return Ok(repeats);
        }
    }
    mix_row_hashes(&mut hashes, &rest);
    Ok(repeated_rows(&hashes, &columns, usize::MAX).expect("no limit on collisions"))
}

/// Marks every row equal on all `columns` to an earlier one, finding candidates by `hashes`;
/// `None` once more than `collisions` rows met a different row with their hash.
// A `Row`'s cell counts comparisons; it takes no part in its hash or equality.
#[allow(clippy::mutable_key_type)]
fn repeated_rows(hashes: &[u64], columns: &[ArrayRef], collisions: usize) -> Option<Vec<bool>> {
    let met = std::cell::Cell::new(0);
    let mut seen = HashSet::with_capacity_and_hasher(hashes.len(), FixedState::default());
    let mut repeats = Vec::with_capacity(hashes.len());
    for (index, &hash) in hashes.iter().enumerate() {
        repeats.push(!seen.insert(Row {
            hash,
            index,
            columns,
            collisions: &met,
        }));
        if met.get() > collisions {
            return None;
        }
    }
    Some(repeats)
}

/// A row of a batch, found by its hash ([`mix_row_hashes`]) and compared value by value.
/// Rows are hashed column by column straight from the Arrow buffers: encoding every row with
/// arrow-row first was half of the plugin's time.
struct Row<'a> {
    hash: u64,
    index: usize,
    columns: &'a [ArrayRef],
    /// Comparisons of rows with equal hashes that found them different.
    collisions: &'a std::cell::Cell<usize>,
}

impl std::hash::Hash for Row<'_> {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        state.write_u64(self.hash);
    }
}

impl PartialEq for Row<'_> {
    // Only rows whose hashes match get here — duplicates, nearly always — so comparing
    // one-row slices (which allocates) costs nothing that matters.
    fn eq(&self, other: &Self) -> bool {
        if self.hash != other.hash {
            return false;
        }
        let equal = self
            .columns
            .iter()
            .all(|c| *c.slice(self.index, 1) == *c.slice(other.index, 1));
        if !equal {
            self.collisions.set(self.collisions.get() + 1);
        }
        equal
    }
}

impl Eq for Row<'_> {}

/// Mixes each row's values of `columns` into its hash. Strings and fixed-width values are
/// hashed; a column of any other type adds nothing (its rows are still compared in full).
fn mix_row_hashes(hashes: &mut [u64], columns: &[ArrayRef]) {
    // A fast unkeyed hash is safe: rows are compared in full on a hash match.
    let state = FixedState::default();
    let rows = hashes.len();
    for column in columns {
        let nulls = column.logical_nulls();
        let valid = |row: usize| nulls.as_ref().is_none_or(|n| n.is_valid(row));
        let mut mix = |row: usize, value: &[u8]| {
            hashes[row] = state.hash_one((hashes[row], value));
        };
        if let Some(strings) = column.as_string_opt::<i32>() {
            for row in 0..rows {
                mix(
                    row,
                    if valid(row) {
                        strings.value(row).as_bytes()
                    } else {
                        NULL
                    },
                );
            }
        } else if let Some(width) = column.data_type().primitive_width() {
            let data = column.to_data();
            let values = &data.buffers()[0].as_slice()[data.offset() * width..];
            if width == 8 {
                // Times, ids, floats: one word each, hashed as one (as bytes, a length and a
                // byte loop came with it: twice the cost).
                for (row, value) in values.chunks_exact(8).take(rows).enumerate() {
                    let word = if valid(row) {
                        u64::from_le_bytes(value.try_into().expect("8 bytes"))
                    } else {
                        NULL_WORD
                    };
                    hashes[row] = state.hash_one((hashes[row], word));
                }
            } else {
                for (row, value) in values.chunks_exact(width).take(rows).enumerate() {
                    mix(row, if valid(row) { value } else { NULL });
                }
            }
        }
    }
}

/// A null hashes like an empty value, or a word of zeros; rows are compared in full on a
/// hash match anyway.
const NULL: &[u8] = &[];
const NULL_WORD: u64 = 0;

/// Adds `event_time` (timestamp, ms, UTC) from the epoch-ms `ts` column.
fn with_event_time(batch: &RecordBatch) -> Result<RecordBatch, PluginError> {
    let ts = batch.i64_column("ts")?;
    let event_time = TimestampMillisecondArray::new(ts.values().clone(), ts.nulls().cloned())
        .with_timezone("UTC");
    let mut fields: Vec<_> = batch.schema().fields().iter().cloned().collect();
    fields.push(Arc::new(Field::new(
        "event_time",
        event_time.data_type().clone(),
        true,
    )));
    let mut columns = batch.columns().to_vec();
    columns.push(Arc::new(event_time));
    Ok(RecordBatch::try_new(
        Arc::new(Schema::new(fields)),
        columns,
    )?)
}

impl Plugin for Clean {
    fn init(config: &Config) -> Result<Self, PluginError> {
        let config: CleanConfig = config.parse()?;
        if config.min_ts_ms > config.max_ts_ms {
            return Err(PluginError::Config("min_ts_ms is after max_ts_ms".into()));
        }
        Ok(Clean { config })
    }

    fn inputs(&self) -> Vec<String> {
        vec!["ts".into()]
    }

    fn process(&mut self, batch: RecordBatch, out: &mut Outputs) -> Result<(), PluginError> {
        let batch = self.normalise(&batch)?;
        let reasons = self.reasons(&batch)?;
        out.split(&with_event_time(&batch)?, &reasons)
    }
}

sluice_sdk::export_plugin!(Clean);
