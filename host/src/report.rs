//! The summary a person reads at the end of a run.
use crate::pipeline::RunSummary;
use std::fmt::Write;

pub fn summary_table(summary: &RunSummary) -> String {
    let mut out = String::new();
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let _ = writeln!(
        out,
        "pipeline {}: {} events in {:.2?}",
        summary.pipeline, summary.records, summary.elapsed
    );
    if summary.resumed_at > 0 {
        let _ = writeln!(
            out,
            "  resumed after {} committed events",
            summary.resumed_at
        );
    }
    let _ = writeln!(
        out,
        "  {:.0} events/s, {:.0} events/s per core ({cores} cores)",
        summary.events_per_second(),
        summary.events_per_second() / cores as f64
    );
    let _ = writeln!(out);
    let _ = writeln!(out, "  {:<40} {:>12}", "layer", "rows");
    // Medallion order first, then any other layer by name.
    let rank = |layer: &str| {
        ["bronze", "silver", "gold"]
            .iter()
            .position(|l| *l == layer)
            .unwrap_or(3)
    };
    let mut layers: Vec<_> = summary.layers.iter().collect();
    layers.sort_by_key(|(layer, _)| (rank(layer), layer.as_str()));
    for (layer, rows) in layers {
        let _ = writeln!(out, "  {layer:<40} {rows:>12}");
    }
    let rejects: u64 = summary.rejects.values().sum();
    let _ = writeln!(out, "  {:<40} {rejects:>12}", "dead letters (_rejects)");
    for (reason, rows) in &summary.rejects {
        let _ = writeln!(out, "    {reason:<38} {rows:>12}");
    }
    out
}
