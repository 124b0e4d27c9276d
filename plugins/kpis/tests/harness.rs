//! KPI rules on a tiny hand-made day, natively through the SDK harness.
use kpis::Kpis;
use sluice_sdk::harness::{Harness, batch_from_json, pretty};
use sluice_sdk::prelude::*;
use std::sync::Arc;

const T0: i64 = 1_793_491_200_000; // 2026-11-01T00:00:00Z
const HOUR: i64 = 3_600_000;

fn schema(fields: &[(&str, DataType)]) -> SchemaRef {
    Arc::new(Schema::new(
        fields
            .iter()
            .map(|(n, t)| Field::new(*n, t.clone(), true))
            .collect::<Vec<_>>(),
    ))
}

#[test]
fn a_day_is_emitted_once_when_it_closes_and_later_input_for_it_is_late() {
    let mut h = Harness::<Kpis>::new(r#"{"top_n": 2, "close_after_ms": 3600000}"#).unwrap();
    let listens = schema(&[
        ("ts", DataType::Int64),
        ("userId", DataType::Int64),
        ("level", DataType::Utf8),
        ("artist", DataType::Utf8),
        ("song", DataType::Utf8),
        ("duration", DataType::Float64),
        ("state", DataType::Utf8),
    ]);
    let rows = [
        (0, 1, "free", "A", "x", 100.0, "NY"),
        (1, 1, "free", "A", "x", 100.0, "NY"),
        (1, 2, "paid", "B", "y", 50.0, "CA"),
        (5, 2, "paid", "A", "z", 10.0, "CA"),
    ];
    let lines: Vec<String> = rows
        .iter()
        .map(|(h, u, l, a, s, d, st)| format!(r#"{{"ts":{},"userId":{u},"level":"{l}","artist":"{a}","song":"{s}","duration":{d},"state":"{st}"}}"#, T0 + h * HOUR))
        .collect();
    let batch = batch_from_json(
        listens,
        &lines.iter().map(String::as_str).collect::<Vec<_>>(),
    )
    .unwrap();
    assert_eq!(
        h.process_topic("listen_events", &batch)
            .unwrap()
            .batches()
            .len(),
        0
    );
    let changes = schema(&[
        ("ts", DataType::Int64),
        ("userId", DataType::Int64),
        ("level", DataType::Utf8),
    ]);
    let change = batch_from_json(
        changes,
        &[&format!(
            r#"{{"ts":{},"userId":1,"level":"free"}}"#,
            T0 + 2 * HOUR
        )],
    )
    .unwrap();
    h.process_topic("status_change_events", &change).unwrap();

    // The day ends at midnight; with close_after 1 h it closes at 01:00 the next day.
    assert_eq!(
        h.on_watermark(T0 + 24 * HOUR).unwrap().batches().len(),
        0,
        "not closed yet"
    );
    let out = h.on_watermark(T0 + 25 * HOUR).unwrap();
    assert_eq!(
        pretty(&out.output("daily_active_users")),
        "+------------+-------+-------+\n| date       | level | users |\n+------------+-------+-------+\n| 2026-11-01 | free  | 1     |\n| 2026-11-01 | paid  | 1     |\n+------------+-------+-------+"
    );
    assert_eq!(
        pretty(&out.output("top_songs")),
        "+------------+------+--------+------+-------+\n| date       | rank | artist | song | plays |\n+------------+------+--------+------+-------+\n| 2026-11-01 | 1    | A      | x    | 2     |\n| 2026-11-01 | 2    | A      | z    | 1     |\n+------------+------+--------+------+-------+"
    );
    assert_eq!(
        pretty(&out.output("top_artists")),
        "+------------+------+--------+-------+\n| date       | rank | artist | plays |\n+------------+------+--------+-------+\n| 2026-11-01 | 1    | A      | 3     |\n| 2026-11-01 | 2    | B      | 1     |\n+------------+------+--------+-------+"
    );
    assert_eq!(
        pretty(&out.output("streams_per_hour")),
        "+------------+------+---------+\n| date       | hour | streams |\n+------------+------+---------+\n| 2026-11-01 | 0    | 1       |\n| 2026-11-01 | 1    | 2       |\n| 2026-11-01 | 5    | 1       |\n+------------+------+---------+"
    );
    assert_eq!(
        pretty(&out.output("listening_by_state")),
        "+------------+-------+-------+----------------+-------+\n| date       | state | level | listen_seconds | plays |\n+------------+-------+-------+----------------+-------+\n| 2026-11-01 | CA    | paid  | 60.0           | 2     |\n| 2026-11-01 | NY    | free  | 200.0          | 2     |\n+------------+-------+-------+----------------+-------+"
    );
    assert_eq!(
        pretty(&out.output("subscriptions_per_day")),
        "+------------+----------+------------+---------------+---------------+\n| date       | upgrades | downgrades | cancellations | registrations |\n+------------+----------+------------+---------------+---------------+\n| 2026-11-01 | 1        | 0          | 0             | 0             |\n+------------+----------+------------+---------------+---------------+"
    );
    // Input for the closed day is rejected, not silently folded into a second row.
    let late = h.process_topic("listen_events", &batch).unwrap();
    assert_eq!(late.rows("rejects"), 4);
    assert_eq!(
        h.on_watermark(i64::MAX).unwrap().batches().len(),
        0,
        "nothing left open"
    );
}

#[test]
fn sessions_per_day_has_count_mean_median_and_songs() {
    let mut h = Harness::<Kpis>::new("{}").unwrap();
    let sessions = Arc::new(Schema::new(vec![
        Field::new(
            "session_start",
            DataType::Timestamp(
                sluice_sdk::arrow_schema::TimeUnit::Millisecond,
                Some("UTC".into()),
            ),
            false,
        ),
        Field::new("duration_s", DataType::Float64, false),
        Field::new("songs", DataType::Int64, false),
    ]));
    let lines: Vec<String> = [(60.0, 1), (120.0, 3), (600.0, 2)]
        .iter()
        .map(|(d, s)| format!(r#"{{"session_start":{T0},"duration_s":{d},"songs":{s}}}"#))
        .collect();
    let batch = batch_from_json(
        sessions,
        &lines.iter().map(String::as_str).collect::<Vec<_>>(),
    )
    .unwrap();
    h.process_topic("sessions", &batch).unwrap();
    let out = h.on_watermark(i64::MAX).unwrap();
    assert_eq!(
        pretty(&out.output("sessions_per_day")),
        "+------------+----------+-----------------+-------------------+-------------------+\n| date       | sessions | mean_duration_s | median_duration_s | songs_per_session |\n+------------+----------+-----------------+-------------------+-------------------+\n| 2026-11-01 | 3        | 260.0           | 120.0             | 2.0               |\n+------------+----------+-----------------+-------------------+-------------------+"
    );
}
