use crate::source::generator::GeneratorConfig;
use crate::stage::Limits;
use serde::Deserialize;
use std::path::PathBuf;

/// A pipeline file. Every struct refuses unknown keys, so a typo is an error, not a default.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PipelineConfig {
    /// Names the pipeline's commits and state in the lake.
    pub name: String,
    /// Names this host process among several that run the pipeline on one lake (members of
    /// one Kafka consumer group): each keeps its own commit log, so each needs its own name.
    #[serde(default = "default_instance")]
    pub instance: String,
    pub source: SourceConfig,
    /// Records per batch: the unit of work of every stage and sink.
    #[serde(default = "default_batch_rows")]
    pub batch_rows: usize,
    #[serde(default)]
    pub schemas: SchemasConfig,
    /// The epoch-milliseconds column that `date` and `hour` partitions derive from.
    #[serde(default = "default_event_time")]
    pub event_time: String,
    /// How far behind the latest event time a record may arrive and still count: each stage's
    /// watermark is the latest event time that reached it minus this.
    #[serde(default = "default_allowed_lateness_ms")]
    pub allowed_lateness_ms: i64,
    pub lake: LakeConfig,
    /// Writes decoded source records, as raw as possible, to the `bronze` layer.
    #[serde(default)]
    pub bronze: Option<LayerConfig>,
    #[serde(default)]
    pub stages: Vec<StageConfig>,
    /// Loads a layer's committed tables (gold, by default) into ClickHouse.
    #[serde(default)]
    pub clickhouse: Option<ClickHouseConfig>,
    /// Loads a layer's committed tables (gold, by default) into PostgreSQL.
    #[serde(default)]
    pub postgres: Option<PostgresConfig>,
    /// Serves the admin API, `/metrics` and the status page while the pipeline runs.
    #[serde(default)]
    pub admin: Option<AdminConfig>,
    /// Batch jobs (backfills, compactions) the running pipeline does on a schedule, between
    /// two batches, as the original stack's Airflow did.
    #[serde(default)]
    pub schedule: Vec<ScheduledJob>,
}

/// One entry of `schedule:`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScheduledJob {
    /// Names the job in logs, metrics and the status page.
    pub name: String,
    /// When it runs: crontab syntax (minute hour day-of-month month day-of-week, or `@daily`
    /// …; six fields start with seconds), in UTC.
    pub cron: String,
    pub job: JobKind,
    /// `compact`: the layers to compact (default: those the stages write, and their dead
    /// letters).
    #[serde(default)]
    pub layers: Vec<String>,
    /// `compact`: a partition folder is merged once it has this many small files.
    #[serde(default = "default_min_files")]
    pub min_files: usize,
    /// `compact`: merged files stop growing at about this size.
    #[serde(default = "default_target_file_mb")]
    pub target_file_mb: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobKind {
    /// Rebuild the layers the stages write from bronze (`sluice backfill`).
    Backfill,
    /// Merge small files (`sluice compact`).
    Compact,
}

impl JobKind {
    pub fn name(self) -> &'static str {
        match self {
            JobKind::Backfill => "backfill",
            JobKind::Compact => "compact",
        }
    }
}

fn default_min_files() -> usize {
    4
}

fn default_target_file_mb() -> u64 {
    128
}

/// The admin HTTP server (see `admin`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminConfig {
    /// `IP:PORT` to listen on. Anything but a loopback address needs a `token`.
    #[serde(default = "default_admin_listen")]
    pub listen: String,
    /// Required as `Authorization: Bearer <token>` on every endpoint but `/health` and
    /// `/ready` (use `${ENV_VAR}`). Empty means none, so `${SLUICE_ADMIN_TOKEN:-}` works
    /// for a deployment that sets it and a laptop that does not.
    #[serde(default, deserialize_with = "empty_as_none")]
    pub token: Option<String>,
}

fn empty_as_none<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<String>, D::Error> {
    let value: Option<String> = Option::deserialize(deserializer)?;
    Ok(value.filter(|v| !v.is_empty()))
}

pub fn default_admin_listen() -> String {
    "127.0.0.1:9464".to_string()
}

fn default_instance() -> String {
    "main".to_string()
}

fn default_batch_rows() -> usize {
    8192
}

fn default_allowed_lateness_ms() -> i64 {
    60_000
}

fn default_event_time() -> String {
    "ts".to_string()
}

