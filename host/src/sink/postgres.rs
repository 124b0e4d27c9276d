//! Loads a lake layer (gold, by default) into PostgreSQL, once per commit, with binary `COPY`.
//!
//! Order of events per epoch, as for ClickHouse: the lake commit makes the epoch's files
//! durable; then the layer's tables are read back from those files and loaded; only then are
//! source positions reported as durable (Kafka offsets committed). While PostgreSQL is
//! unreachable the load is retried with back-off and the pipeline waits behind it. On start,
//! the instance's last committed epoch is loaded again unless its markers say it arrived.
//!
//! Exactly-once without help from the table engine: one epoch is one transaction — a check of
//! the marker table `_sluice_loads`, a `COPY … FROM STDIN (FORMAT binary)` per table and a
//! marker row per table, then `COMMIT`. A crash or an outage anywhere before the commit rolls it
//! all back and the retry (or the next start) loads the epoch again; after the commit the
//! markers make the replay a no-op. So plain tables see every row once.
//!
//! Arrow → PostgreSQL types (an existing table may use any listed type for a column):
//!
//! | Arrow | created as | also accepted |
//! |---|---|---|
//! | Int8, Int16, UInt8 | smallint | integer, bigint |
//! | Int32, UInt16 | integer | smallint (values are range-checked), bigint |
//! | Int64, UInt32, UInt64 | bigint | smallint, integer (range-checked) |
//! | Float32 | real | double precision |
//! | Float64 | double precision | |
//! | Boolean | boolean | |
//! | Utf8, LargeUtf8, Utf8View | text | varchar |
//! | Date32 | date | |
//! | Timestamp(unit, tz) | timestamptz with a time zone, timestamp without (microseconds) | the other one |
//! | non-nullable field | `NOT NULL` | a nullable column |
use super::lake::{CommitRecord, LakeError, LakeReader};
use super::{LoadReport, Retry, SinkFailure};
use crate::config::PostgresConfig;
use crate::metrics;
use arrow::array::{Array, ArrayRef, AsArray, RecordBatch};
use arrow::compute::{CastOptions, cast_with_options};
use arrow::datatypes::{
    DataType, Date32Type, Float32Type, Float64Type, Int64Type, Schema, TimeUnit,
    TimestampMicrosecondType, TimestampMillisecondType, TimestampNanosecondType,
    TimestampSecondType,
};
use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

/// The table of load markers, in the configured schema.
pub const LOADS_TABLE: &str = "_sluice_loads";

/// Days and microseconds from 1970-01-01 (Arrow's epoch) to 2000-01-01 (PostgreSQL's).
const PG_EPOCH_DAYS: i32 = 10_957;
const PG_EPOCH_MICROS: i64 = 946_684_800_000_000;

#[derive(Debug, thiserror::Error)]
pub enum PostgresError {
    #[error("PostgreSQL at {target} is unreachable: {detail}")]
    Unreachable { target: String, detail: String },
    #[error("PostgreSQL at {target} refused user `{user}`: {detail}")]
    Auth {
        target: String,
        user: String,
        detail: String,
    },
    #[error("PostgreSQL at {target}: {detail}\n  statement: {statement}")]
    Server {
        target: String,
        detail: String,
        statement: String,
        transient: bool,
    },
    #[error("PostgreSQL table {table}: {detail}")]
    Schema { table: String, detail: String },
    #[error("table {table}, row {row}, column `{column}`: {detail}")]
    Value {
        table: String,
        row: usize,
        column: String,
        detail: String,
    },
    #[error("postgres.url `{url}`: {detail}")]
    Config { url: String, detail: String },
    #[error("reading the lake for PostgreSQL: {0}")]
    Lake(#[from] LakeError),
    #[error(
        "stopped while PostgreSQL was unavailable ({last}); epoch {epoch} is committed to the lake and is loaded on the next start"
    )]
    Stopped { epoch: u64, last: String },
}

impl SinkFailure for PostgresError {
    fn retryable(&self) -> bool {
        match self {
            PostgresError::Unreachable { .. } => true,
            PostgresError::Server { transient, .. } => *transient,
            _ => false,
        }
    }

