//! JSON lines → Arrow for flat declared schemas (strings, integers, floats, booleans,
//! millisecond timestamps): every pipeline schema the YAML can declare, and EventSim's.
//!
//! arrow-json first builds a tape of the whole batch, then looks each object key up by name
//! (SipHash and memcmp per key and row): that was a third of the host's CPU on the 1M-event
//! benchmark. Here each record is parsed once, straight into column buffers. Object keys are
//! matched against the field the same position held in the previous record (producers write
//! keys in a fixed order) before any search. A record that fails is rolled back on its own,
//! so one bad line never makes the batch decode twice.
//!
//! What is accepted is what arrow-json accepts, with one deliberate difference: a number with
//! a fraction for an integer field is refused (arrow-json truncates 1.5 to 1, silently).
//! - Keys the schema does not declare are skipped, whatever their value.
//! - A missing key or `null` is a null; for a field declared not nullable, the record is refused.
//! - Strings: JSON strings only. Integers: integral numbers in range (`5`, `5.0`, `5e2`) or
//!   strings holding an integer. Floats: numbers, or strings holding one. Booleans: `true` and
//!   `false`. Timestamps: epoch milliseconds as a number, or an RFC 3339 string.
//! - A key given twice keeps its last value.
use arrow::array::{ArrayRef, BooleanArray, Float64Array, Int32Array, Int64Array, StringArray};
use arrow::array::{BooleanBufferBuilder, TimestampMillisecondArray};
use arrow::buffer::{Buffer, NullBuffer, OffsetBuffer, ScalarBuffer};
use arrow::datatypes::{DataType, SchemaRef, TimeUnit};
use std::sync::Arc;

/// Why a record did not decode: the field (when the problem is in a value) and what is wrong.
#[derive(Debug, Clone, PartialEq)]
pub struct RecordError {
    pub field: Option<String>,
    pub message: String,
    /// Byte position in the record.
    pub at: usize,
}

impl std::fmt::Display for RecordError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.field {
            Some(field) => write!(f, "field `{field}`: {}", self.message),
            None => write!(f, "invalid JSON at byte {}: {}", self.at, self.message),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Kind {
    Utf8,
    Int32,
    Int64,
    Float64,
    Boolean,
    TimestampMs,
}

impl Kind {
    fn of(data_type: &DataType) -> Option<Kind> {
        Some(match data_type {
            DataType::Utf8 => Kind::Utf8,
            DataType::Int32 => Kind::Int32,
            DataType::Int64 => Kind::Int64,
            DataType::Float64 => Kind::Float64,
            DataType::Boolean => Kind::Boolean,
            DataType::Timestamp(TimeUnit::Millisecond, _) => Kind::TimestampMs,
            _ => return None,
        })
    }

    fn expected(self) -> &'static str {
        match self {
            Kind::Utf8 => "a string",
            Kind::Int32 | Kind::Int64 => "an integer",
            Kind::Float64 => "a number",
            Kind::Boolean => "true or false",
            Kind::TimestampMs => "epoch milliseconds or an RFC 3339 string",
        }
    }
}

struct Field {
    name: Box<[u8]>,
    /// `"name":` as it appears in compact JSON, for the fast key match.
    token: Box<[u8]>,
    kind: Kind,
    nullable: bool,
}

/// Marks a key position whose key is not a declared field.
const UNKNOWN: u16 = u16::MAX;

/// Nesting deeper than this in a skipped value is refused (the parser recurses).
const MAX_DEPTH: usize = 128;

/// The most a string column reserves up front; beyond it, it grows as it needs.
const MAX_STRING_RESERVE: usize = 32 << 20;

/// A decoder for one flat schema. Not shared between threads: it remembers key order.
pub struct FlatJsonDecoder {
    schema: SchemaRef,
    fields: Vec<Field>,
    /// Field index of the n-th key of the last record.
    order: Vec<u16>,
    /// A field is declared not nullable: every record's values are checked for nulls.
    has_required: bool,
    /// Per field, the string bytes a row took in the last batch: the next batch's buffer is
    /// sized from it instead of doubling its way up (a copy and fresh pages each time).
    string_bytes_per_row: Vec<usize>,
}

impl FlatJsonDecoder {
    /// `None` when the schema has a column type this decoder does not handle (nested types,
    /// say): arrow-json decodes those.
    pub fn new(schema: SchemaRef) -> Option<Self> {
        if schema.fields().len() >= UNKNOWN as usize {
            return None;
        }
        let fields = schema
            .fields()
            .iter()
            .map(|f| {
                Some(Field {
                    name: f.name().as_bytes().into(),
                    token: format!("\"{}\":", f.name()).into_bytes().into(),
                    kind: Kind::of(f.data_type())?,
                    nullable: f.is_nullable(),
                })
            })
            .collect::<Option<Vec<_>>>()?;
        Some(FlatJsonDecoder {
            has_required: fields.iter().any(|f| !f.nullable),
            string_bytes_per_row: vec![16; fields.len()],
            schema,
            fields,
            order: Vec::new(),
        })
    }