/// Exactly one kind of source. (A struct of options rather than an enum: YAML users write
/// `source: {generator: …}`, which serde_norway would otherwise expect as a `!generator` tag.)
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceConfig {
    /// The built-in EventSim-compatible generator.
    #[serde(default)]
    pub generator: Option<GeneratorConfig>,
    /// JSON lines files.
    #[serde(default)]
    pub files: Option<FilesConfig>,
    /// Apache Kafka topics, consumed as a member of a consumer group.
    #[serde(default)]
    pub kafka: Option<KafkaConfig>,
}

pub enum SourceKind<'a> {
    Generator(&'a GeneratorConfig),
    Files(&'a FilesConfig),
    Kafka(&'a KafkaConfig),
}

impl SourceConfig {
    /// The configured source; `None` unless exactly one is given (validation reports that).
    pub fn kind(&self) -> Option<SourceKind<'_>> {
        match (&self.generator, &self.files, &self.kafka) {
            (Some(generator), None, None) => Some(SourceKind::Generator(generator)),
            (None, Some(files), None) => Some(SourceKind::Files(files)),
            (None, None, Some(kafka)) => Some(SourceKind::Kafka(kafka)),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaConfig {
    /// Bootstrap servers, `host:port[,host:port…]`.
    pub brokers: String,
    pub topics: Vec<String>,
    /// The consumer group: processes in one group split the partitions between them.
    pub group: String,
    #[serde(default)]
    pub format: KafkaFormat,
    /// Avro schemas (JSON text) by topic, for `format: avro`.
    #[serde(default)]
    pub avro_schemas: std::collections::BTreeMap<String, String>,
    /// Base URL of a Confluent-compatible Schema Registry, for `format: confluent_avro`.
    #[serde(default)]
    pub schema_registry: Option<String>,
    /// Messages that do not decode are also produced here, with the error and their origin
    /// in headers (they always go to the lake's `_rejects/` too).
    #[serde(default)]
    pub dead_letter_topic: Option<String>,
    /// A partition's batch is handed on when it has `batch_rows` records or is this old.
    #[serde(default = "default_max_batch_ms")]
    pub max_batch_ms: u64,
    /// Where a partition starts when neither the lake nor the group has a position for it.
    #[serde(default)]
    pub start: KafkaStart,
    /// Stop (after a final commit) once no message has arrived for this long: drains a topic
    /// and exits, for backfills and tests. Unset: run until stopped (SIGTERM, Ctrl-C).
    #[serde(default)]
    pub exit_when_idle_ms: Option<u64>,
    /// Extra librdkafka settings (`session.timeout.ms`, `security.protocol`, …).
    #[serde(default)]
    pub options: std::collections::BTreeMap<String, String>,
}

fn default_max_batch_ms() -> u64 {
    500
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KafkaFormat {
    /// One JSON object per message, decoded with the topic's declared schema.
    #[default]
    Json,
    /// Plain Avro binary datums, with the writer schema given in `avro_schemas`.
    Avro,
    /// Confluent wire format: magic byte 0, a 4-byte schema id, an Avro datum; schemas are
    /// fetched from `schema_registry` and cached.
    ConfluentAvro,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KafkaStart {
    #[default]
    Earliest,
    Latest,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FilesConfig {
    /// Glob patterns, relative to the working directory; read in sorted order.
    pub paths: Vec<String>,
    /// The topic of every record; by default the file name without extension.
    #[serde(default)]
    pub topic: Option<String>,
}

/// Declared schemas per topic: a built-in set and/or explicit fields.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SchemasConfig {
    #[serde(default = "default_builtin")]
    pub builtin: Option<String>,
    #[serde(default)]
    pub topics: std::collections::BTreeMap<String, Vec<FieldConfig>>,
}

fn default_builtin() -> Option<String> {
    Some("eventsim".to_string())
}

impl Default for SchemasConfig {
    fn default() -> Self {
        SchemasConfig {
            builtin: default_builtin(),
            topics: Default::default(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FieldConfig {
    pub name: String,
    #[serde(rename = "type")]
    pub data_type: FieldType,
    #[serde(default = "yes")]
    pub nullable: bool,
}

fn yes() -> bool {
    true
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FieldType {
    String,
    Int32,
    Int64,
    Float64,
    Boolean,
    /// Epoch milliseconds, stored as a UTC timestamp.
    TimestampMs,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LakeConfig {
    /// `file:///abs/path` or `file://./relative/path` (relative to the working directory).
    pub uri: String,
    /// Source records per commit: files are closed, renamed into place and the source
    /// position recorded every this many records (and at the end of input).
    #[serde(default = "default_commit_rows")]
    pub commit_rows: u64,
    /// Commits early when open files hold more than this many MiB (Parquet's own estimate),
    /// so memory is bounded by this setting, not by the input or by how many partitions an
    /// epoch touches. Measured (benchmark job clean, 20M events, BENCHMARKS.md): peak RSS
    /// 256 MiB at 16, 309 MiB at 64 (the default); decoding, the plugins and the encoder
    /// queues take the other ~240 MiB whatever this is.
    #[serde(default = "default_max_buffer_mb")]
    pub max_buffer_mb: u64,
    /// An unbounded source (Kafka) also commits when this much time has passed since the
    /// last commit, so a quiet stream still becomes durable.
    #[serde(default = "default_commit_interval_ms")]
    pub commit_interval_ms: u64,
    /// zstd level of the Parquet files. 1 by default (as parquet-rs and ClickHouse): pages
    /// are dictionary- and RLE-encoded first, which leaves zstd little to find. On EventSim
    /// data level 3 made the lake 0.4 % smaller for 6 % more CPU.
    #[serde(default = "default_zstd_level")]
    pub zstd_level: i32,
    /// The table format of each layer: `parquet` (hive-partitioned files, the default) or
    /// `delta` (Delta Lake tables: the same files, made visible by the table's log).
    #[serde(default)]
    pub formats: std::collections::BTreeMap<String, TableFormat>,
    /// Which columns of each layer get min/max statistics (per page and per row group):
    /// `all`, `numbers` (number and time columns) or `none`. Default: `numbers` for bronze,
    /// `all` for the others (see [`ColumnStatistics`]).
    #[serde(default)]
    pub statistics: std::collections::BTreeMap<String, ColumnStatistics>,
}

/// The columns whose Parquet files carry min/max statistics.
///
/// Bronze defaults to `numbers`: its files are read whole (a replay, a backfill) or by time,
/// and the min/max of a raw, unsorted string column (a user agent, a song, a user id) spans
/// every value and prunes nothing. Computing them compares every string value twice, 4 % of
/// the benchmark's silver job per layer; times and numbers cost little and do prune.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ColumnStatistics {
    All,
    Numbers,
    None,
}

impl ColumnStatistics {
    /// What `layer` gets, given the choices a pipeline made.
    pub fn of_layer(
        chosen: &std::collections::BTreeMap<String, ColumnStatistics>,
        layer: &str,
    ) -> Self {
        match chosen.get(layer) {
            Some(statistics) => *statistics,
            None if layer == "bronze" => ColumnStatistics::Numbers,
            None => ColumnStatistics::All,
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TableFormat {
    #[default]
    Parquet,
    Delta,
}

impl LakeConfig {
    /// The layers stored as Delta Lake tables.
    pub fn delta_layers(&self) -> Vec<String> {
        self.formats
            .iter()
            .filter(|(_, f)| **f == TableFormat::Delta)
            .map(|(layer, _)| layer.clone())
            .collect()
    }
}

fn default_commit_rows() -> u64 {
    1_000_000
}

fn default_commit_interval_ms() -> u64 {
    5_000
}

fn default_max_buffer_mb() -> u64 {
    64
}

fn default_zstd_level() -> i32 {
    1
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LayerConfig {
    /// Hive partition keys: `date` and `hour` (from the event time) or column names.
    #[serde(default)]
    pub partition_by: Vec<String>,
    /// The column `date`/`hour` partitions of this stage's outputs derive from (default: the
    /// pipeline's `event_time`), e.g. `session_start` for sessions.
    #[serde(default)]
    pub event_time: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StageConfig {
    pub name: String,
    /// The plugin's `.wasm` component, relative to the pipeline file.
    pub plugin: PathBuf,
    /// Passed to the plugin's `init` as JSON.
    #[serde(default)]
    pub config: serde_json::Value,
    #[serde(default)]
    pub limits: Limits,
    /// Topics this stage applies to; others pass through unchanged. Default: all.
    #[serde(default)]
    pub topics: Option<Vec<String>>,
    /// Writes the stage's outputs to this lake layer (e.g. `silver`): `out` under the
    /// batch's topic, any other named output (`sessions`, …) as a table of that name.
    #[serde(default)]
    pub layer: Option<String>,
    /// Only these outputs are written to the layer (default: all); every output still flows
    /// on to the next stage.
    #[serde(default)]
    pub write: Option<Vec<String>>,
    #[serde(default)]
    pub partition_by: Vec<String>,
    /// The column `date`/`hour` partitions of this stage's outputs derive from (default: the
    /// pipeline's `event_time`), e.g. `session_start` for sessions.
    #[serde(default)]
    pub event_time: Option<String>,
    /// Watch the plugin file and hot-swap each new version in (checked first; a version that
    /// fails the checks is refused and the running one kept).
    #[serde(default)]
    pub watch: bool,
}

/// Where and how a layer's tables are loaded into ClickHouse (see `sink::clickhouse`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClickHouseConfig {
    /// The HTTP interface, `http://HOST:PORT`.
    pub url: String,
    #[serde(default = "default_clickhouse_user")]
    pub user: String,
    #[serde(default)]
    pub password: Secret,
    /// Created if missing.
    #[serde(default = "default_clickhouse_database")]
    pub database: String,
    /// The lake layer whose tables are loaded.
    #[serde(default = "default_clickhouse_layer")]
    pub layer: String,
    /// Only these tables of the layer are loaded (default: all).
    #[serde(default)]
    pub include: Option<Vec<String>>,
    /// Per-table DDL choices for tables Sluice creates.
    #[serde(default)]
    pub tables: std::collections::BTreeMap<String, ClickHouseTableConfig>,
    /// At start, how long to wait for the server before giving up with an error. Once
    /// running, an unreachable server is retried for as long as it takes.
    #[serde(default = "default_clickhouse_connect_timeout_ms")]
    pub connect_timeout_ms: u64,
    /// One HTTP request (an insert of an epoch's rows of one table) may take this long.
    #[serde(default = "default_clickhouse_request_timeout_ms")]
    pub request_timeout_ms: u64,
    /// Retries back off exponentially from 100 ms up to this.
    #[serde(default = "default_clickhouse_max_backoff_ms")]
    pub max_backoff_ms: u64,
    /// gzip the insert bodies (every server version accepts `Content-Encoding: gzip`).
    #[serde(default = "yes")]
    pub compress: bool,
}

fn default_clickhouse_user() -> String {
    "default".to_string()
}

fn default_clickhouse_database() -> String {
    "sluice".to_string()
}

fn default_clickhouse_layer() -> String {
    "gold".to_string()
}

fn default_clickhouse_connect_timeout_ms() -> u64 {
    30_000
}

fn default_clickhouse_request_timeout_ms() -> u64 {
    300_000
}

fn default_clickhouse_max_backoff_ms() -> u64 {
    10_000
}

/// Where a layer's tables are loaded into PostgreSQL (see `sink::postgres`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PostgresConfig {
    /// `postgresql://USER@HOST:PORT/DATABASE` (or libpq's `key=value` form); the password
    /// goes in `password`, never in the URL.
    pub url: String,
    #[serde(default)]
    pub password: Secret,
    /// The schema the tables and the load markers live in; created if missing.
    #[serde(default = "default_clickhouse_database")]
    pub schema: String,
    /// The lake layer whose tables are loaded.
    #[serde(default = "default_clickhouse_layer")]
    pub layer: String,
    /// Only these tables of the layer are loaded (default: all).
    #[serde(default)]
    pub include: Option<Vec<String>>,
    /// At start, how long to wait for the server before giving up with an error. Once
    /// running, an unreachable server is retried for as long as it takes.
    #[serde(default = "default_clickhouse_connect_timeout_ms")]
    pub connect_timeout_ms: u64,
    /// Retries back off exponentially from 100 ms up to this.
    #[serde(default = "default_clickhouse_max_backoff_ms")]
    pub max_backoff_ms: u64,
}

/// How Sluice creates one ClickHouse table (an existing table is used as it is, if its
/// columns fit).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClickHouseTableConfig {
    /// The table engine (default `ReplacingMergeTree`: a replayed row replaces its copy).
    #[serde(default)]
    pub engine: Option<String>,
    /// The sorting key, which for a ReplacingMergeTree is also the identity of a row
    /// (default: the key the plugin declares in its schema's `sluice.key` metadata, else
    /// every non-nullable, non-float column).
    #[serde(default)]
    pub order_by: Option<Vec<String>>,
    /// A partition expression (default: `toYYYYMM(date)` when there is a `date` column).
    #[serde(default)]
    pub partition_by: Option<String>,
}

/// A string that never appears in logs or error messages (`Debug` prints `***`).
#[derive(Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_empty() { "\"\"" } else { "***" })
    }
}