    fn kind(&self) -> &'static str {
        match self {
            PostgresError::Unreachable { .. } => "unreachable",
            PostgresError::Auth { .. } => "auth",
            PostgresError::Server { .. } => "server",
            PostgresError::Schema { .. } | PostgresError::Value { .. } => "schema",
            PostgresError::Config { .. } => "config",
            PostgresError::Lake(_) => "lake",
            PostgresError::Stopped { .. } => "stopped",
        }
    }
}

/// SQLSTATEs that waiting may fix: connection exceptions (08), the server shutting down or
/// starting up (57P01-57P03), insufficient resources (53), serialization failures and
/// deadlocks (40001, 40P01).
fn transient(code: &str) -> bool {
    code.starts_with("08")
        || code.starts_with("53")
        || ["57P01", "57P02", "57P03", "40001", "40P01"].contains(&code)
}

/// A driver error as the sink reports it: without a server's answer the server is taken to be
/// unreachable (the connection failed or broke); SQLSTATE class 28 is a refused login.
fn classify(target: &str, user: &str, error: postgres::Error, statement: &str) -> PostgresError {
    let Some(db) = error.as_db_error() else {
        let mut detail = error.to_string();
        let mut source = std::error::Error::source(&error);
        while let Some(cause) = source {
            detail = format!("{detail}: {cause}");
            source = cause.source();
        }
        return PostgresError::Unreachable {
            target: target.to_string(),
            detail,
        };
    };
    let code = db.code().code();
    let mut detail = format!("{} (SQLSTATE {code})", db.message());
    if let Some(more) = db.detail() {
        detail = format!("{detail}; {more}");
    }
    if code.starts_with("28") {
        return PostgresError::Auth {
            target: target.to_string(),
            user: user.to_string(),
            detail,
        };
    }
    PostgresError::Server {
        target: target.to_string(),
        detail,
        statement: statement.to_string(),
        transient: transient(code),
    }
}

/// A PostgreSQL column type, as far as the sink can write it in binary COPY.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PgType {
    Int2,
    Int4,
    Int8,
    Float4,
    Float8,
    Bool,
    Text,
    Date,
    Timestamp,
    Timestamptz,
}

impl PgType {
    /// From `information_schema.columns.udt_name`.
    pub fn from_udt(name: &str) -> Option<PgType> {
        Some(match name {
            "int2" => PgType::Int2,
            "int4" => PgType::Int4,
            "int8" => PgType::Int8,
            "float4" => PgType::Float4,
            "float8" => PgType::Float8,
            "bool" => PgType::Bool,
            "text" | "varchar" => PgType::Text,
            "date" => PgType::Date,
            "timestamp" => PgType::Timestamp,
            "timestamptz" => PgType::Timestamptz,
            _ => return None,
        })
    }

    pub fn sql(self) -> &'static str {
        match self {
            PgType::Int2 => "smallint",
            PgType::Int4 => "integer",
            PgType::Int8 => "bigint",
            PgType::Float4 => "real",
            PgType::Float8 => "double precision",
            PgType::Bool => "boolean",
            PgType::Text => "text",
            PgType::Date => "date",
            PgType::Timestamp => "timestamp",
            PgType::Timestamptz => "timestamptz",
        }
    }

    /// The type Sluice creates for an Arrow type.
    pub fn for_arrow(data_type: &DataType) -> Option<PgType> {
        Some(match data_type {
            DataType::Int8 | DataType::Int16 | DataType::UInt8 => PgType::Int2,
            DataType::Int32 | DataType::UInt16 => PgType::Int4,
            DataType::Int64 | DataType::UInt32 | DataType::UInt64 => PgType::Int8,
            DataType::Float32 => PgType::Float4,
            DataType::Float64 => PgType::Float8,
            DataType::Boolean => PgType::Bool,
            DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => PgType::Text,
            DataType::Date32 => PgType::Date,
            DataType::Timestamp(_, Some(_)) => PgType::Timestamptz,
            DataType::Timestamp(_, None) => PgType::Timestamp,
            _ => return None,
        })
    }
}

/// One Arrow column, converted once per batch into what its PostgreSQL type is written from.
enum Cells {
    Int(arrow::array::Int64Array, PgType),
    Float4(arrow::array::Float32Array),
    Float8(arrow::array::Float64Array),
    Bool(arrow::array::BooleanArray),
    Text(arrow::array::StringArray),
    Date(arrow::array::Date32Array),
    Micros(arrow::array::Int64Array),
}

