//! Loads a lake layer (gold, by default) into ClickHouse, once per commit, over the HTTP
//! interface with `INSERT … FORMAT RowBinary` (gzip-compressed bodies).
//!
//! Order of events per epoch: the lake commit makes the epoch's files durable; then each table
//! of the layer is read back from those files and inserted, and a marker row
//! `(pipeline, instance, epoch, table)` is added to `_sluice_loads`; only then are source
//! positions reported as durable (Kafka offsets committed). While ClickHouse is unreachable
//! the insert is retried with back-off, the sink thread waits, and the bounded channels in
//! front of it stop the pipeline: rows stay in the lake (bounded), offsets stay uncommitted.
//! On start, the instance's last committed epoch is loaded again unless its markers say it
//! arrived; so a crash between the lake commit and the insert loses nothing.
//!
//! Exactly-once as queries see it: a crash during an insert can leave part of that epoch in
//! ClickHouse, and the reload inserts those rows again. Tables are created as
//! `ReplacingMergeTree` ordered by the row's identity (the plugin's `sluice.key` schema
//! metadata), so a replayed row replaces its copy: queries that read with `FINAL` (or group
//! by the key) see every row once, before and after background merges.
//!
//! Arrow → ClickHouse types (`default_type`; an existing table may use any listed column type):
//!
//! | Arrow | created as | also accepted |
//! |---|---|---|
//! | Int8…Int64, UInt8…UInt64, Float32, Float64 | the same-named type | |
//! | Boolean | UInt8 | Bool |
//! | Utf8, LargeUtf8 | String | LowCardinality(String) |
//! | Date32 | Date (1970-01-01 … 2149-06-06) | Date32 |
//! | Timestamp(unit, tz) | DateTime64(3/6/9, 'UTC') on servers ≥ 20.1; Int64 (the raw value, in the Arrow unit) before | DateTime (seconds), DateTime64(p), Int64 |
//! | nullable field | Nullable(T) | |
pub use super::LoadReport;
use super::lake::{CommitRecord, LakeError, LakeReader};
use super::{Retry, SinkFailure};
use crate::config::ClickHouseConfig;
use crate::metrics;
use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::{
    DataType, Date32Type, Field, Float32Type, Float64Type, Int8Type, Int16Type, Int32Type,
    Int64Type, TimeUnit, TimestampMicrosecondType, TimestampMillisecondType,
    TimestampNanosecondType, TimestampSecondType, UInt8Type, UInt16Type, UInt32Type, UInt64Type,
};
use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

/// The table of load markers, in the configured database.
pub const LOADS_TABLE: &str = "_sluice_loads";
use sluice_sdk::KEY_METADATA;

#[derive(Debug, thiserror::Error)]
pub enum ClickHouseError {
    #[error("ClickHouse at {url} is unreachable: {detail}")]
    Unreachable { url: String, detail: String },
    #[error("ClickHouse at {url} refused user `{user}`: {message}")]
    Auth {
        url: String,
        user: String,
        message: String,
    },
    #[error("ClickHouse at {url} answered HTTP {status}: {message}\n  query: {query}")]
    Server {
        url: String,
        status: u16,
        code: Option<u32>,
        message: String,
        query: String,
    },
    #[error("ClickHouse table {table}: {detail}")]
    Schema { table: String, detail: String },
    #[error("table {table}, row {row}, column `{column}`: {detail}")]
    Value {
        table: String,
        row: usize,
        column: String,
        detail: String,
    },
    #[error("reading the lake for ClickHouse: {0}")]
    Lake(#[from] LakeError),
    #[error(
        "stopped while ClickHouse was unavailable ({last}); epoch {epoch} is committed to the lake and is loaded on the next start"
    )]
    Stopped { epoch: u64, last: String },
}

impl SinkFailure for ClickHouseError {
    /// Whether waiting may fix it: the server is down, overloaded or out of memory, not
    /// refusing the request itself.
    fn retryable(&self) -> bool {
        match self {
            ClickHouseError::Unreachable { .. } => true,
            ClickHouseError::Server { status, code, .. } => {
                *status == 503
                    || code.is_some_and(|c| {
                        // TIMEOUT_EXCEEDED, TOO_MANY_SIMULTANEOUS_QUERIES, NO_FREE_CONNECTION,
                        // SOCKET_TIMEOUT, NETWORK_ERROR, MEMORY_LIMIT_EXCEEDED,
                        // TABLE_IS_READ_ONLY, TOO_MANY_PARTS, UNKNOWN_STATUS_OF_INSERT,
                        // ALL_CONNECTION_TRIES_FAILED, KEEPER_EXCEPTION, TOO_MANY_CONNECTIONS?
                        [159, 202, 203, 209, 210, 241, 242, 252, 319, 425, 999, 279].contains(&c)
                    })
            }
            _ => false,
        }
    }

