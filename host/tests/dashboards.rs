//! `dashboards/` stays true to the host: every metric a Grafana panel or an alert rule uses is
//! one the host exports.
mod common;

use std::collections::BTreeSet;

/// Every `expr` string anywhere in a JSON or YAML document.
fn expressions(value: &serde_json::Value, found: &mut Vec<String>) {
    match value {
        serde_json::Value::Object(map) => {
            for (key, value) in map {
                match (key.as_str(), value) {
                    ("expr", serde_json::Value::String(expr)) => found.push(expr.clone()),
                    _ => expressions(value, found),
                }
            }
        }
        serde_json::Value::Array(items) => items.iter().for_each(|v| expressions(v, found)),
        _ => {}
    }
}

/// The `sluice_*` metric names an expression reads, histogram suffixes removed.
fn metric_names(expr: &str, exported: &BTreeSet<String>) -> Vec<String> {
    let mut names = Vec::new();
    let mut rest = expr;
    while let Some(start) = rest.find("sluice_") {
        let tail = &rest[start..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        let name = &tail[..end];
        let base = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|suffix| {
                name.strip_suffix(suffix)
                    .filter(|base| exported.contains(*base))
            })
            .unwrap_or(name);
        names.push(base.to_string());
        rest = &tail[end..];
    }
    names
}

#[test]
fn every_metric_in_dashboards_and_alerts_is_exported() {
    let exported: BTreeSet<String> = sluice::metrics::names().into_iter().collect();
    assert!(
        exported.contains("sluice_source_records_total"),
        "{exported:?}"
    );
    let root = common::repo_root().join("dashboards");
    let mut documents = Vec::new();
    for entry in std::fs::read_dir(&root).unwrap() {
        let path = entry.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap();
        let value: serde_json::Value = match path.extension().and_then(|e| e.to_str()) {
            Some("json") => serde_json::from_str(&text).unwrap(),
            Some("yml" | "yaml") => serde_norway::from_str(&text).unwrap(),
            _ => continue,
        };
        documents.push((path, value));
    }
    assert!(documents.iter().any(|(p, _)| p.ends_with("sluice.json")));
    assert!(documents.iter().any(|(p, _)| p.ends_with("alerts.yml")));
    let mut used = BTreeSet::new();
    for (path, document) in &documents {
        let mut exprs = Vec::new();
        expressions(document, &mut exprs);
        for expr in exprs {
            for name in metric_names(&expr, &exported) {
                assert!(
                    exported.contains(&name),
                    "{}: `{name}` (in `{expr}`) is not a metric the host exports",
                    path.display()
                );
                used.insert(name);
            }
        }
    }
    // The dashboards show what operators need: throughput, latency, lag, rejects, plugins.
    for needed in [
        "sluice_source_records_total",
        "sluice_stage_batch_seconds",
        "sluice_sink_write_seconds",
        "sluice_kafka_consumer_lag",
        "sluice_stage_records_rejected_total",
        "sluice_plugin_failures_total",
        "sluice_plugin_reloads_total",
        "sluice_last_commit_timestamp_seconds",
    ] {
        assert!(used.contains(needed), "no panel or alert uses {needed}");
    }
}

#[test]
fn names_are_read_out_of_expressions() {
    let exported: BTreeSet<String> = ["sluice_stage_batch_seconds".to_string()].into();
    assert_eq!(
        metric_names(
            "histogram_quantile(0.9, rate(sluice_stage_batch_seconds_bucket[5m])) / sluice_x_total",
            &exported
        ),
        ["sluice_stage_batch_seconds", "sluice_x_total"]
    );
}