fn strict_cast(array: &dyn Array, to: &DataType) -> Result<ArrayRef, String> {
    let options = CastOptions {
        safe: false,
        ..Default::default()
    };
    cast_with_options(array, to, &options).map_err(|error| error.to_string())
}

/// Timestamps of any unit as microseconds since 1970 (the time zone only labels them).
fn micros(array: &dyn Array, unit: TimeUnit) -> Result<arrow::array::Int64Array, String> {
    let overflow = || "a timestamp is out of range".to_string();
    let result = match unit {
        TimeUnit::Second => array
            .as_primitive::<TimestampSecondType>()
            .try_unary::<_, Int64Type, _>(|v| {
                v.checked_mul(1_000_000)
                    .ok_or(arrow::error::ArrowError::ComputeError(String::new()))
            }),
        TimeUnit::Millisecond => array
            .as_primitive::<TimestampMillisecondType>()
            .try_unary::<_, Int64Type, _>(|v| {
                v.checked_mul(1_000)
                    .ok_or(arrow::error::ArrowError::ComputeError(String::new()))
            }),
        TimeUnit::Microsecond => Ok(array
            .as_primitive::<TimestampMicrosecondType>()
            .reinterpret_cast::<Int64Type>()),
        TimeUnit::Nanosecond => Ok(array
            .as_primitive::<TimestampNanosecondType>()
            .unary::<_, Int64Type>(|v| v.div_euclid(1_000))),
    };
    result.map_err(|_| overflow())
}

impl Cells {
    /// How `array` is written into a column of type `target`; an error says why it cannot be.
    fn new(array: &dyn Array, target: PgType) -> Result<Cells, String> {
        let source = array.data_type();
        let refuse = || format!("{source} cannot be written to a {} column", target.sql());
        Ok(match target {
            PgType::Int2 | PgType::Int4 | PgType::Int8 => {
                if !source.is_integer() {
                    return Err(refuse());
                }
                let values = strict_cast(array, &DataType::Int64)?;
                Cells::Int(values.as_primitive::<Int64Type>().clone(), target)
            }
            PgType::Float4 if *source == DataType::Float32 => {
                Cells::Float4(array.as_primitive::<Float32Type>().clone())
            }
            PgType::Float8 if source.is_floating() => {
                let values = strict_cast(array, &DataType::Float64)?;
                Cells::Float8(values.as_primitive::<Float64Type>().clone())
            }
            PgType::Bool if *source == DataType::Boolean => Cells::Bool(array.as_boolean().clone()),
            PgType::Text
                if matches!(
                    source,
                    DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View
                ) =>
            {
                let values = strict_cast(array, &DataType::Utf8)?;
                Cells::Text(values.as_string::<i32>().clone())
            }
            PgType::Date if *source == DataType::Date32 => {
                Cells::Date(array.as_primitive::<Date32Type>().clone())
            }
            PgType::Timestamp | PgType::Timestamptz => match source {
                DataType::Timestamp(unit, _) => Cells::Micros(micros(array, *unit)?),
                _ => return Err(refuse()),
            },
            _ => return Err(refuse()),
        })
    }

    fn is_null(&self, row: usize) -> bool {
        match self {
            Cells::Int(a, _) | Cells::Micros(a) => a.is_null(row),
            Cells::Float4(a) => a.is_null(row),
            Cells::Float8(a) => a.is_null(row),
            Cells::Bool(a) => a.is_null(row),
            Cells::Text(a) => a.is_null(row),
            Cells::Date(a) => a.is_null(row),
        }
    }