    fn kind(&self) -> &'static str {
        match self {
            ClickHouseError::Unreachable { .. } => "unreachable",
            ClickHouseError::Auth { .. } => "auth",
            ClickHouseError::Server { .. } => "server",
            ClickHouseError::Schema { .. } | ClickHouseError::Value { .. } => "schema",
            ClickHouseError::Lake(_) => "lake",
            ClickHouseError::Stopped { .. } => "stopped",
        }
    }
}

/// A ClickHouse column type, as far as the sink needs to know it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ColumnType {
    Int { bits: u8, signed: bool },
    Float32,
    Float64,
    Bool,
    String,
    Date,
    Date32,
    DateTime,
    DateTime64 { precision: u8 },
    Nullable(Box<ColumnType>),
    Other(String),
}

impl ColumnType {
    /// Parses a type as `system.columns` spells it.
    pub fn parse(text: &str) -> ColumnType {
        let text = text.trim();
        let inner = |prefix: &str| {
            text.strip_prefix(prefix)
                .and_then(|rest| rest.strip_suffix(')'))
        };
        if let Some(inner) = inner("Nullable(") {
            return ColumnType::Nullable(Box::new(ColumnType::parse(inner)));
        }
        if let Some(inner) = inner("LowCardinality(") {
            // RowBinary carries LowCardinality(T) as T.
            return ColumnType::parse(inner);
        }
        if let Some(args) = inner("DateTime64(") {
            let precision = args.split(',').next().unwrap_or("").trim().parse().ok();
            return match precision {
                Some(precision) => ColumnType::DateTime64 { precision },
                None => ColumnType::Other(text.to_string()),
            };
        }
        if text == "DateTime" || inner("DateTime(").is_some() {
            return ColumnType::DateTime;
        }
        match text {
            "Int8" | "Int16" | "Int32" | "Int64" | "UInt8" | "UInt16" | "UInt32" | "UInt64" => {
                let signed = text.starts_with("Int");
                let bits = text.trim_start_matches("U").trim_start_matches("Int");
                ColumnType::Int {
                    bits: bits.parse().expect("matched above"),
                    signed,
                }
            }
            "Float32" => ColumnType::Float32,
            "Float64" => ColumnType::Float64,
            "Bool" => ColumnType::Bool,
            "String" => ColumnType::String,
            "Date" => ColumnType::Date,
            "Date32" => ColumnType::Date32,
            _ => ColumnType::Other(text.to_string()),
        }
    }

    fn nullable(&self) -> bool {
        matches!(self, ColumnType::Nullable(_))
    }
}

/// A server's `major.minor` version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct ServerVersion(pub u32, pub u32);

impl ServerVersion {
    fn parse(text: &str) -> Option<Self> {
        let mut parts = text.trim().split('.');
        Some(ServerVersion(
            parts.next()?.parse().ok()?,
            parts.next()?.parse().ok()?,
        ))
    }

    fn has_datetime64(self) -> bool {
        self >= ServerVersion(20, 1)
    }
}

/// The type Sluice creates for an Arrow field on a server of `version`.
pub fn default_type(field: &Field, version: ServerVersion) -> Option<String> {
    let base = match field.data_type() {
        DataType::Int8 => "Int8".to_string(),
        DataType::Int16 => "Int16".into(),
        DataType::Int32 => "Int32".into(),
        DataType::Int64 => "Int64".into(),
        DataType::UInt8 => "UInt8".into(),
        DataType::UInt16 => "UInt16".into(),
        DataType::UInt32 => "UInt32".into(),
        DataType::UInt64 => "UInt64".into(),
        DataType::Float32 => "Float32".into(),
        DataType::Float64 => "Float64".into(),
        DataType::Boolean => "UInt8".into(),
        DataType::Utf8 | DataType::LargeUtf8 => "String".into(),
        DataType::Date32 => "Date".into(),
        DataType::Timestamp(unit, _) if version.has_datetime64() => {
            format!("DateTime64({}, 'UTC')", precision(*unit))
        }
        DataType::Timestamp(..) => "Int64".into(),
        _ => return None,
    };
    Some(if field.is_nullable() {
        format!("Nullable({base})")
    } else {
        base
    })
}

fn precision(unit: TimeUnit) -> u8 {
    match unit {
        TimeUnit::Second => 0,
        TimeUnit::Millisecond => 3,
        TimeUnit::Microsecond => 6,
        TimeUnit::Nanosecond => 9,
    }
}

/// Writes the value of one row of one column in RowBinary.
type CellWriter<'a> = Box<dyn Fn(usize, &mut Vec<u8>) -> Result<(), String> + 'a>;

/// A writer for `array` into a column of type `target`, or why the two do not fit.
fn cell_writer<'a>(array: &'a dyn Array, target: &ColumnType) -> Result<CellWriter<'a>, String> {
    if let ColumnType::Nullable(inner) = target {
        let value = cell_writer(array, inner)?;
        return Ok(Box::new(move |row, out| {
            if array.is_null(row) {
                out.push(1);
                Ok(())
            } else {
                out.push(0);
                value(row, out)
            }
        }));
    }
    let value = value_writer(array, target)?;
    if array.null_count() == 0 {
        return Ok(value);
    }
    Ok(Box::new(move |row, out| {
        if array.is_null(row) {
            Err("is null, and the ClickHouse column is not Nullable".into())
        } else {
            value(row, out)
        }
    }))
}