    /// Decodes `records` (each one JSON object). Returns the columns of the records that
    /// decoded, in schema order, and the index and error of each that did not. `utf8`: every
    /// record is known to be UTF-8 (the caller checked the batch in one go, which costs a
    /// fraction of checking record by record); otherwise each is checked.
    pub fn decode<'a>(
        &mut self,
        records: impl ExactSizeIterator<Item = &'a [u8]>,
        utf8: bool,
    ) -> (Vec<ArrayRef>, Vec<usize>, Vec<(usize, RecordError)>) {
        let capacity = records.len();
        let mut columns: Vec<Column> = self
            .fields
            .iter()
            .zip(&self.string_bytes_per_row)
            .map(|(f, &bytes_per_row)| Column::new(f.kind, capacity, bytes_per_row))
            .collect();
        let mut decoded = Vec::with_capacity(capacity);
        let mut failed = Vec::new();
        let mut row = 0;
        for (index, record) in records.enumerate() {
            match self.record(&mut columns, record, row, utf8) {
                Ok(()) => {
                    decoded.push(index);
                    row += 1;
                }
                Err(error) => {
                    for column in &mut columns {
                        column.truncate(row);
                    }
                    failed.push((index, error));
                }
            }
        }
        for (column, bytes_per_row) in columns.iter().zip(&mut self.string_bytes_per_row) {
            if let Values::Utf8 { bytes, .. } = &column.values
                && row > 0
            {
                // An eighth more: a batch a little longer than the last still fits.
                let average = bytes.len().div_ceil(row);
                *bytes_per_row = average + average / 8;
            }
        }
        let arrays = columns
            .into_iter()
            .zip(self.schema.fields())
            .map(|(column, field)| column.finish(field.data_type()))
            .collect();
        (arrays, decoded, failed)
    }

    /// Parses one record into row `row` of the columns.
    fn record(
        &mut self,
        columns: &mut [Column],
        record: &[u8],
        row: usize,
        utf8: bool,
    ) -> Result<(), RecordError> {
        if !utf8 && let Err(e) = simdutf8::compat::from_utf8(record) {
            return Err(RecordError {
                field: None,
                message: "not UTF-8".into(),
                at: e.valid_up_to(),
            });
        }
        let mut p = Parser {
            bytes: record,
            at: 0,
            scratch: Vec::new(),
        };
        p.skip_whitespace();
        if p.peek() != Some(b'{') {
            return Err(p.error(format!(
                "expected a JSON object, found {}",
                p.describe_next()
            )));
        }
        p.at += 1;
        p.skip_whitespace();
        // Declared fields given a value; when that is all of them, none needs a null.
        let mut filled = 0;
        if p.peek() == Some(b'}') {
            p.at += 1;
        } else {
            let mut n = 0;
            loop {
                if p.peek() != Some(b'"') {
                    return Err(p.error(format!(
                        "expected a key in quotes, found {}",
                        p.describe_next()
                    )));
                }
                // Fast path: the key the same position held last time, written compactly. A
                // name is matched whole, quotes and colon included, so "ts" is not "tsx".
                let hinted = self.order.get(n).copied().filter(|&h| {
                    h != UNKNOWN && starts_with(&record[p.at..], &self.fields[h as usize].token)
                });
                let field = match hinted {
                    Some(hint) => {
                        p.at += self.fields[hint as usize].token.len();
                        Some(hint as usize)
                    }
                    None => {
                        let field = {
                            let key = p.key()?;
                            self.lookup(key, n)
                        };
                        p.skip_whitespace();
                        p.expect(b':')?;
                        field
                    }
                };
                p.skip_whitespace();
                match field {
                    Some(index) => {
                        let field = &self.fields[index];
                        let column = &mut columns[index];
                        if column.len > row {
                            // A repeated key: its last value counts.
                            column.truncate(row);
                        } else {
                            filled += 1;
                        }
                        p.value_into(field, column)?;
                    }
                    None => p.skip_value(0)?,
                }
                n += 1;
                p.skip_whitespace();
                match p.peek() {
                    Some(b',') => {
                        p.at += 1;
                        p.skip_whitespace();
                    }
                    Some(b'}') => {
                        p.at += 1;
                        break;
                    }
                    _ => {
                        return Err(
                            p.error(format!("expected `,` or `}}`, found {}", p.describe_next()))
                        );
                    }
                }
            }
        }
        p.skip_whitespace();
        if p.at < record.len() {
            return Err(p.error(format!(
                "expected the end of the record, found {}",
                p.describe_next()
            )));
        }
        if filled < self.fields.len() || self.has_required {
            for (field, column) in self.fields.iter().zip(columns.iter_mut()) {
                if column.len == row {
                    if !field.nullable {
                        return Err(RecordError {
                            field: Some(String::from_utf8_lossy(&field.name).into_owned()),
                            message: "missing, and declared not nullable".into(),
                            at: record.len(),
                        });
                    }
                    column.push_null();
                } else if !field.nullable && column.is_null_at(row) {
                    return Err(RecordError {
                        field: Some(String::from_utf8_lossy(&field.name).into_owned()),
                        message: "null, and declared not nullable".into(),
                        at: record.len(),
                    });
                }
            }
        }
        Ok(())
    }

    /// The declared field named `key`, the `n`-th key of its record.
    fn lookup(&mut self, key: &[u8], n: usize) -> Option<usize> {
        if let Some(&hint) = self.order.get(n)
            && hint != UNKNOWN
            && *self.fields[hint as usize].name == *key
        {
            return Some(hint as usize);
        }
        let found = self.fields.iter().position(|f| *f.name == *key);
        let remembered = found.map_or(UNKNOWN, |i| i as u16);
        if n < self.order.len() {
            self.order[n] = remembered;
        } else if n == self.order.len() {
            self.order.push(remembered);
        }
        found
    }
}

/// One column being built: values plus validity.
struct Column {
    values: Values,
    /// Validity, from the first null on: most columns of a batch have none, and a bit per
    /// value was 6 % of decoding.
    valid: Option<BooleanBufferBuilder>,
    /// Rows appended (including nulls).
    len: usize,
}

enum Values {
    Utf8 { offsets: Vec<i32>, bytes: Vec<u8> },
    Int32(Vec<i32>),
    Int64(Vec<i64>),
    Float64(Vec<f64>),
    Boolean(BooleanBufferBuilder),
}

impl Column {
    /// `bytes_per_row`: what a string column's text is expected to take.
    fn new(kind: Kind, capacity: usize, bytes_per_row: usize) -> Self {
        let values = match kind {
            Kind::Utf8 => {
                let mut offsets = Vec::with_capacity(capacity + 1);
                offsets.push(0);
                Values::Utf8 {
                    offsets,
                    // Bounded: a few long strings in a short batch say little of the next.
                    bytes: Vec::with_capacity((capacity * bytes_per_row).min(MAX_STRING_RESERVE)),
                }
            }
            Kind::Int32 => Values::Int32(Vec::with_capacity(capacity)),
            Kind::Int64 | Kind::TimestampMs => Values::Int64(Vec::with_capacity(capacity)),
            Kind::Float64 => Values::Float64(Vec::with_capacity(capacity)),
            Kind::Boolean => Values::Boolean(BooleanBufferBuilder::new(capacity)),
        };
        Column {
            values,
            valid: None,
            len: 0,
        }
    }

    fn push_null(&mut self) {
        match &mut self.values {
            Values::Utf8 { offsets, bytes } => offsets.push(bytes.len() as i32),
            Values::Int32(v) => v.push(0),
            Values::Int64(v) => v.push(0),
            Values::Float64(v) => v.push(0.0),
            Values::Boolean(v) => v.append(false),
        }
        let len = self.len;
        self.valid
            .get_or_insert_with(|| {
                let mut valid = BooleanBufferBuilder::new(len.max(64) * 2);
                valid.append_n(len, true);
                valid
            })
            .append(false);
        self.len += 1;
    }

    fn pushed(&mut self) {
        if let Some(valid) = &mut self.valid {
            valid.append(true);
        }
        self.len += 1;
    }

    fn is_null_at(&self, row: usize) -> bool {
        self.valid.as_ref().is_some_and(|v| !v.get_bit(row))
    }

    /// Drops every row from `rows` on.
    fn truncate(&mut self, rows: usize) {
        if self.len <= rows {
            return;
        }
        match &mut self.values {
            Values::Utf8 { offsets, bytes } => {
                offsets.truncate(rows + 1);
                bytes.truncate(offsets[rows] as usize);
            }
            Values::Int32(v) => v.truncate(rows),
            Values::Int64(v) => v.truncate(rows),
            Values::Float64(v) => v.truncate(rows),
            Values::Boolean(v) => v.truncate(rows),
        }
        if let Some(valid) = &mut self.valid {
            valid.truncate(rows);
        }
        self.len = rows;
    }

