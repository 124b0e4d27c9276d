//! Prometheus metrics, all named `sluice_*`, in one registry the admin server serves at
//! `/metrics`. `docs/operations.md` lists them; `dashboards/` uses them (a test checks that every
//! name a panel or alert uses is one of these).
use prometheus::core::Collector;
use prometheus::{
    GaugeVec, HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts, Registry,
};
use std::sync::LazyLock;

pub static REGISTRY: LazyLock<Registry> = LazyLock::new(Registry::new);

fn register<M: prometheus::core::Collector + Clone + 'static>(metric: M) -> M {
    REGISTRY
        .register(Box::new(metric.clone()))
        .expect("each metric is registered once");
    metric
}

fn counter(name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    register(IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric"))
}

fn gauge(name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    register(IntGaugeVec::new(Opts::new(name, help), labels).expect("valid metric"))
}

/// Buckets from 1 ms to ~65 s, doubling: batches, inserts and commits all fall in there.
fn histogram(name: &str, help: &str, labels: &[&str]) -> HistogramVec {
    let buckets = prometheus::exponential_buckets(0.001, 2.0, 17).expect("valid buckets");
    register(
        HistogramVec::new(HistogramOpts::new(name, help).buckets(buckets), labels)
            .expect("valid metric"),
    )
}

/// Source records consumed, per topic.
pub static SOURCE_RECORDS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter(
        "sluice_source_records_total",
        "Source records consumed.",
        &["pipeline", "topic"],
    )
});

/// Source bytes consumed (the raw records, before decoding), per topic.
pub static SOURCE_BYTES: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter(
        "sluice_source_bytes_total",
        "Bytes of source records consumed, before decoding.",
        &["pipeline", "topic"],
    )
});

/// Rows that went into a stage's plugin (`decode` counts decoded source records).
pub static STAGE_RECORDS_IN: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter(
        "sluice_stage_records_in_total",
        "Rows handed to a stage.",
        &["pipeline", "stage"],
    )
});

/// Rows a stage emitted on its outputs (`out`, `sessions`, …), rejects not included.
pub static STAGE_RECORDS_OUT: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter(
        "sluice_stage_records_out_total",
        "Rows a stage emitted, per output.",
        &["pipeline", "stage", "output"],
    )
});

/// Rows sent to the dead-letter output, by the stage that rejected them (`decode` for records
/// that did not decode) and the kind of reason.
pub static STAGE_RECORDS_REJECTED: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter(
        "sluice_stage_records_rejected_total",
        "Rows sent to the dead-letter output.",
        &["pipeline", "stage", "reason"],
    )
});

/// Wall time of one plugin call (a batch or a watermark), per stage.
pub static STAGE_BATCH_SECONDS: LazyLock<HistogramVec> = LazyLock::new(|| {
    histogram(
        "sluice_stage_batch_seconds",
        "Duration of one plugin call (process or on-watermark).",
        &["pipeline", "stage"],
    )
});

/// Fuel (≈ wasm instructions) plugins used.
pub static PLUGIN_FUEL: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter(
        "sluice_plugin_fuel_consumed_total",
        "Fuel plugins consumed (about one unit per wasm instruction).",
        &["pipeline", "stage", "plugin"],
    )
});

/// Plugin calls that failed (trap, CPU or time limit, error): each failed its batch.
pub static PLUGIN_FAILURES: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter(
        "sluice_plugin_failures_total",
        "Plugin calls that failed their batch.",
        &["pipeline", "stage", "plugin"],
    )
});

/// Hot-swaps and rollbacks, by result (`swapped`, `refused`).
pub static PLUGIN_RELOADS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter(
        "sluice_plugin_reloads_total",
        "Plugin hot-swaps and rollbacks, by result.",
        &["pipeline", "stage", "result"],
    )
});

/// 1 for the plugin version each stage runs now.
pub static PLUGIN_INFO: LazyLock<IntGaugeVec> = LazyLock::new(|| {
    gauge(
        "sluice_plugin_info",
        "The plugin each stage runs (value 1).",
        &["pipeline", "stage", "plugin", "version", "sha256"],
    )
});

/// Rows handed to the lake per layer and table (durable at the next commit).
pub static LAKE_ROWS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter(
        "sluice_lake_rows_total",
        "Rows written to the lake, per layer and table.",
        &["pipeline", "layer", "table"],
    )
});

/// Lake commits (epochs) made durable.
pub static COMMITS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter(
        "sluice_commits_total",
        "Lake commits (epochs) made durable.",
        &["pipeline"],
    )
});

/// Unix time of the last durable commit; `time() - sluice_last_commit_timestamp_seconds` is
/// the checkpoint age.
pub static LAST_COMMIT: LazyLock<GaugeVec> = LazyLock::new(|| {
    register(
        GaugeVec::new(
            Opts::new(
                "sluice_last_commit_timestamp_seconds",
                "Unix time of the last durable lake commit.",
            ),
            &["pipeline"],
        )
        .expect("valid metric"),
    )
});