fn value_writer<'a>(array: &'a dyn Array, target: &ColumnType) -> Result<CellWriter<'a>, String> {
    macro_rules! le {
        ($arrow:ty, $as:ty) => {{
            let values = array.as_primitive::<$arrow>();
            Ok(Box::new(move |row, out: &mut Vec<u8>| {
                out.extend_from_slice(&(values.value(row) as $as).to_le_bytes());
                Ok(())
            }))
        }};
    }
    use ColumnType as C;
    match (array.data_type(), target) {
        (
            DataType::Int8,
            C::Int {
                bits: 8,
                signed: true,
            },
        ) => le!(Int8Type, i8),
        (
            DataType::Int16,
            C::Int {
                bits: 16,
                signed: true,
            },
        ) => le!(Int16Type, i16),
        (
            DataType::Int32,
            C::Int {
                bits: 32,
                signed: true,
            },
        ) => le!(Int32Type, i32),
        (
            DataType::Int64,
            C::Int {
                bits: 64,
                signed: true,
            },
        ) => le!(Int64Type, i64),
        (
            DataType::UInt8,
            C::Int {
                bits: 8,
                signed: false,
            },
        ) => le!(UInt8Type, u8),
        (
            DataType::UInt16,
            C::Int {
                bits: 16,
                signed: false,
            },
        ) => le!(UInt16Type, u16),
        (
            DataType::UInt32,
            C::Int {
                bits: 32,
                signed: false,
            },
        ) => le!(UInt32Type, u32),
        (
            DataType::UInt64,
            C::Int {
                bits: 64,
                signed: false,
            },
        ) => le!(UInt64Type, u64),
        (DataType::Float32, C::Float32) => le!(Float32Type, f32),
        (DataType::Float64, C::Float64) => le!(Float64Type, f64),
        (
            DataType::Boolean,
            C::Bool
            | C::Int {
                bits: 8,
                signed: false,
            },
        ) => {
            let values = array.as_boolean();
            Ok(Box::new(move |row, out| {
                out.push(values.value(row) as u8);
                Ok(())
            }))
        }
        (DataType::Utf8, C::String) => {
            let values = array.as_string::<i32>();
            Ok(Box::new(move |row, out| {
                write_string(values.value(row).as_bytes(), out);
                Ok(())
            }))
        }
        (DataType::LargeUtf8, C::String) => {
            let values = array.as_string::<i64>();
            Ok(Box::new(move |row, out| {
                write_string(values.value(row).as_bytes(), out);
                Ok(())
            }))
        }
        (DataType::Date32, C::Date32) => le!(Date32Type, i32),
        (DataType::Date32, C::Date) => {
            let values = array.as_primitive::<Date32Type>();
            Ok(Box::new(move |row, out| {
                let days = values.value(row);
                let days = u16::try_from(days).map_err(|_| {
                    format!(
                        "day {days} since 1970 is outside ClickHouse's Date range (use a Date32 column)"
                    )
                })?;
                out.extend_from_slice(&days.to_le_bytes());
                Ok(())
            }))
        }
        (DataType::Timestamp(unit, _), target) => timestamp_writer(array, *unit, target),
        (arrow, target) => Err(format!(
            "Arrow type {arrow} cannot be written to a ClickHouse column of type {target:?}"
        )),
    }
}

fn timestamp_writer<'a>(
    array: &'a dyn Array,
    unit: TimeUnit,
    target: &ColumnType,
) -> Result<CellWriter<'a>, String> {
    let raw: Box<dyn Fn(usize) -> i64 + 'a> = match unit {
        TimeUnit::Second => {
            let a = array.as_primitive::<TimestampSecondType>();
            Box::new(move |row| a.value(row))
        }
        TimeUnit::Millisecond => {
            let a = array.as_primitive::<TimestampMillisecondType>();
            Box::new(move |row| a.value(row))
        }
        TimeUnit::Microsecond => {
            let a = array.as_primitive::<TimestampMicrosecondType>();
            Box::new(move |row| a.value(row))
        }
        TimeUnit::Nanosecond => {
            let a = array.as_primitive::<TimestampNanosecondType>();
            Box::new(move |row| a.value(row))
        }
    };
    let from = precision(unit) as i32;
    // Rescales a value from the Arrow unit to 10^-`to` seconds, flooring.
    let rescale = move |value: i64, to: i32| -> Result<i64, String> {
        if to >= from {
            value
                .checked_mul(10i64.pow((to - from) as u32))
                .ok_or_else(|| format!("timestamp {value} overflows at precision {to}"))
        } else {
            Ok(value.div_euclid(10i64.pow((from - to) as u32)))
        }
    };
    match target {
        ColumnType::Int {
            bits: 64,
            signed: true,
        } => Ok(Box::new(move |row, out| {
            out.extend_from_slice(&raw(row).to_le_bytes());
            Ok(())
        })),
        ColumnType::DateTime64 { precision } => {
            let to = *precision as i32;
            Ok(Box::new(move |row, out| {
                out.extend_from_slice(&rescale(raw(row), to)?.to_le_bytes());
                Ok(())
            }))
        }
        ColumnType::DateTime => Ok(Box::new(move |row, out| {
            let seconds = rescale(raw(row), 0)?;
            let seconds = u32::try_from(seconds)
                .map_err(|_| format!("{seconds} s is outside ClickHouse's DateTime range"))?;
            out.extend_from_slice(&seconds.to_le_bytes());
            Ok(())
        })),
        other => Err(format!(
            "a timestamp cannot be written to a ClickHouse column of type {other:?}"
        )),
    }
}