    fn finish(mut self, data_type: &DataType) -> ArrayRef {
        let nulls = self
            .valid
            .as_mut()
            .map(|v| NullBuffer::new(v.finish()))
            .filter(|n| n.null_count() > 0);
        match self.values {
            Values::Utf8 { offsets, bytes } => {
                let offsets = OffsetBuffer::new(ScalarBuffer::from(offsets));
                // SAFETY: every value is UTF-8, so the check `new` makes (0.6 % of a run) is
                // skipped: each is the text between two quotes of a record that is UTF-8, or
                // what unescaping one wrote (whole characters); offsets only grow, the last is
                // the length (both checked to fit an i32), one per row and one more, as the
                // validity has a bit per row.
                Arc::new(unsafe {
                    StringArray::new_unchecked(offsets, Buffer::from_vec(bytes), nulls)
                })
            }
            Values::Int32(v) => Arc::new(Int32Array::new(v.into(), nulls)),
            Values::Int64(v) => match data_type {
                DataType::Timestamp(_, zone) => Arc::new(
                    TimestampMillisecondArray::new(v.into(), nulls).with_timezone_opt(zone.clone()),
                ),
                _ => Arc::new(Int64Array::new(v.into(), nulls)),
            },
            Values::Float64(v) => Arc::new(Float64Array::new(v.into(), nulls)),
            Values::Boolean(mut v) => Arc::new(BooleanArray::new(v.finish(), nulls)),
        }
    }
}

/// A cursor over one record.
struct Parser<'a> {
    bytes: &'a [u8],
    at: usize,
    /// Unescaped text of the current key or string, when it had escapes.
    scratch: Vec<u8>,
}

/// A number as written: its text and whether it has a fraction or exponent, and its digits
/// read while it was scanned.
struct Number<'a> {
    text: &'a [u8],
    integral: bool,
    negative: bool,
    has_exponent: bool,
    /// The digits without the point, as an integer (meaningful up to 19 digits).
    mantissa: u64,
    digits: usize,
    fraction_digits: usize,
}

/// Powers of ten that are exact in an f64.
const EXACT_POWERS_OF_TEN: [f64; 23] = [
    1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15, 1e16,
    1e17, 1e18, 1e19, 1e20, 1e21, 1e22,
];

impl Number<'_> {
    /// The value, when the number is written as an integer and fits an i64.
    fn as_i64(&self) -> Option<i64> {
        if !self.integral {
            return None;
        }
        if self.digits <= 18 {
            // Below 10^18: exact, and no overflow.
            let value = self.mantissa as i64;
            return Some(if self.negative { -value } else { value });
        }
        parse_i64(self.text)
    }

    /// The nearest f64 (JSON's grammar is a subset of what both parsers take; one too large
    /// is infinite). lexical reads the bytes as they are, where `str::parse` wants a UTF-8
    /// check first of text `number` has already found to be ASCII.
    fn to_f64(&self) -> f64 {
        // Clinger's fast path, for the short decimals most values are (23.4, -118.2437): up to
        // 15 digits are exact in an f64, and so is 10^k up to 22, so one correctly rounded
        // division gives the nearest f64.
        if !self.has_exponent && self.digits <= 15 && self.fraction_digits <= 22 {
            let value = self.mantissa as f64 / EXACT_POWERS_OF_TEN[self.fraction_digits];
            return if self.negative { -value } else { value };
        }
        lexical_core::parse(self.text)
            .ok()
            .or_else(|| parse_f64(self.text))
            .expect("JSON numbers parse as f64")
    }
}