    /// Appends one field of a binary COPY tuple: its length, then its bytes.
    fn write(&self, row: usize, out: &mut Vec<u8>) -> Result<(), String> {
        if self.is_null(row) {
            out.extend_from_slice(&(-1i32).to_be_bytes());
            return Ok(());
        }
        match self {
            Cells::Int(values, target) => {
                let value = values.value(row);
                let fits = |bits: u32| value >= -(1i64 << (bits - 1)) && value < 1i64 << (bits - 1);
                match target {
                    PgType::Int2 if fits(16) => {
                        out.extend_from_slice(&2i32.to_be_bytes());
                        out.extend_from_slice(&(value as i16).to_be_bytes());
                    }
                    PgType::Int4 if fits(32) => {
                        out.extend_from_slice(&4i32.to_be_bytes());
                        out.extend_from_slice(&(value as i32).to_be_bytes());
                    }
                    PgType::Int8 => {
                        out.extend_from_slice(&8i32.to_be_bytes());
                        out.extend_from_slice(&value.to_be_bytes());
                    }
                    _ => return Err(format!("{value} does not fit a {} column", target.sql())),
                }
            }
            Cells::Float4(values) => {
                out.extend_from_slice(&4i32.to_be_bytes());
                out.extend_from_slice(&values.value(row).to_be_bytes());
            }
            Cells::Float8(values) => {
                out.extend_from_slice(&8i32.to_be_bytes());
                out.extend_from_slice(&values.value(row).to_be_bytes());
            }
            Cells::Bool(values) => {
                out.extend_from_slice(&1i32.to_be_bytes());
                out.push(values.value(row) as u8);
            }
            Cells::Text(values) => {
                let text = values.value(row);
                if text.contains('\0') {
                    return Err(
                        "contains a NUL character, which PostgreSQL text cannot hold".into(),
                    );
                }
                let len = i32::try_from(text.len()).map_err(|_| "longer than 2 GiB".to_string())?;
                out.extend_from_slice(&len.to_be_bytes());
                out.extend_from_slice(text.as_bytes());
            }
            Cells::Date(values) => {
                out.extend_from_slice(&4i32.to_be_bytes());
                out.extend_from_slice(&(values.value(row) - PG_EPOCH_DAYS).to_be_bytes());
            }
            Cells::Micros(values) => {
                let micros = values
                    .value(row)
                    .checked_sub(PG_EPOCH_MICROS)
                    .ok_or("a timestamp is out of range")?;
                out.extend_from_slice(&8i32.to_be_bytes());
                out.extend_from_slice(&micros.to_be_bytes());
            }
        }
        Ok(())
    }
}

/// Encodes batches as one `COPY … (FORMAT binary)` stream for `columns` (the table's columns
/// Sluice writes, in order, each taken from the batch column of the same name).
pub fn encode_binary_copy(
    table: &str,
    batches: &[RecordBatch],
    columns: &[(String, PgType)],
) -> Result<Vec<u8>, PostgresError> {
    let mut out = Vec::with_capacity(1 << 16);
    out.extend_from_slice(b"PGCOPY\n\xff\r\n\0");
    out.extend_from_slice(&0i32.to_be_bytes()); // flags
    out.extend_from_slice(&0i32.to_be_bytes()); // header extension length
    let field_count = i16::try_from(columns.len()).map_err(|_| PostgresError::Schema {
        table: table.to_string(),
        detail: format!("{} columns are more than COPY takes", columns.len()),
    })?;
    let mut row_base = 0;
    for batch in batches {
        let mut cells = Vec::with_capacity(columns.len());
        for (name, target) in columns {
            let column = batch
                .column_by_name(name)
                .ok_or_else(|| PostgresError::Schema {
                    table: table.to_string(),
                    detail: format!("the lake table has no column `{name}` in this file"),
                })?;
            cells.push(Cells::new(column.as_ref(), *target).map_err(|detail| {
                PostgresError::Schema {
                    table: table.to_string(),
                    detail: format!("column `{name}`: {detail}"),
                }
            })?);
        }
        for row in 0..batch.num_rows() {
            out.extend_from_slice(&field_count.to_be_bytes());
            for ((name, _), cell) in columns.iter().zip(&cells) {
                cell.write(row, &mut out)
                    .map_err(|detail| PostgresError::Value {
                        table: table.to_string(),
                        row: row_base + row,
                        column: name.clone(),
                        detail,
                    })?;
            }
        }
        row_base += batch.num_rows();
    }
    out.extend_from_slice(&(-1i16).to_be_bytes());
    Ok(out)
}

/// A double-quoted identifier.
fn quote(identifier: &str) -> String {
    format!("\"{}\"", identifier.replace('"', "\"\""))
}