/// RowBinary strings: LEB128 length, then the bytes.
fn write_string(bytes: &[u8], out: &mut Vec<u8>) {
    let mut len = bytes.len() as u64;
    loop {
        let byte = (len & 0x7f) as u8;
        len >>= 7;
        if len == 0 {
            out.push(byte);
            break;
        }
        out.push(byte | 0x80);
    }
    out.extend_from_slice(bytes);
}

/// `batches` as RowBinary rows for `columns` (name and ClickHouse type, in insert order).
pub fn encode_row_binary(
    table: &str,
    batches: &[RecordBatch],
    columns: &[(String, ColumnType)],
) -> Result<Vec<u8>, ClickHouseError> {
    let mut out = Vec::new();
    for batch in batches {
        let mut writers = Vec::with_capacity(columns.len());
        for (name, target) in columns {
            let array = batch
                .column_by_name(name)
                .ok_or_else(|| ClickHouseError::Schema {
                    table: table.to_string(),
                    detail: format!("the batch has no column `{name}`"),
                })?;
            let writer =
                cell_writer(array.as_ref(), target).map_err(|detail| ClickHouseError::Schema {
                    table: table.to_string(),
                    detail: format!("column `{name}`: {detail}"),
                })?;
            writers.push((name, writer));
        }
        for row in 0..batch.num_rows() {
            for (name, writer) in &writers {
                writer(row, &mut out).map_err(|detail| ClickHouseError::Value {
                    table: table.to_string(),
                    row,
                    column: name.to_string(),
                    detail,
                })?;
            }
        }
    }
    Ok(out)
}

/// `CREATE TABLE` for a lake table with `schema`.
pub fn create_table_sql(
    database: &str,
    table: &str,
    schema: &arrow::datatypes::Schema,
    choices: &crate::config::ClickHouseTableConfig,
    version: ServerVersion,
) -> Result<String, ClickHouseError> {
    let schema_error = |detail: String| ClickHouseError::Schema {
        table: format!("{database}.{table}"),
        detail,
    };
    let mut columns = Vec::new();
    for field in schema.fields() {
        let Some(ty) = default_type(field, version) else {
            return Err(schema_error(format!(
                "column `{}` has Arrow type {}, which has no ClickHouse mapping",
                field.name(),
                field.data_type()
            )));
        };
        columns.push(format!("{} {ty}", quote(field.name())));
    }
    let order_by = match &choices.order_by {
        Some(keys) => keys.clone(),
        None => default_key(schema),
    };
    for key in &order_by {
        match schema.field_with_name(key) {
            Err(_) => {
                return Err(schema_error(format!(
                    "order_by names `{key}`, which is not a column"
                )));
            }
            Ok(field) if field.is_nullable() && version < ServerVersion(20, 10) => {
                return Err(schema_error(format!(
                    "order_by names `{key}`, which is nullable: this server cannot sort by it"
                )));
            }
            Ok(_) => {}
        }
    }
    let partition_by = choices.partition_by.clone().or_else(|| {
        matches!(
            schema.field_with_name("date").map(|f| f.data_type()),
            Ok(DataType::Date32)
        )
        .then(|| "toYYYYMM(date)".to_string())
    });
    let engine = choices.engine.as_deref().unwrap_or("ReplacingMergeTree");
    let mut sql = format!(
        "CREATE TABLE IF NOT EXISTS {}.{} ({}) ENGINE = {engine}",
        quote(database),
        quote(table),
        columns.join(", ")
    );
    if let Some(partition_by) = partition_by {
        sql.push_str(&format!(" PARTITION BY {partition_by}"));
    }
    let keys: Vec<String> = order_by.iter().map(|k| quote(k)).collect();
    if keys.is_empty() {
        sql.push_str(" ORDER BY tuple()");
    } else {
        sql.push_str(&format!(" ORDER BY ({})", keys.join(", ")));
    }
    Ok(sql)
}

/// The row identity: the plugin's declared key, else every non-nullable, non-float column.
fn default_key(schema: &arrow::datatypes::Schema) -> Vec<String> {
    if let Some(keys) = schema.metadata().get(KEY_METADATA) {
        return keys.split(',').map(|k| k.trim().to_string()).collect();
    }
    schema
        .fields()
        .iter()
        .filter(|f| !f.is_nullable() && !f.data_type().is_floating())
        .map(|f| f.name().clone())
        .collect()
}