impl<'a> Parser<'a> {
    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.at).copied()
    }

    fn skip_whitespace(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.peek() {
            self.at += 1;
        }
    }

    #[cold]
    fn error(&self, message: String) -> RecordError {
        RecordError {
            field: None,
            message,
            at: self.at,
        }
    }

    fn expect(&mut self, byte: u8) -> Result<(), RecordError> {
        if self.peek() == Some(byte) {
            self.at += 1;
            Ok(())
        } else {
            Err(self.error(format!(
                "expected `{}`, found {}",
                byte as char,
                self.describe_next()
            )))
        }
    }

    #[cold]
    fn describe_next(&self) -> String {
        match self.peek() {
            None => "the end of the record".into(),
            Some(_) => {
                let rest = &self.bytes[self.at..];
                let shown = String::from_utf8_lossy(&rest[..rest.len().min(24)]);
                let ellipsis = if rest.len() > 24 { "…" } else { "" };
                format!("`{shown}{ellipsis}`")
            }
        }
    }

    /// What the value at the cursor is, for "expected X, found Y".
    fn describe_value(&self) -> &'static str {
        match self.peek() {
            Some(b'"') => "a string",
            Some(b'-' | b'0'..=b'9') => "a number",
            Some(b't' | b'f') => "a boolean",
            Some(b'{') => "an object",
            Some(b'[') => "an array",
            Some(b'n') => "null",
            _ => "no value",
        }
    }

    /// An object key (the cursor is on its opening quote).
    fn key(&mut self) -> Result<&[u8], RecordError> {
        let (start, end, escaped) = self.string_span()?;
        Ok(if escaped {
            &self.scratch
        } else {
            &self.bytes[start..end]
        })
    }

    /// Scans the string at the cursor (on its opening quote) and moves past it. Returns the
    /// raw span between the quotes and whether it had escapes, in which case its text is in
    /// `scratch`.
    fn string_span(&mut self) -> Result<(usize, usize, bool), RecordError> {
        let start = self.at + 1;
        let rest = &self.bytes[start..];
        let Some(stop) = quote_or_backslash(rest) else {
            self.at = self.bytes.len();
            return Err(self.error("unterminated string".into()));
        };
        if rest[stop] == b'"' {
            self.at = start + stop + 1;
            return Ok((start, start + stop, false));
        }
        self.scratch.clear();
        self.scratch.extend_from_slice(&rest[..stop]);
        self.at = start + stop;
        loop {
            // At a backslash.
            let escape = self.bytes.get(self.at + 1).copied();
            self.at += 2;
            match escape {
                Some(b'"') => self.scratch.push(b'"'),
                Some(b'\\') => self.scratch.push(b'\\'),
                Some(b'/') => self.scratch.push(b'/'),
                Some(b'b') => self.scratch.push(0x08),
                Some(b'f') => self.scratch.push(0x0c),
                Some(b'n') => self.scratch.push(b'\n'),
                Some(b'r') => self.scratch.push(b'\r'),
                Some(b't') => self.scratch.push(b'\t'),
                Some(b'u') => {
                    let c = self.unicode_escape()?;
                    let mut utf8 = [0; 4];
                    self.scratch
                        .extend_from_slice(c.encode_utf8(&mut utf8).as_bytes());
                }
                _ => {
                    self.at -= 2;
                    return Err(self.error(format!("invalid escape {}", self.describe_next())));
                }
            }
            let rest = &self.bytes[self.at..];
            let Some(stop) = quote_or_backslash(rest) else {
                self.at = self.bytes.len();
                return Err(self.error("unterminated string".into()));
            };
            self.scratch.extend_from_slice(&rest[..stop]);
            self.at += stop;
            if rest[stop] == b'"' {
                let end = self.at;
                self.at += 1;
                return Ok((start, end, true));
            }
        }
    }

    /// The character of a `\uXXXX` escape (a surrogate pair takes two); the cursor is after `u`.
    fn unicode_escape(&mut self) -> Result<char, RecordError> {
        let high = self.hex4()?;
        let code = if (0xD800..0xDC00).contains(&high) {
            if self.bytes.get(self.at..self.at + 2) != Some(b"\\u") {
                return Err(self.error("a lone UTF-16 surrogate in a \\u escape".into()));
            }
            self.at += 2;
            let low = self.hex4()?;
            if !(0xDC00..0xE000).contains(&low) {
                return Err(self.error("a lone UTF-16 surrogate in a \\u escape".into()));
            }
            0x10000 + ((high - 0xD800) << 10) + (low - 0xDC00)
        } else {
            high
        };
        char::from_u32(code)
            .ok_or_else(|| self.error("a lone UTF-16 surrogate in a \\u escape".into()))
    }

    fn hex4(&mut self) -> Result<u32, RecordError> {
        let digits = self
            .bytes
            .get(self.at..self.at + 4)
            .and_then(|d| std::str::from_utf8(d).ok())
            .and_then(|d| u32::from_str_radix(d, 16).ok())
            .ok_or_else(|| self.error("invalid \\u escape".into()))?;
        self.at += 4;
        Ok(digits)
    }

    /// The number at the cursor, checked against JSON's grammar. Inlined: returned through
    /// memory, the `Result` stalled its callers on store forwarding (most of `integer`'s time).
    #[inline(always)]
    fn number(&mut self) -> Result<Number<'a>, RecordError> {
        let bytes = self.bytes;
        let start = self.at;
        let mut at = start;
        let mut mantissa = 0u64;
        let mut digits = |at: &mut usize| {
            let from = *at;
            // Eight digits at a time while eight follow: epoch milliseconds have 13.
            while let Some(value) = bytes
                .get(*at..*at + 8)
                .and_then(|chunk| eight_digits(chunk.try_into().expect("8 bytes")))
            {
                mantissa = mantissa.wrapping_mul(100_000_000).wrapping_add(value);
                *at += 8;
            }
            while let Some(&d) = bytes.get(*at).filter(|d| d.is_ascii_digit()) {
                mantissa = mantissa.wrapping_mul(10).wrapping_add(u64::from(d - b'0'));
                *at += 1;
            }
            *at - from
        };
        let negative = bytes.get(at) == Some(&b'-');
        if negative {
            at += 1;
        }
        let whole = digits(&mut at);
        if whole == 0 || (whole > 1 && bytes[at - whole] == b'0') {
            self.at = start;
            return Err(self.error(format!("invalid number {}", self.describe_next())));
        }
        let mut fraction_digits = 0;
        if bytes.get(at) == Some(&b'.') {
            at += 1;
            fraction_digits = digits(&mut at);
            if fraction_digits == 0 {
                return Err(self.error(format!("invalid number {}", self.describe_next())));
            }
        }
        // The exponent's digits are not the mantissa's: scanned apart.
        let mantissa = mantissa;
        let mut has_exponent = false;
        if let Some(b'e' | b'E') = bytes.get(at) {
            at += 1;
            has_exponent = true;
            if let Some(b'+' | b'-') = bytes.get(at) {
                at += 1;
            }
            let from = at;
            while bytes.get(at).is_some_and(u8::is_ascii_digit) {
                at += 1;
            }
            if at == from {
                return Err(self.error(format!("invalid number {}", self.describe_next())));
            }
        }
        self.at = at;
        Ok(Number {
            text: &bytes[start..at],
            integral: fraction_digits == 0 && !has_exponent,
            negative,
            has_exponent,
            mantissa,
            digits: whole + fraction_digits,
            fraction_digits,
        })
    }

    fn literal(&mut self, word: &[u8]) -> Result<(), RecordError> {
        if self.bytes[self.at..].starts_with(word) {
            self.at += word.len();
            Ok(())
        } else {
            Err(self.error(format!("invalid literal {}", self.describe_next())))
        }
    }

    /// Parses the value at the cursor into `column` as `field` declares it.
    fn value_into(&mut self, field: &Field, column: &mut Column) -> Result<(), RecordError> {
        let in_field = |mut e: RecordError| {
            e.field = Some(String::from_utf8_lossy(&field.name).into_owned());
            e
        };
        let mismatch = |p: &Parser| {
            in_field(p.error(format!(
                "expected {}, found {}",
                field.kind.expected(),
                p.describe_value()
            )))
        };
        if self.peek() == Some(b'n') {
            self.literal(b"null").map_err(in_field)?;
            column.push_null();
            return Ok(());
        }
        match (&mut column.values, field.kind) {
            (Values::Utf8 { offsets, bytes }, _) => {
                if self.peek() != Some(b'"') {
                    return Err(mismatch(self));
                }
                let (start, end, escaped) = self.string_span().map_err(in_field)?;
                if escaped {
                    bytes.extend_from_slice(&self.scratch);
                } else {
                    bytes.extend_from_slice(&self.bytes[start..end]);
                }
                let end = i32::try_from(bytes.len())
                    .map_err(|_| in_field(self.error("the batch's strings exceed 2 GiB".into())))?;
                offsets.push(end);
            }
            (Values::Int32(values), _) => {
                let value = self.integer(field).map_err(in_field)?;
                let value = i32::try_from(value).map_err(|_| {
                    in_field(self.error(format!("{value} does not fit a 32-bit integer")))
                })?;
                values.push(value);
            }
            (Values::Int64(values), Kind::TimestampMs) => {
                let value = self.timestamp().map_err(in_field)?;
                values.push(value);
            }
            (Values::Int64(values), _) => {
                let value = self.integer(field).map_err(in_field)?;
                values.push(value);
            }
            (Values::Float64(values), _) => {
                let value = match self.peek() {
                    Some(b'-' | b'0'..=b'9') => {
                        let number = self.number().map_err(in_field)?;
                        Some(number.to_f64())
                    }
                    Some(b'"') => {
                        let text = self.string_text().map_err(in_field)?;
                        let value = parse_f64(text.as_bytes());
                        if value.is_none() {
                            return Err(in_field(
                                self.error(format!("expected a number, found the string {text:?}")),
                            ));
                        }
                        value
                    }
                    _ => return Err(mismatch(self)),
                };
                values.push(value.expect("a number, or a string checked above"));
            }
            (Values::Boolean(values), _) => match self.peek() {
                Some(b't') => {
                    self.literal(b"true").map_err(in_field)?;
                    values.append(true);
                }
                Some(b'f') => {
                    self.literal(b"false").map_err(in_field)?;
                    values.append(false);
                }
                _ => return Err(mismatch(self)),
            },
        }
        column.pushed();
        Ok(())
    }

    /// The text of the string at the cursor.
    fn string_text(&mut self) -> Result<String, RecordError> {
        let (start, end, escaped) = self.string_span()?;
        let bytes = if escaped {
            &self.scratch[..]
        } else {
            &self.bytes[start..end]
        };
        // The record was checked to be UTF-8, and unescaping writes only whole characters.
        Ok(String::from_utf8_lossy(bytes).into_owned())
    }

    /// An integer: a number without fraction (or with a zero one), or a string holding one.
    fn integer(&mut self, field: &Field) -> Result<i64, RecordError> {
        match self.peek() {
            Some(b'-' | b'0'..=b'9') => {
                let start = self.at;
                let number = self.number()?;
                if let Some(value) = number.as_i64() {
                    return Ok(value);
                }
                let value = number.to_f64();
                if value.fract() == 0.0 && (-9.2e18..9.2e18).contains(&value) {
                    return Ok(value as i64);
                }
                let text = String::from_utf8_lossy(number.text);
                self.at = start;
                Err(self.error(format!("expected an integer, found {text}")))
            }
            Some(b'"') => {
                let text = self.string_text()?;
                parse_i64(text.as_bytes()).ok_or_else(|| {
                    self.error(format!("expected an integer, found the string {text:?}"))
                })
            }
            _ => Err(self.error(format!(
                "expected {}, found {}",
                field.kind.expected(),
                self.describe_value()
            ))),
        }
    }

    /// Epoch milliseconds: a number (a fraction is truncated, as arrow-json does), or an
    /// RFC 3339 string.
    fn timestamp(&mut self) -> Result<i64, RecordError> {
        match self.peek() {
            Some(b'-' | b'0'..=b'9') => {
                let number = self.number()?;
                if let Some(value) = number.as_i64() {
                    return Ok(value);
                }
                let value = number.to_f64();
                if value.is_finite() && (-9.2e18..9.2e18).contains(&value) {
                    Ok(value as i64)
                } else {
                    Err(self.error("timestamp out of range".into()))
                }
            }
            Some(b'"') => {
                let text = self.string_text()?;
                arrow::compute::kernels::cast_utils::string_to_datetime(&chrono::Utc, &text)
                    .map(|t| t.timestamp_millis())
                    .map_err(|e| self.error(format!("cannot read {text:?} as a timestamp: {e}")))
            }
            _ => Err(self.error(format!(
                "expected {}, found {}",
                Kind::TimestampMs.expected(),
                self.describe_value()
            ))),
        }
    }

    /// Moves past the value at the cursor, whatever it is, checking its syntax.
    fn skip_value(&mut self, depth: usize) -> Result<(), RecordError> {
        if depth > MAX_DEPTH {
            return Err(self.error(format!("nested deeper than {MAX_DEPTH} levels")));
        }
        match self.peek() {
            Some(b'"') => self.string_span().map(|_| ()),
            Some(b'-' | b'0'..=b'9') => self.number().map(|_| ()),
            Some(b't') => self.literal(b"true"),
            Some(b'f') => self.literal(b"false"),
            Some(b'n') => self.literal(b"null"),
            Some(open @ (b'{' | b'[')) => {
                let close = if open == b'{' { b'}' } else { b']' };
                self.at += 1;
                self.skip_whitespace();
                if self.peek() == Some(close) {
                    self.at += 1;
                    return Ok(());
                }
                loop {
                    if open == b'{' {
                        if self.peek() != Some(b'"') {
                            return Err(self.error(format!(
                                "expected a key in quotes, found {}",
                                self.describe_next()
                            )));
                        }
                        self.string_span()?;
                        self.skip_whitespace();
                        self.expect(b':')?;
                        self.skip_whitespace();
                    }
                    self.skip_value(depth + 1)?;
                    self.skip_whitespace();
                    match self.peek() {
                        Some(b',') => {
                            self.at += 1;
                            self.skip_whitespace();
                        }
                        Some(c) if c == close => {
                            self.at += 1;
                            return Ok(());
                        }
                        _ => {
                            return Err(self.error(format!(
                                "expected `,` or `{}`, found {}",
                                close as char,
                                self.describe_next()
                            )));
                        }
                    }
                }
            }
            _ => Err(self.error(format!("expected a value, found {}", self.describe_next()))),
        }
    }
}

