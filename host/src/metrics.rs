//! Prometheus metrics, all named `sluice_*`, in one registry the host serves.
use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, Opts, Registry};
use std::sync::LazyLock;

pub static REGISTRY: LazyLock<Registry> = LazyLock::new(Registry::new);

fn counter(name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let counter = IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric");
    REGISTRY
        .register(Box::new(counter.clone()))
        .expect("registered once");
    counter
}

/// Rows a sink (`clickhouse`, …) wrote, per table.
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

/// How long one successful sink write (an insert, an upload) took.
pub static SINK_WRITE_SECONDS: LazyLock<HistogramVec> = LazyLock::new(|| {
    let histogram = HistogramVec::new(
        HistogramOpts::new(
            "sluice_sink_write_seconds",
            "Duration of one successful sink write.",
        )
        .buckets(prometheus::exponential_buckets(0.001, 2.0, 16).expect("valid buckets")),
        &["pipeline", "sink", "table"],
    )
    .expect("valid metric");
    REGISTRY
        .register(Box::new(histogram.clone()))
        .expect("registered once");
    histogram
});

/// Every registered metric in Prometheus's text format.
pub fn render() -> String {
    prometheus::TextEncoder::new()
        .encode_to_string(&REGISTRY.gather())
        .expect("text encoding does not fail")
}