fn quote(identifier: &str) -> String {
    format!("`{}`", identifier.replace('\\', "\\\\").replace('`', "\\`"))
}

fn literal(value: &str) -> String {
    format!("'{}'", value.replace('\\', "\\\\").replace('\'', "\\'"))
}

/// ClickHouse's HTTP interface. The password goes in a header and never into a URL, a log
/// line or an error.
pub struct ClickHouseClient {
    agent: ureq::Agent,
    url: String,
    user: String,
    password: crate::config::Secret,
    compress: bool,
}

impl ClickHouseClient {
    pub fn new(config: &ClickHouseConfig) -> Self {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_connect(Some(Duration::from_secs(5)))
            .timeout_global(Some(Duration::from_millis(config.request_timeout_ms)))
            .build()
            .into();
        ClickHouseClient {
            agent,
            url: config.url.trim_end_matches('/').to_string(),
            user: config.user.clone(),
            password: config.password.clone(),
            compress: config.compress,
        }
    }

    /// Runs a statement; returns the response body.
    pub fn query(&self, sql: &str) -> Result<String, ClickHouseError> {
        self.post(sql, "/", sql.as_bytes(), false)
    }

    /// Inserts RowBinary `rows` into `database.table (columns)`.
    pub fn insert(
        &self,
        database: &str,
        table: &str,
        columns: &[(String, ColumnType)],
        rows: &[u8],
    ) -> Result<(), ClickHouseError> {
        let names: Vec<String> = columns.iter().map(|(n, _)| quote(n)).collect();
        let sql = format!(
            "INSERT INTO {}.{} ({}) FORMAT RowBinary",
            quote(database),
            quote(table),
            names.join(", ")
        );
        let path = format!(
            "/?query={}",
            percent_encoding::utf8_percent_encode(&sql, percent_encoding::NON_ALPHANUMERIC)
        );
        if self.compress {
            let mut encoder =
                flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            encoder.write_all(rows).expect("writing to a Vec");
            let body = encoder.finish().expect("writing to a Vec");
            self.post(&sql, &path, &body, true).map(|_| ())
        } else {
            self.post(&sql, &path, rows, false).map(|_| ())
        }
    }

    fn post(
        &self,
        sql: &str,
        path: &str,
        body: &[u8],
        gzip: bool,
    ) -> Result<String, ClickHouseError> {
        let mut request = self
            .agent
            .post(format!("{}{path}", self.url))
            .header("X-ClickHouse-User", &self.user);
        if !self.password.expose().is_empty() {
            request = request.header("X-ClickHouse-Key", self.password.expose());
        }
        if gzip {
            request = request.header("Content-Encoding", "gzip");
        }
        let mut response = request
            .send(body)
            .map_err(|error| ClickHouseError::Unreachable {
                url: self.url.clone(),
                detail: error.to_string(),
            })?;
        let status = response.status().as_u16();
        let text = response
            .body_mut()
            .with_config()
            .limit(64 << 20)
            .read_to_string()
            .map_err(|error| ClickHouseError::Unreachable {
                url: self.url.clone(),
                detail: format!("reading the response: {error}"),
            })?;
        if status == 200 {
            return Ok(text);
        }
        let message = text.trim().to_string();
        let code = message
            .strip_prefix("Code: ")
            .and_then(|rest| rest.split(|c: char| !c.is_ascii_digit()).next())
            .and_then(|digits| digits.parse().ok());
        // UNKNOWN_USER, WRONG_PASSWORD, REQUIRED_PASSWORD, IP_ADDRESS_NOT_ALLOWED,
        // AUTHENTICATION_FAILED.
        if status == 401
            || status == 403
            || code.is_some_and(|c| [192, 193, 194, 195, 516].contains(&c))
        {
            return Err(ClickHouseError::Auth {
                url: self.url.clone(),
                user: self.user.clone(),
                message,
            });
        }
        let mut query = sql.to_string();
        if query.len() > 300 {
            query.truncate(query.floor_char_boundary(300));
            query.push('…');
        }
        Err(ClickHouseError::Server {
            url: self.url.clone(),
            status,
            code,
            message,
            query,
        })
    }
}

/// One table as ClickHouse has it: the columns Sluice inserts, in order.
struct KnownTable {
    columns: Vec<(String, ColumnType)>,
}

/// The ClickHouse sink of one pipeline instance.
pub struct ClickHouseSink {
    config: ClickHouseConfig,
    client: ClickHouseClient,
    version: ServerVersion,
    pipeline: String,
    tables: BTreeMap<String, KnownTable>,
    retry: Retry,
}