/// `haystack` starts with `prefix` (short: a key token). Word-sized compares, no call.
#[inline]
fn starts_with(haystack: &[u8], prefix: &[u8]) -> bool {
    let n = prefix.len();
    if haystack.len() < n {
        return false;
    }
    let word = |b: &[u8], at: usize| u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"));
    if n >= 8 {
        // Whole words, the last one overlapping its predecessor.
        let mut at = 0;
        while at + 8 < n {
            if word(haystack, at) != word(prefix, at) {
                return false;
            }
            at += 8;
        }
        word(haystack, n - 8) == word(prefix, n - 8)
    } else {
        haystack[..n].iter().zip(prefix).all(|(a, b)| a == b)
    }
}

/// The first `"` or `\\` in `bytes`: the short strings most values are, eight bytes at a
/// time in a word (a byte loop was most of `string_span`), the vectorised search beyond.
#[inline]
fn quote_or_backslash(bytes: &[u8]) -> Option<usize> {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH_BITS: u64 = 0x8080_8080_8080_8080;
    // The high bit of each byte equal to `byte`, exact up to the first such byte (a borrow
    // may flag bytes after it, never before).
    let equal_to = |word: u64, byte: u8| {
        let diff = word ^ (ONES * u64::from(byte));
        diff.wrapping_sub(ONES) & !diff & HIGH_BITS
    };
    let mut at = 0;
    while at < 32 && at + 8 <= bytes.len() {
        let word = u64::from_le_bytes(bytes[at..at + 8].try_into().expect("8 bytes"));
        let found = equal_to(word, b'"') | equal_to(word, b'\\');
        if found != 0 {
            return Some(at + found.trailing_zeros() as usize / 8);
        }
        at += 8;
    }
    memchr::memchr2(b'"', b'\\', &bytes[at..]).map(|i| i + at)
}