/// `CREATE TABLE IF NOT EXISTS` for a lake table's schema.
pub fn create_table_sql(
    schema_name: &str,
    table: &str,
    schema: &Schema,
) -> Result<String, PostgresError> {
    let mut columns = Vec::new();
    for field in schema.fields() {
        let ty = PgType::for_arrow(field.data_type()).ok_or_else(|| PostgresError::Schema {
            table: format!("{schema_name}.{table}"),
            detail: format!(
                "column `{}`: Sluice does not map {} to a PostgreSQL type; create the table yourself",
                field.name(),
                field.data_type()
            ),
        })?;
        let not_null = if field.is_nullable() { "" } else { " NOT NULL" };
        columns.push(format!("{} {}{not_null}", quote(field.name()), ty.sql()));
    }
    Ok(format!(
        "CREATE TABLE IF NOT EXISTS {}.{} ({})",
        quote(schema_name),
        quote(table),
        columns.join(", ")
    ))
}

/// The PostgreSQL sink of one pipeline instance.
pub struct PostgresSink {
    config: PostgresConfig,
    connect: postgres::Config,
    /// `host:port/database`, for messages.
    target: String,
    user: String,
    client: Option<postgres::Client>,
    /// The columns Sluice writes, per table, once prepared.
    tables: BTreeMap<String, Vec<(String, PgType)>>,
    retry: Retry,
}

impl PostgresSink {
    /// Connects (waiting up to `connect_timeout_ms` for a server that is not up yet) and
    /// creates the schema and the marker table.
    pub fn connect(
        config: &PostgresConfig,
        pipeline: &str,
        stop: Option<Arc<AtomicBool>>,
    ) -> Result<Self, PostgresError> {
        let mut connect: postgres::Config =
            config
                .url
                .parse()
                .map_err(|error: postgres::Error| PostgresError::Config {
                    url: config.url.clone(),
                    detail: error.to_string(),
                })?;
        if !config.password.expose().is_empty() {
            connect.password(config.password.expose());
        }
        connect
            .application_name("sluice")
            .connect_timeout(Duration::from_secs(10));
        let hosts: Vec<String> = connect
            .get_hosts()
            .iter()
            .map(|host| match host {
                postgres::config::Host::Tcp(name) => name.clone(),
                postgres::config::Host::Unix(path) => path.display().to_string(),
            })
            .collect();
        let port = connect.get_ports().first().copied().unwrap_or(5432);
        let target = format!(
            "{}:{port}/{}",
            hosts.join(","),
            connect.get_dbname().unwrap_or_default()
        );
        let user = connect.get_user().unwrap_or_default().to_string();
        let mut sink = PostgresSink {
            config: config.clone(),
            connect,
            target,
            user,
            client: None,
            tables: BTreeMap::new(),
            retry: Retry {
                sink: "postgres",
                title: "PostgreSQL",
                pipeline: pipeline.to_string(),
                max_backoff: Duration::from_millis(config.max_backoff_ms),
                stop,
            },
        };
        let deadline = Instant::now() + Duration::from_millis(config.connect_timeout_ms);
        let mut backoff = super::Backoff::new(sink.retry.max_backoff);
        loop {
            match sink.client() {
                Ok(_) => break,
                Err(error) if error.retryable() && Instant::now() < deadline => {
                    tracing::warn!(%error, "waiting for PostgreSQL");
                    std::thread::sleep(
                        backoff
                            .next_wait()
                            .min(deadline.saturating_duration_since(Instant::now())),
                    );
                }
                Err(error) => return Err(error),
            }
        }
        let schema = quote(&config.schema);
        sink.execute(&format!("CREATE SCHEMA IF NOT EXISTS {schema}"))?;
        sink.execute(&format!(
            "CREATE TABLE IF NOT EXISTS {schema}.{LOADS_TABLE} (pipeline text NOT NULL, \
             instance text NOT NULL, epoch bigint NOT NULL, \"table\" text NOT NULL, \
             rows bigint NOT NULL, loaded_at timestamptz NOT NULL DEFAULT now(), \
             PRIMARY KEY (pipeline, instance, epoch, \"table\"))"
        ))?;
        tracing::info!(target = %sink.target, schema = %config.schema, "PostgreSQL connected");
        Ok(sink)
    }

    /// The open connection, connecting again when there is none or it was closed.
    fn client(&mut self) -> Result<&mut postgres::Client, PostgresError> {
        if self.client.as_ref().is_none_or(postgres::Client::is_closed) {
            self.client = None;
            let client = self
                .connect
                .connect(postgres::NoTls)
                .map_err(|error| self.error(error, "(connecting)"))?;
            self.client = Some(client);
        }
        Ok(self.client.as_mut().expect("connected above"))
    }