impl ClickHouseSink {
    /// Connects (waiting up to `connect_timeout_ms` for a server that is not up yet),
    /// creates the database and the marker table.
    pub fn connect(
        config: &ClickHouseConfig,
        pipeline: &str,
        stop: Option<Arc<AtomicBool>>,
    ) -> Result<Self, ClickHouseError> {
        let client = ClickHouseClient::new(config);
        let deadline = Instant::now() + Duration::from_millis(config.connect_timeout_ms);
        let mut backoff = super::Backoff::new(Duration::from_millis(config.max_backoff_ms));
        let version = loop {
            match client.query("SELECT version()") {
                Ok(text) => {
                    break ServerVersion::parse(&text).ok_or_else(|| ClickHouseError::Server {
                        url: client.url.clone(),
                        status: 200,
                        code: None,
                        message: format!("cannot parse the server version `{}`", text.trim()),
                        query: "SELECT version()".into(),
                    })?;
                }
                Err(error) if error.retryable() && Instant::now() < deadline => {
                    tracing::warn!(%error, "waiting for ClickHouse");
                    std::thread::sleep(backoff.next_wait().min(deadline - Instant::now()));
                }
                Err(error) => return Err(error),
            }
        };
        let sink = ClickHouseSink {
            config: config.clone(),
            client,
            version,
            pipeline: pipeline.to_string(),
            tables: BTreeMap::new(),
            retry: Retry {
                sink: "clickhouse",
                title: "ClickHouse",
                pipeline: pipeline.to_string(),
                max_backoff: Duration::from_millis(config.max_backoff_ms),
                stop,
            },
        };
        sink.client.query(&format!(
            "CREATE DATABASE IF NOT EXISTS {}",
            quote(&config.database)
        ))?;
        sink.client.query(&format!(
            "CREATE TABLE IF NOT EXISTS {}.{LOADS_TABLE} (pipeline String, instance String, \
             epoch UInt64, table String, rows UInt64, loaded_at DateTime) \
             ENGINE = MergeTree ORDER BY (pipeline, instance, epoch, table)",
            quote(&config.database)
        ))?;
        tracing::info!(url = %config.url, version = ?sink.version, database = %config.database, "ClickHouse connected");
        Ok(sink)
    }

    pub fn version(&self) -> ServerVersion {
        self.version
    }

    pub fn client(&self) -> &ClickHouseClient {
        &self.client
    }

    /// Loads the tables of the configured layer that `record` committed, unless their
    /// markers say they arrived; waits (retrying) while ClickHouse is unavailable.
    pub fn load(
        &mut self,
        record: &CommitRecord,
        lake: &LakeReader,
        io: &tokio::runtime::Runtime,
    ) -> Result<LoadReport, ClickHouseError> {
        let files = super::layer_tables(record, &self.config.layer, self.config.include.as_deref());
        let mut report = LoadReport::default();
        if files.is_empty() {
            return Ok(report);
        }
        let loaded = self.retry(record.epoch, "reading load markers", |sink| {
            sink.loaded_tables(record)
        })?;
        for (table, paths) in files {
            if loaded.contains(&table) {
                report.already_loaded.push(table);
                continue;
            }
            let mut batches = Vec::new();
            for path in paths {
                batches.extend(io.block_on(lake.read_parquet(path))?);
            }
            let rows: u64 = batches.iter().map(|b| b.num_rows() as u64).sum();
            self.insert_batches(record.epoch, &table, &batches)?;
            let marker = format!(
                "INSERT INTO {}.{LOADS_TABLE} VALUES ({}, {}, {}, {}, {rows}, now())",
                quote(&self.config.database),
                literal(&record.pipeline),
                literal(&record.instance),
                record.epoch,
                literal(&table)
            );
            crate::failpoint::hit("clickhouse.before_marker");
            self.retry(record.epoch, "writing a load marker", |sink| {
                sink.client.query(&marker)
            })?;
            report.rows.insert(table, rows);
        }
        Ok(report)
    }

    /// Inserts batches of one lake table (creating or checking the ClickHouse table first),
    /// retrying while ClickHouse is unavailable. `epoch` only labels messages.
    pub fn insert_batches(
        &mut self,
        epoch: u64,
        table: &str,
        batches: &[RecordBatch],
    ) -> Result<(), ClickHouseError> {
        let Some(first) = batches.first() else {
            return Ok(());
        };
        if !self.tables.contains_key(table) {
            let schema = first.schema();
            let known = self.retry(epoch, "preparing a table", |sink| {
                sink.prepare_table(table, &schema)
            })?;
            self.tables.insert(table.to_string(), known);
        }
        let columns = &self.tables[table].columns;
        let rows = encode_row_binary(table, batches, columns)?;
        let count: usize = batches.iter().map(|b| b.num_rows()).sum();
        let pipeline = self.pipeline.clone();
        let labels = [pipeline.as_str(), "clickhouse", table];
        self.retry(epoch, "inserting", |sink| {
            let started = Instant::now();
            let columns = &sink.tables[table].columns;
            sink.client
                .insert(&sink.config.database, table, columns, &rows)?;
            metrics::SINK_WRITE_SECONDS
                .with_label_values(&labels)
                .observe(started.elapsed().as_secs_f64());
            Ok(())
        })?;
        metrics::SINK_ROWS
            .with_label_values(&labels)
            .inc_by(count as u64);
        metrics::SINK_BYTES
            .with_label_values(&labels)
            .inc_by(rows.len() as u64);
        Ok(())
    }