/// The value of eight ASCII digits, `None` when one of the bytes is not a digit (SWAR: the
/// digits are checked and combined in pairs, fours and eights within one word).
#[inline]
fn eight_digits(chunk: [u8; 8]) -> Option<u64> {
    let word = u64::from_le_bytes(chunk);
    // A digit is 0x30..=0x39: its high nibble is 3, and adding 6 leaves it 3.
    let high_nibbles = (word & 0xF0F0_F0F0_F0F0_F0F0)
        | ((word.wrapping_add(0x0606_0606_0606_0606) & 0xF0F0_F0F0_F0F0_F0F0) >> 4);
    if high_nibbles != 0x3333_3333_3333_3333 {
        return None;
    }
    let word = word - 0x3030_3030_3030_3030;
    // Each byte pair becomes its two-digit value, then each four, then all eight (the first
    // digit is the lowest byte).
    let pairs = (word * 10 + (word >> 8)) & 0x00FF_00FF_00FF_00FF;
    let fours = (pairs * 100 + (pairs >> 16)) & 0x0000_FFFF_0000_FFFF;
    Some((fours * 10_000 + (fours >> 32)) & 0xFFFF_FFFF)
}

/// An optionally signed run of ASCII digits as i64; `None` when it is not one or overflows.
fn parse_i64(text: &[u8]) -> Option<i64> {
    let (negative, digits) = match text.split_first() {
        Some((b'-', rest)) => (true, rest),
        Some((b'+', rest)) => (false, rest),
        _ => (false, text),
    };
    if digits.is_empty() || digits.len() > 19 {
        return None;
    }
    let mut value: u64 = 0;
    for &d in digits {
        if !d.is_ascii_digit() {
            return None;
        }
        value = value * 10 + (d - b'0') as u64;
    }
    if negative {
        if value <= i64::MAX as u64 + 1 {
            Some((value as i64).wrapping_neg())
        } else {
            None
        }
    } else {
        i64::try_from(value).ok()
    }
}