    fn error(&self, error: postgres::Error, statement: &str) -> PostgresError {
        classify(&self.target, &self.user, error, statement)
    }

    fn execute(&mut self, statement: &str) -> Result<(), PostgresError> {
        let result = self.client()?.batch_execute(statement);
        result.map_err(|error| self.error(error, statement))
    }

    /// Loads the tables of the configured layer that `record` committed, in one transaction
    /// with their markers, unless the markers say they arrived; waits (retrying) while
    /// PostgreSQL is unavailable.
    pub fn load(
        &mut self,
        record: &CommitRecord,
        lake: &LakeReader,
        io: &tokio::runtime::Runtime,
    ) -> Result<LoadReport, PostgresError> {
        let files = super::layer_tables(record, &self.config.layer, self.config.include.as_deref());
        if files.is_empty() {
            return Ok(LoadReport::default());
        }
        let mut tables = Vec::new();
        for (table, paths) in files {
            let mut batches = Vec::new();
            for path in paths {
                batches.extend(io.block_on(lake.read_parquet(path))?);
            }
            tables.push((table, batches));
        }
        let retry = self.retry.clone();
        let epoch = record.epoch;
        retry.run(
            self,
            epoch,
            "loading",
            |last| PostgresError::Stopped { epoch, last },
            |sink| {
                let result = sink.load_epoch(record, &tables);
                if result.is_err() && sink.client.as_ref().is_some_and(|c| c.is_closed()) {
                    sink.client = None;
                }
                result
            },
        )
    }

    fn load_epoch(
        &mut self,
        record: &CommitRecord,
        tables: &[(String, Vec<RecordBatch>)],
    ) -> Result<LoadReport, PostgresError> {
        let mut copies = Vec::new();
        for (table, batches) in tables {
            let Some(first) = batches.first() else {
                continue;
            };
            if !self.tables.contains_key(table) {
                let columns = self.prepare_table(table, &first.schema())?;
                self.tables.insert(table.clone(), columns);
            }
            let columns = &self.tables[table];
            let bytes = encode_binary_copy(table, batches, columns)?;
            let rows: u64 = batches.iter().map(|b| b.num_rows() as u64).sum();
            let names: Vec<String> = columns.iter().map(|(name, _)| quote(name)).collect();
            let statement = format!(
                "COPY {}.{} ({}) FROM STDIN (FORMAT binary)",
                quote(&self.config.schema),
                quote(table),
                names.join(", ")
            );
            copies.push((table.as_str(), statement, bytes, rows));
        }
        let schema = quote(&self.config.schema);
        let markers = format!(
            "INSERT INTO {schema}.{LOADS_TABLE} (pipeline, instance, epoch, \"table\", rows) \
             VALUES ($1, $2, $3, $4, $5)"
        );
        let check = format!(
            "SELECT \"table\" FROM {schema}.{LOADS_TABLE} \
             WHERE pipeline = $1 AND instance = $2 AND epoch = $3"
        );
        let epoch = i64::try_from(record.epoch).expect("epochs stay far below 2^63");
        let (target, user) = (self.target.clone(), self.user.clone());
        let fail = |error, statement: &str| classify(&target, &user, error, statement);
        let pipeline = self.retry.pipeline.clone();
        let started = Instant::now();
        let mut report = LoadReport::default();
        let client = self.client()?;
        let mut transaction = client.transaction().map_err(|e| fail(e, "BEGIN"))?;
        let loaded: BTreeSet<String> = transaction
            .query(&check, &[&record.pipeline, &record.instance, &epoch])
            .map_err(|e| fail(e, &check))?
            .iter()
            .map(|row| row.get(0))
            .collect();
        for (table, statement, bytes, rows) in &copies {
            if loaded.contains(*table) {
                report.already_loaded.push(table.to_string());
                continue;
            }
            let mut writer = transaction
                .copy_in(statement.as_str())
                .map_err(|e| fail(e, statement))?;
            if let Err(error) = writer.write_all(bytes) {
                // The server's reason, when it sent one, comes with finish().
                return Err(match writer.finish() {
                    Err(reason) => fail(reason, statement),
                    Ok(_) => PostgresError::Unreachable {
                        target: target.clone(),
                        detail: format!("sending COPY data: {error}"),
                    },
                });
            }
            writer.finish().map_err(|e| fail(e, statement))?;
            transaction
                .execute(
                    &markers,
                    &[
                        &record.pipeline,
                        &record.instance,
                        &epoch,
                        &table.to_string(),
                        &(*rows as i64),
                    ],
                )
                .map_err(|e| fail(e, &markers))?;
            report.rows.insert(table.to_string(), *rows);
        }
        crate::failpoint::hit("postgres.before_commit");
        transaction.commit().map_err(|e| fail(e, "COMMIT"))?;
        for (table, _, bytes, rows) in &copies {
            if report.rows.contains_key(*table) {
                let labels = [pipeline.as_str(), "postgres", table];
                metrics::SINK_ROWS.with_label_values(&labels).inc_by(*rows);
                metrics::SINK_BYTES
                    .with_label_values(&labels)
                    .inc_by(bytes.len() as u64);
                metrics::SINK_WRITE_SECONDS
                    .with_label_values(&labels)
                    .observe(started.elapsed().as_secs_f64());
            }
        }
        tracing::debug!(%target, epoch, rows = ?report.rows, "PostgreSQL loaded");
        Ok(report)
    }