/// Kafka consumer lag per partition, from librdkafka's statistics.
pub static CONSUMER_LAG: LazyLock<IntGaugeVec> = LazyLock::new(|| {
    gauge(
        "sluice_kafka_consumer_lag",
        "Messages between a partition's high watermark and this consumer's position.",
        &["pipeline", "topic", "partition"],
    )
});

/// Rows a sink (`lake`, `clickhouse`) wrote, per table.
pub static SINK_ROWS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter(
        "sluice_sink_rows_total",
        "Rows a sink wrote.",
        &["pipeline", "sink", "table"],
    )
});

/// Bytes a sink sent (before transport compression), per table.
pub static SINK_BYTES: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter(
        "sluice_sink_bytes_total",
        "Bytes a sink sent, before transport compression.",
        &["pipeline", "sink", "table"],
    )
});

/// Failed sink operations, by kind (`unreachable`, `server`, `auth`, `schema`, …).
pub static SINK_ERRORS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter(
        "sluice_sink_errors_total",
        "Failed sink operations, by kind.",
        &["pipeline", "sink", "kind"],
    )
});

/// Sink operations retried after a failure waiting may fix.
pub static SINK_RETRIES: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter(
        "sluice_sink_retries_total",
        "Sink operations retried after a transient failure.",
        &["pipeline", "sink"],
    )
});

/// How long one successful sink write took: a ClickHouse insert, a lake commit.
pub static SINK_WRITE_SECONDS: LazyLock<HistogramVec> = LazyLock::new(|| {
    histogram(
        "sluice_sink_write_seconds",
        "Duration of one successful sink write (an insert, a lake commit).",
        &["pipeline", "sink", "table"],
    )
});

/// Batch jobs (`schedule:`) run, by outcome: `ok`, `failed`, `refused`.
pub static JOB_RUNS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter(
        "sluice_job_runs_total",
        "Scheduled batch jobs run, by outcome (ok, failed, refused).",
        &["pipeline", "job", "kind", "outcome"],
    )
});

/// How long scheduled jobs take (the stream waits meanwhile).
pub static JOB_SECONDS: LazyLock<HistogramVec> = LazyLock::new(|| {
    let buckets = prometheus::exponential_buckets(0.01, 2.0, 17).expect("valid buckets");
    register(
        HistogramVec::new(
            HistogramOpts::new(
                "sluice_job_seconds",
                "Seconds a scheduled batch job took; the stream waits meanwhile.",
            )
            .buckets(buckets),
            &["pipeline", "job", "kind"],
        )
        .expect("valid metric"),
    )
});

/// When each scheduled job last succeeded (Unix seconds).
pub static JOB_LAST_SUCCESS: LazyLock<GaugeVec> = LazyLock::new(|| {
    register(
        GaugeVec::new(
            Opts::new(
                "sluice_job_last_success_timestamp_seconds",
                "When a scheduled batch job last succeeded (Unix time).",
            ),
            &["pipeline", "job"],
        )
        .expect("valid metric"),
    )
});

/// 1, labelled with the host's version and its plugin contract.
pub static BUILD_INFO: LazyLock<IntGaugeVec> = LazyLock::new(|| {
    gauge(
        "sluice_build_info",
        "The host's version and plugin contract (value 1).",
        &["version", "contract"],
    )
});

/// Every metric the host exports.
fn all() -> [&'static dyn Collector; 23] {
    [
        &*SOURCE_RECORDS,
        &*SOURCE_BYTES,
        &*STAGE_RECORDS_IN,
        &*STAGE_RECORDS_OUT,
        &*STAGE_RECORDS_REJECTED,
        &*STAGE_BATCH_SECONDS,
        &*PLUGIN_FUEL,
        &*PLUGIN_FAILURES,
        &*PLUGIN_RELOADS,
        &*PLUGIN_INFO,
        &*LAKE_ROWS,
        &*COMMITS,
        &*LAST_COMMIT,
        &*CONSUMER_LAG,
        &*SINK_ROWS,
        &*SINK_BYTES,
        &*SINK_ERRORS,
        &*SINK_RETRIES,
        &*SINK_WRITE_SECONDS,
        &*JOB_RUNS,
        &*JOB_SECONDS,
        &*JOB_LAST_SUCCESS,
        &*BUILD_INFO,
    ]
}

/// Registers every metric and sets the build info.
pub fn init() {
    all();
    BUILD_INFO
        .with_label_values(&[
            env!("CARGO_PKG_VERSION"),
            crate::stage::runtime::CONTRACT_VERSION,
        ])
        .set(1);
}

/// The names of every metric the host exports, as `/metrics` shows them once they have a
/// sample (histograms add `_bucket`, `_sum` and `_count`).
pub fn names() -> Vec<String> {
    all()
        .iter()
        .flat_map(|collector| collector.desc())
        .map(|desc| desc.fq_name.clone())
        .collect()
}

/// Every registered metric in Prometheus's text format.
pub fn render() -> String {
    prometheus::TextEncoder::new()
        .encode_to_string(&REGISTRY.gather())
        .expect("text encoding does not fail")
}