/// A string's text as a float, by Rust's grammar (`" 1.5"` no, `"NaN"` and `"1e3"` yes).
fn parse_f64(text: &[u8]) -> Option<f64> {
    std::str::from_utf8(text).ok()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Array, AsArray, RecordBatch};
    use arrow::datatypes::{Field as ArrowField, Int32Type, Int64Type, Schema};

    fn schema() -> SchemaRef {
        Arc::new(Schema::new(vec![
            ArrowField::new("s", DataType::Utf8, true),
            ArrowField::new("i", DataType::Int32, true),
            ArrowField::new("l", DataType::Int64, true),
            ArrowField::new("f", DataType::Float64, true),
            ArrowField::new("b", DataType::Boolean, true),
            ArrowField::new(
                "t",
                DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into())),
                true,
            ),
        ]))
    }

    fn decode(schema: SchemaRef, lines: &[&str]) -> (RecordBatch, Vec<(usize, String)>) {
        let mut decoder = FlatJsonDecoder::new(schema.clone()).unwrap();
        let (columns, _, failed) = decoder.decode(lines.iter().map(|l| l.as_bytes()), false);
        let batch = RecordBatch::try_new(schema, columns).unwrap();
        (
            batch,
            failed
                .into_iter()
                .map(|(i, e)| (i, e.to_string()))
                .collect(),
        )
    }

    #[test]
    fn numbers_decode_to_the_floats_rust_parses_them_to() {
        let texts = [
            "0",
            "-0",
            "1",
            "-1.5",
            "3.141592653589793",
            "2.2250738585072014e-308",
            "5e-324",
            "1.7976931348623157e308",
            "1e400",
            "-1e400",
            "1E5",
            "1e+5",
            "12345678901234567890.5",
            "0.1000000000000000055511151231257827",
            "-122.41940",
            "237.81832",
            "4e-3",
            // Around the fast path's bounds: 15 and 16 digits, 22 and 23 after the point.
            "123456789012345",
            "1234567890123456",
            "0.1234567890123456789012",
            "0.00000000000000000000001",
            "-0.000",
            "9007199254740993.0",
        ];
        // And short decimals of every length, as EventSim's durations and coordinates are.
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let mut random = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let decimals: Vec<String> = (0..2000)
            .map(|_| {
                let digits = 1 + random() % 17;
                let mantissa = random() % 10u64.pow(digits as u32);
                let point = random() % (digits + 1);
                let text = format!("{mantissa:0width$}", width = digits as usize + 1);
                let (whole, fraction) = text.split_at(text.len() - point as usize);
                let sign = if random() % 2 == 0 { "-" } else { "" };
                let whole = whole.trim_start_matches('0');
                let whole = if whole.is_empty() { "0" } else { whole };
                if fraction.is_empty() {
                    format!("{sign}{whole}")
                } else {
                    format!("{sign}{whole}.{fraction}")
                }
            })
            .collect();
        let texts: Vec<&str> = texts
            .into_iter()
            .chain(decimals.iter().map(String::as_str))
            .collect();
        let schema = Arc::new(Schema::new(vec![ArrowField::new(
            "f",
            DataType::Float64,
            true,
        )]));
        let lines: Vec<String> = texts.iter().map(|t| format!("{{\"f\":{t}}}")).collect();
        let lines: Vec<&str> = lines.iter().map(String::as_str).collect();
        let (batch, failed) = decode(schema, &lines);
        assert!(failed.is_empty(), "{failed:?}");
        let decoded = batch
            .column(0)
            .as_primitive::<arrow::datatypes::Float64Type>();
        for (row, text) in texts.iter().enumerate() {
            let expected: f64 = text.parse().unwrap();
            assert_eq!(decoded.value(row).to_bits(), expected.to_bits(), "{text}");
        }
    }

    #[test]
    fn eight_digits_are_read_in_one_word_and_anything_else_is_left_to_the_loop() {
        for text in ["00000000", "12345678", "99999999", "10000001", "09876543"] {
            let chunk: [u8; 8] = text.as_bytes().try_into().unwrap();
            assert_eq!(eight_digits(chunk), Some(text.parse().unwrap()), "{text}");
        }
        // Every byte that is not a digit, at every position.
        for at in 0..8 {
            for byte in (0..=255u8).filter(|b| !b.is_ascii_digit()) {
                let mut chunk = *b"12345678";
                chunk[at] = byte;
                assert_eq!(eight_digits(chunk), None, "{chunk:?}");
            }
        }
    }

    #[test]
    fn integers_of_every_length_decode_exactly() {
        let mut texts: Vec<String> = ["0", "-0", "9223372036854775807", "-9223372036854775808"]
            .map(String::from)
            .into();
        for digits in 1..=19u32 {
            for lead in 1..=9u64 {
                let value = lead * 10u64.pow(digits - 1)
                    + (digits as u64 * 7919) % 10u64.pow(digits - 1).max(1);
                if value <= i64::MAX as u64 {
                    texts.push(value.to_string());
                    texts.push(format!("-{value}"));
                }
            }
        }
        let schema = Arc::new(Schema::new(vec![ArrowField::new(
            "l",
            DataType::Int64,
            true,
        )]));
        let lines: Vec<String> = texts.iter().map(|t| format!("{{\"l\":{t}}}")).collect();
        let lines: Vec<&str> = lines.iter().map(String::as_str).collect();
        let (batch, failed) = decode(schema.clone(), &lines);
        assert!(failed.is_empty(), "{failed:?}");
        let decoded = batch.column(0).as_primitive::<Int64Type>();
        for (row, text) in texts.iter().enumerate() {
            assert_eq!(decoded.value(row), text.parse::<i64>().unwrap(), "{text}");
        }
        let (_, failed) = decode(schema, &[r#"{"l":9223372036854775808}"#]);
        assert_eq!(failed.len(), 1, "one past i64::MAX is refused");
    }

    #[test]
    fn decodes_every_kind_keys_in_any_order_and_skips_unknown_keys() {
        let (batch, failed) = decode(
            schema(),
            &[
                r#"{"s":"a","i":1,"l":-9007199254740993,"f":1.5,"b":true,"t":1793491200000}"#,
                r#" { "t" : "2026-11-01T00:00:00Z" , "extra": {"deep": [1, {"x": null}, "y\"z"]}, "b":false, "f": -2e3, "l": "42", "i": 5.0, "s": "\u00e9\n\"q\"" } "#,
                r#"{}"#,
                r#"{"s":null,"i":null,"unknown":"x","s":"last wins"}"#,
            ],
        );
        assert!(failed.is_empty(), "{failed:?}");
        assert_eq!(batch.num_rows(), 4);
        let s = batch.column(0).as_string::<i32>();
        assert_eq!(s.value(0), "a");
        assert_eq!(s.value(1), "é\n\"q\"");
        assert!(s.is_null(2));
        assert_eq!(s.value(3), "last wins");
        let i = batch.column(1).as_primitive::<Int32Type>();
        assert_eq!(
            (i.value(0), i.value(1), i.is_null(2), i.is_null(3)),
            (1, 5, true, true)
        );
        let l = batch.column(2).as_primitive::<Int64Type>();
        assert_eq!((l.value(0), l.value(1)), (-9007199254740993, 42));
        let f = batch
            .column(3)
            .as_primitive::<arrow::datatypes::Float64Type>();
        assert_eq!((f.value(0), f.value(1)), (1.5, -2000.0));
        let b = batch.column(4).as_boolean();
        assert_eq!((b.value(0), b.value(1), b.is_null(2)), (true, false, true));
        let t = batch
            .column(5)
            .as_primitive::<arrow::datatypes::TimestampMillisecondType>();
        assert_eq!((t.value(0), t.value(1)), (1793491200000, 1793491200000));
        assert_eq!(batch.column(0).null_count(), 1);
    }

    /// Validity is built from a column's first null on: earlier rows are valid, a record that
    /// fails after setting a null rolls it back, and a column without nulls has no bitmap.
    #[test]
    fn nulls_are_counted_from_the_first_one_and_rolled_back_with_their_record() {
        let mut lines: Vec<String> = (0..100)
            .map(|r| format!(r#"{{"s":"v{r}","i":{r}}}"#))
            .collect();
        lines[70] = r#"{"s":null,"i":70}"#.into();
        lines[40] = r#"{"s":null,"i":"forty"}"#.into();
        lines[80] = r#"{"i":80}"#.into();
        let lines: Vec<&str> = lines.iter().map(String::as_str).collect();
        let (batch, failed) = decode(schema(), &lines);
        assert_eq!(failed.len(), 1, "{failed:?}");
        assert_eq!(failed[0].0, 40);
        assert_eq!(batch.num_rows(), 99);
        let s = batch.column(0).as_string::<i32>();
        let nulls: Vec<usize> = (0..99).filter(|&r| s.is_null(r)).collect();
        // Rows 70 and 80 of the input are rows 69 and 79 once row 40 is gone.
        assert_eq!(nulls, [69, 79]);
        assert_eq!(
            (s.value(39), s.value(40), s.value(98)),
            ("v39", "v41", "v99")
        );
        assert!(batch.column(1).nulls().is_none());
        assert_eq!(batch.column(2).null_count(), 99);
    }

    /// The key-order fast path matches whole keys only: a longer key at the remembered
    /// position, an escaped spelling or spaces go the slow way and still land right.
    #[test]
    fn keys_are_matched_whole_whatever_the_previous_record_did() {
        let (batch, failed) = decode(
            schema(),
            &[
                r#"{"s":"a","i":1}"#,
                r#"{"sx":"unknown","s":"b","i":2}"#,
                r#"{"s\u0078":"unknown too","i":3}"#,
                r#"{"\u0073":"escaped s","i" : 4}"#,
                r#"{"i":5,"s":"swapped"}"#,
            ],
        );
        assert!(failed.is_empty(), "{failed:?}");
        let s = batch.column(0).as_string::<i32>();
        let values: Vec<_> = (0..5).map(|r| s.is_valid(r).then(|| s.value(r))).collect();
        assert_eq!(
            values,
            [
                Some("a"),
                Some("b"),
                None,
                Some("escaped s"),
                Some("swapped")
            ]
        );
        let i = batch.column(1).as_primitive::<Int32Type>();
        assert_eq!(i.values().to_vec(), vec![1, 2, 3, 4, 5]);
    }

    #[test]
    fn a_bad_record_is_refused_alone_with_the_field_and_problem_named() {
        let lines = [
            r#"{"s":"ok","i":1}"#,
            r#"{"s":"x","i":"yesterday"}"#,
            r#"{"s":"x","i":1.5}"#,
            r#"{"s":"x","i":3000000000}"#,
            r#"{"s":7}"#,
            r#"{"b":"true"}"#,
            r#"this is not json"#,
            r#"{"s":"unterminated}"#,
            r#"{"s":"x"} trailing"#,
            r#"{"s":"x",}"#,
            r#"{"s":"\ud800"}"#,
            r#"{"l":01}"#,
            r#"[1,2]"#,
            r#"{"s":"also ok","l":2}"#,
        ];
        let (batch, failed) = decode(schema(), &lines);
        assert_eq!(batch.num_rows(), 2);
        let s = batch.column(0).as_string::<i32>();
        assert_eq!((s.value(0), s.value(1)), ("ok", "also ok"));
        let reasons: Vec<_> = failed.iter().map(|(_, r)| r.as_str()).collect();
        assert_eq!(
            failed.iter().map(|(i, _)| *i).collect::<Vec<_>>(),
            (1..13).collect::<Vec<_>>()
        );
        assert_eq!(
            reasons,
            [
                "field `i`: expected an integer, found the string \"yesterday\"",
                "field `i`: expected an integer, found 1.5",
                "field `i`: 3000000000 does not fit a 32-bit integer",
                "field `s`: expected a string, found a number",
                "field `b`: expected true or false, found a string",
                "invalid JSON at byte 0: expected a JSON object, found `this is not json`",
                "field `s`: unterminated string",
                "invalid JSON at byte 10: expected the end of the record, found `trailing`",
                "invalid JSON at byte 9: expected a key in quotes, found `}`",
                "field `s`: a lone UTF-16 surrogate in a \\u escape",
                "field `l`: invalid number `01}`",
                "invalid JSON at byte 0: expected a JSON object, found `[1,2]`",
            ]
        );
    }

    #[test]
    fn fields_declared_not_nullable_refuse_missing_and_null_values() {
        let schema = Arc::new(Schema::new(vec![
            ArrowField::new("id", DataType::Int64, false),
            ArrowField::new("name", DataType::Utf8, true),
        ]));
        let (batch, failed) = decode(
            schema,
            &[r#"{"id":1}"#, r#"{"name":"x"}"#, r#"{"id":null}"#],
        );
        assert_eq!(batch.num_rows(), 1);
        assert_eq!(batch.column(0).null_count(), 0);
        assert_eq!(
            failed,
            [
                (
                    1,
                    "field `id`: missing, and declared not nullable".to_string()
                ),
                (2, "field `id`: null, and declared not nullable".to_string())
            ]
        );
    }

    #[test]
    fn invalid_utf8_is_refused() {
        let mut decoder = FlatJsonDecoder::new(schema()).unwrap();
        let bad: &[u8] = b"{\"s\":\"\xff\"}";
        let (_, decoded, failed) = decoder.decode([bad, b"{}".as_slice()].into_iter(), false);
        assert_eq!(decoded, [1]);
        assert_eq!(failed[0].1.to_string(), "invalid JSON at byte 6: not UTF-8");
    }

    #[test]
    fn nested_declared_types_are_left_to_arrow_json() {
        let schema = Arc::new(Schema::new(vec![ArrowField::new(
            "tags",
            DataType::List(Arc::new(ArrowField::new("item", DataType::Utf8, true))),
            true,
        )]));
        assert!(FlatJsonDecoder::new(schema).is_none());
    }

    /// The same EventSim records through arrow-json and through this decoder give the same
    /// batch, including the generator's dirty records.
    #[test]
    fn agrees_with_arrow_json_on_generated_eventsim_records() {
        use crate::source::generator::{EventGenerator, GeneratorConfig};
        let config = GeneratorConfig {
            events: 20_000,
            dirty_rate: 0.05,
            ..Default::default()
        };
        let mut generator = EventGenerator::new(&config);
        let mut by_topic: std::collections::BTreeMap<&str, Vec<Vec<u8>>> = Default::default();
        while let Some((topic, record)) = generator.next_record() {
            by_topic.entry(topic.name()).or_default().push(record);
        }
        for (topic, records) in by_topic {
            let schema = crate::decode::schema::eventsim(topic).unwrap();
            let mut flat = FlatJsonDecoder::new(schema.clone()).unwrap();
            let (columns, decoded, failed) = flat.decode(records.iter().map(Vec::as_slice), false);
            assert!(failed.is_empty(), "{topic}: {failed:?}");
            assert_eq!(decoded.len(), records.len());
            let ours = RecordBatch::try_new(schema.clone(), columns).unwrap();
            let mut reader = arrow::json::ReaderBuilder::new(schema)
                .with_batch_size(records.len() + 1)
                .build_decoder()
                .unwrap();
            let text: Vec<u8> = records.join(&b'\n');
            reader.decode(&text).unwrap();
            let theirs = reader.flush().unwrap().unwrap();
            assert_eq!(ours, theirs, "{topic}");
        }
    }

    /// Records broken at random (a byte deleted, inserted or the record cut short) are
    /// accepted or refused as arrow-json accepts or refuses them alone, with the same values.
    /// Allowed differences: the documented one (a fraction for an integer field), and invalid
    /// JSON that arrow-json tolerates (a missing comma, say), as serde_json judges it.
    #[test]
    fn agrees_with_arrow_json_on_randomly_broken_records() {
        use crate::source::generator::{EventGenerator, GeneratorConfig};
        let schema = crate::decode::schema::eventsim("page_view_events").unwrap();
        let config = GeneratorConfig {
            events: 400,
            ..Default::default()
        };
        let mut generator = EventGenerator::new(&config);
        let mut records = Vec::new();
        while let Some((topic, record)) = generator.next_record() {
            if topic.name() == "page_view_events" {
                records.push(record);
            }
        }
        let inserts = b"\"\\,:{}[]0.e-+ ntf\t9/u";
        let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut next = |bound: usize| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state % bound as u64) as usize
        };
        let (mut compared, mut refused) = (0, 0);
        for record in &records {
            for _ in 0..12 {
                let mut broken = record.clone();
                let at = next(broken.len());
                match next(3) {
                    0 => {
                        broken.remove(at);
                    }
                    1 => broken.insert(at, inserts[next(inserts.len())]),
                    _ => broken.truncate(at),
                }
                let mut flat = FlatJsonDecoder::new(schema.clone()).unwrap();
                let (columns, decoded, failed) =
                    flat.decode(std::iter::once(broken.as_slice()), false);
                let ours = (!decoded.is_empty())
                    .then(|| RecordBatch::try_new(schema.clone(), columns).unwrap());
                let mut reader = arrow::json::ReaderBuilder::new(schema.clone())
                    .build_decoder()
                    .unwrap();
                let theirs = reader
                    .decode(&broken)
                    .and_then(|_| reader.flush())
                    .ok()
                    .flatten()
                    .filter(|b| b.num_rows() == 1);
                let text = String::from_utf8_lossy(&broken);
                match (&ours, &theirs) {
                    (Some(ours), Some(theirs)) => assert_eq!(ours, theirs, "{text}"),
                    (None, None) => refused += 1,
                    (None, Some(_)) => {
                        let reason = failed[0].1.to_string();
                        let invalid = serde_json::from_slice::<serde_json::Value>(&broken).is_err();
                        assert!(
                            invalid || reason.contains("expected an integer, found"),
                            "refused what arrow-json accepts: {text}: {reason}"
                        );
                    }
                    (Some(_), None) => panic!("accepted what arrow-json refuses: {text}"),
                }
                compared += 1;
            }
        }
        assert!(
            compared > 1000 && refused > compared / 4,
            "{compared} {refused}"
        );
    }

    #[test]
    fn quote_or_backslash_finds_the_first_of_either_at_any_position() {
        let naive = |bytes: &[u8]| bytes.iter().position(|&b| b == b'"' || b == b'\\');
        // Bytes that differ from the targets by one bit or a borrow, around every position.
        let filler = [b'!', b'#', b'[', b']', b'\x00', b'\xff', b'\x80', b'a'];
        for len in 0..80 {
            for target in [None, Some(b'"'), Some(b'\\')] {
                for at in 0..len.max(1) {
                    let mut bytes: Vec<u8> = (0..len).map(|i| filler[(i * 7 + at) % 8]).collect();
                    if let Some(t) = target
                        && at < len
                    {
                        bytes[at] = t;
                        if at + 3 < len {
                            bytes[at + 3] = b'"';
                        }
                    }
                    assert_eq!(quote_or_backslash(&bytes), naive(&bytes), "{bytes:?}");
                }
            }
        }
    }
}