    /// Creates the table if it is missing, then checks that every column fits.
    fn prepare_table(
        &self,
        table: &str,
        schema: &arrow::datatypes::Schema,
    ) -> Result<KnownTable, ClickHouseError> {
        let choices = self.config.tables.get(table).cloned().unwrap_or_default();
        self.client.query(&create_table_sql(
            &self.config.database,
            table,
            schema,
            &choices,
            self.version,
        )?)?;
        let text = self.client.query(&format!(
            "SELECT name, type FROM system.columns WHERE database = {} AND table = {} \
             FORMAT TabSeparated",
            literal(&self.config.database),
            literal(table)
        ))?;
        let existing: BTreeMap<&str, ColumnType> = text
            .lines()
            .filter_map(|line| line.split_once('\t'))
            .map(|(name, ty)| (name, ColumnType::parse(ty)))
            .collect();
        let qualified = format!("{}.{table}", self.config.database);
        let mut columns = Vec::new();
        for field in schema.fields() {
            let Some(target) = existing.get(field.name().as_str()) else {
                return Err(ClickHouseError::Schema {
                    table: qualified,
                    detail: format!(
                        "has no column `{}` (the lake table has it, as {}); add it or drop the table",
                        field.name(),
                        field.data_type()
                    ),
                });
            };
            let empty = arrow::array::new_empty_array(field.data_type());
            if let Err(detail) = cell_writer(empty.as_ref(), target) {
                return Err(ClickHouseError::Schema {
                    table: qualified,
                    detail: format!("column `{}`: {detail}", field.name()),
                });
            }
            if field.is_nullable() && !target.nullable() {
                tracing::warn!(table = %qualified, column = %field.name(), "a nullable lake column goes to a non-Nullable ClickHouse column: a null fails the insert");
            }
            columns.push((field.name().clone(), target.clone()));
        }
        Ok(KnownTable { columns })
    }

    fn loaded_tables(&self, record: &CommitRecord) -> Result<BTreeSet<String>, ClickHouseError> {
        let text = self.client.query(&format!(
            "SELECT DISTINCT table FROM {}.{LOADS_TABLE} WHERE pipeline = {} AND instance = {} \
             AND epoch = {} FORMAT TabSeparated",
            quote(&self.config.database),
            literal(&record.pipeline),
            literal(&record.instance),
            record.epoch
        ))?;
        Ok(text.lines().map(str::to_string).collect())
    }

    /// Runs `op` until it succeeds or fails for a reason waiting cannot fix.
    fn retry<T>(
        &mut self,
        epoch: u64,
        what: &str,
        op: impl FnMut(&mut Self) -> Result<T, ClickHouseError>,
    ) -> Result<T, ClickHouseError> {
        let retry = self.retry.clone();
        retry.run(
            self,
            epoch,
            what,
            |last| ClickHouseError::Stopped { epoch, last },
            op,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{
        BooleanArray, Date32Array, Float64Array, Int32Array, StringArray,
        TimestampMillisecondArray, UInt32Array,
    };
    use arrow::datatypes::Schema;

    fn batch() -> RecordBatch {
        let schema = Schema::new(vec![
            Field::new("date", DataType::Date32, false),
            Field::new("rank", DataType::UInt32, false),
            Field::new("name", DataType::Utf8, true),
            Field::new("x", DataType::Float64, false),
            Field::new("n", DataType::Int32, false),
            Field::new("ok", DataType::Boolean, false),
            Field::new(
                "ts",
                DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into())),
                false,
            ),
        ]);
        RecordBatch::try_new(
            Arc::new(schema),
            vec![
                Arc::new(Date32Array::from(vec![1, 20000])),
                Arc::new(UInt32Array::from(vec![1, 2])),
                Arc::new(StringArray::from(vec![Some("é"), None])),
                Arc::new(Float64Array::from(vec![0.5, -1.0])),
                Arc::new(Int32Array::from(vec![-2, 3])),
                Arc::new(BooleanArray::from(vec![true, false])),
                Arc::new(TimestampMillisecondArray::from(vec![1_500, -1_500]).with_timezone("UTC")),
            ],
        )
        .unwrap()
    }

    #[test]
    fn parses_column_types_as_system_columns_spells_them() {
        assert_eq!(
            ColumnType::parse("Nullable(String)"),
            ColumnType::Nullable(Box::new(ColumnType::String))
        );
        assert_eq!(
            ColumnType::parse("LowCardinality(String)"),
            ColumnType::String
        );
        assert_eq!(
            ColumnType::parse("DateTime64(3, 'UTC')"),
            ColumnType::DateTime64 { precision: 3 }
        );
        assert_eq!(ColumnType::parse("DateTime('UTC')"), ColumnType::DateTime);
        assert_eq!(
            ColumnType::parse("UInt32"),
            ColumnType::Int {
                bits: 32,
                signed: false
            }
        );
        assert_eq!(
            ColumnType::parse("Int64"),
            ColumnType::Int {
                bits: 64,
                signed: true
            }
        );
        assert_eq!(
            ColumnType::parse("Decimal(9, 2)"),
            ColumnType::Other("Decimal(9, 2)".into())
        );
    }