    /// Creates the table if it is missing, then checks that every lake column fits its column.
    fn prepare_table(
        &mut self,
        table: &str,
        schema: &Schema,
    ) -> Result<Vec<(String, PgType)>, PostgresError> {
        let qualified = format!("{}.{table}", self.config.schema);
        self.execute(&create_table_sql(&self.config.schema, table, schema)?)?;
        let statement = "SELECT column_name, udt_name FROM information_schema.columns \
                         WHERE table_schema = $1 AND table_name = $2";
        let schema_name = self.config.schema.clone();
        let rows = self
            .client()?
            .query(statement, &[&schema_name, &table])
            .map_err(|error| self.error(error, statement))?;
        let existing: BTreeMap<String, String> =
            rows.iter().map(|row| (row.get(0), row.get(1))).collect();
        let mut columns = Vec::new();
        for field in schema.fields() {
            let Some(udt) = existing.get(field.name()) else {
                return Err(PostgresError::Schema {
                    table: qualified,
                    detail: format!(
                        "has no column `{}` (the lake table has it, as {}); add it or drop the table",
                        field.name(),
                        field.data_type()
                    ),
                });
            };
            let target = PgType::from_udt(udt).ok_or_else(|| PostgresError::Schema {
                table: qualified.clone(),
                detail: format!(
                    "column `{}` is {udt}, which Sluice does not write",
                    field.name()
                ),
            })?;
            let empty = arrow::array::new_empty_array(field.data_type());
            if let Err(detail) = Cells::new(empty.as_ref(), target) {
                return Err(PostgresError::Schema {
                    table: qualified,
                    detail: format!("column `{}`: {detail}", field.name()),
                });
            }
            columns.push((field.name().clone(), target));
        }
        Ok(columns)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{
        BooleanArray, Date32Array, Float32Array, Float64Array, Int32Array, StringArray,
        TimestampMillisecondArray, UInt64Array,
    };
    use arrow::datatypes::Field;

    fn batch() -> RecordBatch {
        let schema = Schema::new(vec![
            Field::new("id", DataType::UInt64, false),
            Field::new("n", DataType::Int32, true),
            Field::new("f", DataType::Float32, false),
            Field::new("d", DataType::Float64, false),
            Field::new("ok", DataType::Boolean, false),
            Field::new("s", DataType::Utf8, true),
            Field::new("day", DataType::Date32, false),
            Field::new(
                "ts",
                DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into())),
                false,
            ),
        ]);
        RecordBatch::try_new(
            Arc::new(schema),
            vec![
                Arc::new(UInt64Array::from(vec![7])),
                Arc::new(Int32Array::from(vec![None])),
                Arc::new(Float32Array::from(vec![1.5])),
                Arc::new(Float64Array::from(vec![-2.25])),
                Arc::new(BooleanArray::from(vec![true])),
                Arc::new(StringArray::from(vec![Some("hé")])),
                Arc::new(Date32Array::from(vec![10_958])),
                Arc::new(
                    TimestampMillisecondArray::from(vec![946_684_800_001]).with_timezone("UTC"),
                ),
            ],
        )
        .unwrap()
    }

    fn columns(batch: &RecordBatch) -> Vec<(String, PgType)> {
        batch
            .schema()
            .fields()
            .iter()
            .map(|f| (f.name().clone(), PgType::for_arrow(f.data_type()).unwrap()))
            .collect()
    }

    #[test]
    fn encodes_binary_copy_as_postgres_defines_it() {
        let batch = batch();
        let bytes =
            encode_binary_copy("t", std::slice::from_ref(&batch), &columns(&batch)).unwrap();
        let mut expected = b"PGCOPY\n\xff\r\n\0".to_vec();
        expected.extend_from_slice(&[0; 8]);
        expected.extend_from_slice(&8i16.to_be_bytes());
        for field in [
            &[0, 0, 0, 8, 0, 0, 0, 0, 0, 0, 0, 7][..],   // bigint 7
            &[0xff, 0xff, 0xff, 0xff],                   // NULL
            &[0, 0, 0, 4, 0x3f, 0xc0, 0, 0],             // real 1.5
            &[0, 0, 0, 8, 0xc0, 0x02, 0, 0, 0, 0, 0, 0], // double -2.25
            &[0, 0, 0, 1, 1],                            // true
            &[0, 0, 0, 3, b'h', 0xc3, 0xa9],             // UTF-8 text
            &[0, 0, 0, 4, 0, 0, 0, 1],                   // 2000-01-02
            &[0, 0, 0, 8, 0, 0, 0, 0, 0, 0, 0x03, 0xe8], // 2000-01-01 00:00:00.001
        ] {
            expected.extend_from_slice(field);
        }
        expected.extend_from_slice(&(-1i16).to_be_bytes());
        assert_eq!(bytes, expected);
    }

    #[test]
    fn names_the_row_and_column_of_a_value_that_does_not_fit() {
        let schema = Arc::new(Schema::new(vec![
            Field::new("big", DataType::Int64, false),
            Field::new("s", DataType::Utf8, false),
        ]));
        let batch = RecordBatch::try_new(
            schema,
            vec![
                Arc::new(arrow::array::Int64Array::from(vec![1, 70_000])),
                Arc::new(StringArray::from(vec!["a", "b\0"])),
            ],
        )
        .unwrap();
        let error = encode_binary_copy(
            "t",
            std::slice::from_ref(&batch),
            &[("big".into(), PgType::Int2)],
        )
        .unwrap_err()
        .to_string();
        assert_eq!(
            error,
            "table t, row 1, column `big`: 70000 does not fit a smallint column"
        );
        let error = encode_binary_copy(
            "t",
            std::slice::from_ref(&batch),
            &[("s".into(), PgType::Text)],
        )
        .unwrap_err()
        .to_string();
        assert!(
            error.contains("row 1, column `s`: contains a NUL"),
            "{error}"
        );
        let error = encode_binary_copy("t", &[batch], &[("s".into(), PgType::Int8)])
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("column `s`: Utf8 cannot be written to a bigint column"),
            "{error}"
        );
    }

    #[test]
    fn creates_tables_from_arrow_schemas() {
        let sql = create_table_sql("sluice", "t", &batch().schema()).unwrap();
        assert_eq!(
            sql,
            "CREATE TABLE IF NOT EXISTS \"sluice\".\"t\" (\"id\" bigint NOT NULL, \"n\" integer, \
             \"f\" real NOT NULL, \"d\" double precision NOT NULL, \"ok\" boolean NOT NULL, \
             \"s\" text, \"day\" date NOT NULL, \"ts\" timestamptz NOT NULL)"
        );
        let odd = Schema::new(vec![Field::new(
            "l",
            DataType::List(Arc::new(Field::new("item", DataType::Int32, true))),
            true,
        )]);
        let error = create_table_sql("sluice", "t", &odd)
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("column `l`: Sluice does not map List"),
            "{error}"
        );
    }

    #[test]
    fn only_transient_states_are_retried() {
        assert!(transient("08006") && transient("57P03") && transient("40001"));
        assert!(!transient("42P01") && !transient("23505") && !transient("28P01"));
    }
}
