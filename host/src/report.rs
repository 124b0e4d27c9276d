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
    out.push_str(&layers_table(summary));
    out
}

/// What a backfill rebuilt: the replay's rows per layer and dead letters.
pub fn backfill_table(report: &crate::jobs::backfill::BackfillReport) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "backfill {} of pipeline {}: {} bronze records replayed ({} committed epochs) in {:.2?}",
        report.generation,
        report.summary.pipeline,
        report.summary.records,
        report.epochs,
        report.elapsed
    );
    let _ = writeln!(
        out,
        "  rebuilt {}: {} files replaced by {}",
        report.layers.join(", "),
        report.removed,
        report.added
    );
    let _ = writeln!(out);
    out.push_str(&layers_table(&report.summary));
    out
}

/// Rows per layer (medallion order first) and dead letters per reason.
fn layers_table(summary: &RunSummary) -> String {
    let mut out = String::new();
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

/// The headline KPIs from the gold tables of a lake, when it has them: the top 5 songs and the
/// daily active users of the latest day, and the mean session length over all days.
pub fn headline(lake: &std::path::Path) -> Option<String> {
    use arrow::array::AsArray;
    use arrow::datatypes::{Date32Type, Float64Type, Int32Type, Int64Type};
    let read = |table: &str| -> Vec<arrow::record_batch::RecordBatch> {
        let mut files = Vec::new();
        let mut dirs = vec![lake.join("gold").join(table)];
        while let Some(dir) = dirs.pop() {
            for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
                let path = entry.path();
                if path.is_dir() {
                    dirs.push(path);
                } else if path.extension().is_some_and(|e| e == "parquet") {
                    files.push(path);
                }
            }
        }
        files
            .iter()
            .filter_map(|f| std::fs::File::open(f).ok())
            .filter_map(|f| {
                parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(f)
                    .ok()?
                    .build()
                    .ok()
            })
            .flat_map(|reader| reader.filter_map(Result::ok))
            .collect()
    };
    let top_songs = read("top_songs");
    let last_day = top_songs
        .iter()
        .filter_map(|b| arrow::compute::max(b.column_by_name("date")?.as_primitive::<Date32Type>()))
        .max()?;
    let date = chrono::DateTime::from_timestamp(last_day as i64 * 86_400, 0)?
        .format("%Y-%m-%d")
        .to_string();
    let mut out = format!("\n  headline KPIs (gold)\n    top songs on {date}:\n");
    let mut songs = Vec::new();
    for b in &top_songs {
        let (d, rank, artist, song, plays) = (
            b.column_by_name("date")?.as_primitive::<Date32Type>(),
            b.column_by_name("rank")?.as_primitive::<Int32Type>(),
            b.column_by_name("artist")?.as_string::<i32>(),
            b.column_by_name("song")?.as_string::<i32>(),
            b.column_by_name("plays")?.as_primitive::<Int64Type>(),
        );
        for i in (0..b.num_rows()).filter(|&i| d.value(i) == last_day && rank.value(i) <= 5) {
            songs.push((
                rank.value(i),
                format!(
                    "{} - {} ({} plays)",
                    artist.value(i),
                    song.value(i),
                    plays.value(i)
                ),
            ));
        }
    }
    songs.sort();
    for (rank, song) in songs {
        out.push_str(&format!("      {rank}. {song}\n"));
    }
    let mut dau = Vec::new();
    for b in read("daily_active_users") {
        let (d, level, users) = (
            b.column_by_name("date")?.as_primitive::<Date32Type>(),
            b.column_by_name("level")?.as_string::<i32>(),
            b.column_by_name("users")?.as_primitive::<Int64Type>(),
        );
        dau.extend(
            (0..b.num_rows())
                .filter(|&i| d.value(i) == last_day)
                .map(|i| format!("{} {}", level.value(i), users.value(i))),
        );
    }
    dau.sort();
    out.push_str(&format!(
        "    daily active users on {date}: {}\n",
        dau.join(", ")
    ));
    let (mut sessions, mut seconds) = (0i64, 0f64);
    for b in read("sessions_per_day") {
        let (n, mean) = (
            b.column_by_name("sessions")?.as_primitive::<Int64Type>(),
            b.column_by_name("mean_duration_s")?
                .as_primitive::<Float64Type>(),
        );
        for i in 0..b.num_rows() {
            sessions += n.value(i);
            seconds += mean.value(i) * n.value(i) as f64;
        }
    }
    if sessions > 0 {
        out.push_str(&format!(
            "    mean session length: {:.1} min over {sessions} sessions\n",
            seconds / sessions as f64 / 60.0
        ));
    }
    Some(out)
}