    #[test]
    fn encodes_every_mapped_type_as_row_binary() {
        let batch = batch();
        let columns: Vec<(String, ColumnType)> = [
            ("date", "Date"),
            ("rank", "UInt32"),
            ("name", "Nullable(String)"),
            ("x", "Float64"),
            ("n", "Int32"),
            ("ok", "UInt8"),
            ("ts", "DateTime64(3, 'UTC')"),
        ]
        .iter()
        .map(|(n, t)| (n.to_string(), ColumnType::parse(t)))
        .collect();
        let bytes = encode_row_binary("t", &[batch], &columns).unwrap();
        let mut expected = Vec::new();
        // Row 0.
        expected.extend(1u16.to_le_bytes());
        expected.extend(1u32.to_le_bytes());
        expected.extend([0, 2, 0xc3, 0xa9]);
        expected.extend(0.5f64.to_le_bytes());
        expected.extend((-2i32).to_le_bytes());
        expected.push(1);
        expected.extend(1_500i64.to_le_bytes());
        // Row 1.
        expected.extend(20000u16.to_le_bytes());
        expected.extend(2u32.to_le_bytes());
        expected.push(1);
        expected.extend((-1.0f64).to_le_bytes());
        expected.extend(3i32.to_le_bytes());
        expected.push(0);
        expected.extend((-1_500i64).to_le_bytes());
        assert_eq!(bytes, expected);
    }

    #[test]
    fn rescales_timestamps_and_refuses_what_does_not_fit() {
        let batch = batch();
        let ts = batch.column_by_name("ts").unwrap();
        let mut out = Vec::new();
        cell_writer(ts.as_ref(), &ColumnType::DateTime).unwrap()(0, &mut out).unwrap();
        assert_eq!(out, 1u32.to_le_bytes());
        let error = cell_writer(ts.as_ref(), &ColumnType::DateTime).unwrap()(1, &mut out);
        assert!(
            error
                .unwrap_err()
                .contains("outside ClickHouse's DateTime range")
        );
        out.clear();
        cell_writer(ts.as_ref(), &ColumnType::DateTime64 { precision: 6 }).unwrap()(0, &mut out)
            .unwrap();
        assert_eq!(out, 1_500_000i64.to_le_bytes());

        // A null into a non-Nullable column names the row and column.
        let columns = vec![("name".to_string(), ColumnType::String)];
        let error =
            encode_row_binary("gold.t", std::slice::from_ref(&batch), &columns).unwrap_err();
        assert_eq!(
            error.to_string(),
            "table gold.t, row 1, column `name`: is null, and the ClickHouse column is not Nullable"
        );
        // A type that does not fit is refused before any row is written.
        let columns = vec![("rank".to_string(), ColumnType::String)];
        let error = encode_row_binary("t", &[batch], &columns).unwrap_err();
        assert!(
            error
                .to_string()
                .contains("column `rank`: Arrow type UInt32 cannot be written")
        );
    }

    #[test]
    fn creates_tables_keyed_by_the_declared_key_and_by_version() {
        let schema = batch()
            .schema()
            .as_ref()
            .clone()
            .with_metadata([(KEY_METADATA.to_string(), "date, rank".to_string())].into());
        let choices = crate::config::ClickHouseTableConfig::default();
        let old = create_table_sql("db", "top", &schema, &choices, ServerVersion(18, 16)).unwrap();
        assert_eq!(
            old,
            "CREATE TABLE IF NOT EXISTS `db`.`top` (`date` Date, `rank` UInt32, `name` \
             Nullable(String), `x` Float64, `n` Int32, `ok` UInt8, `ts` Int64) ENGINE = \
             ReplacingMergeTree PARTITION BY toYYYYMM(date) ORDER BY (`date`, `rank`)"
        );
        let new = create_table_sql(
            "db",
            "top",
            &batch().schema(),
            &choices,
            ServerVersion(25, 8),
        )
        .unwrap();
        assert!(new.contains("`ts` DateTime64(3, 'UTC')"), "{new}");
        // Without a declared key: every non-nullable, non-float column.
        assert!(
            new.ends_with("ORDER BY (`date`, `rank`, `n`, `ok`, `ts`)"),
            "{new}"
        );
        let choices = crate::config::ClickHouseTableConfig {
            order_by: Some(vec!["name".into()]),
            ..Default::default()
        };
        let error =
            create_table_sql("db", "top", &schema, &choices, ServerVersion(18, 16)).unwrap_err();
        assert!(
            error.to_string().contains("`name`, which is nullable"),
            "{error}"
        );
    }

    #[test]
    fn secrets_do_not_print() {
        let config = crate::config::Secret::new("hunter2");
        assert_eq!(format!("{config:?}"), "***");
    }
}
