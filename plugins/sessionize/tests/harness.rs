//! Sessionization rules, natively through the SDK harness.
use sessionize::{SESSIONS, Sessionize};
use sluice_sdk::harness::{Harness, batch_from_json, pretty};
use sluice_sdk::prelude::*;
use std::sync::Arc;

const MIN: i64 = 60_000;
const T0: i64 = 1_793_491_200_000; // 2026-11-01T00:00:00Z

fn events(rows: &[(i64, i64, &str)]) -> RecordBatch {
    let schema = Arc::new(Schema::new(vec![
        Field::new("userId", DataType::Int64, true),
        Field::new("ts", DataType::Int64, true),
        Field::new("page", DataType::Utf8, true),
        Field::new("duration", DataType::Float64, true),
        Field::new("level", DataType::Utf8, true),
    ]));
    let lines: Vec<String> = rows
        .iter()
        .map(|(user, minute, page)| {
            let duration = if *page == "NextSong" {
                ",\"duration\":200.0"
            } else {
                ""
            };
            let level = if *minute >= 100 { "paid" } else { "free" };
            format!(
                r#"{{"userId":{user},"ts":{},"page":"{page}","level":"{level}"{duration}}}"#,
                T0 + minute * MIN
            )
        })
        .collect();
    batch_from_json(
        schema,
        &lines.iter().map(String::as_str).collect::<Vec<_>>(),
    )
    .unwrap()
}

fn summary(batches: &[RecordBatch]) -> String {
    let keep: Vec<RecordBatch> = batches
        .iter()
        .map(|b| b.project(&[0, 1, 2, 4, 5, 6, 7, 8, 11, 12]).unwrap())
        .collect();
    pretty(&keep)
}

#[test]
fn sessions_close_when_the_watermark_passes_the_gap() {
    let mut h = Harness::<Sessionize>::new("{}").unwrap();
    let out = h
        .process(&events(&[
            (1, 0, "Home"),
            (1, 5, "NextSong"),
            (2, 3, "NextSong"),
            (1, 50, "Home"),
            (1, 55, "Logout"),
        ]))
        .unwrap();
    assert_eq!(out.rows(SESSIONS), 0, "nothing closes without a watermark");
    assert_eq!(out.rows("out"), 5, "events pass through");
    // At minute 36 user 1's first session (ended minute 5) is closed, user 2's (minute 3) too.
    let closed = h.on_watermark(T0 + 36 * MIN).unwrap();
    assert_eq!(
        summary(&closed.output(SESSIONS)),
        "\
+--------+----------------------+----------------------+--------+-------+----------------+-------------+-----------+------------+-----------+
| userId | session_start        | session_end          | events | songs | listen_seconds | level_start | level_end | first_page | last_page |
+--------+----------------------+----------------------+--------+-------+----------------+-------------+-----------+------------+-----------+
| 1      | 2026-11-01T00:00:00Z | 2026-11-01T00:05:00Z | 2      | 1     | 200.0          | free        | free      | Home       | NextSong  |
| 2      | 2026-11-01T00:03:00Z | 2026-11-01T00:03:00Z | 1      | 1     | 200.0          | free        | free      | NextSong   | NextSong  |
+--------+----------------------+----------------------+--------+-------+----------------+-------------+-----------+------------+-----------+"
    );
    let last = h.on_watermark(i64::MAX).unwrap();
    assert_eq!(last.rows(SESSIONS), 1);
    assert_eq!(
        h.plugin().open_sessions(),
        0,
        "state holds only open sessions"
    );
}

#[test]
fn an_out_of_order_event_bridges_two_sessions_and_late_events_are_rejected() {
    let mut h = Harness::<Sessionize>::new("{}").unwrap();
    h.process(&events(&[(1, 0, "Home"), (1, 40, "Home")]))
        .unwrap();
    h.process(&events(&[(1, 20, "NextSong")])).unwrap(); // arrives late, within lateness
    h.on_watermark(T0 + 45 * MIN).unwrap();
    let late = h
        .process(&events(&[(1, 44, "Home"), (1, 46, "Home")]))
        .unwrap();
    let rejects = late.output("rejects");
    assert_eq!(late.rows("rejects"), 1);
    assert_eq!(
        late.rows("out"),
        1,
        "the on-time event passes through, the late one does not"
    );
    assert_eq!(
        rejects[0].string_column("_reject_reason").unwrap().value(0),
        "late"
    );
    assert_eq!(rejects[0].i64_column("ts").unwrap().value(0), T0 + 44 * MIN);
    let closed = h.on_watermark(i64::MAX).unwrap().output(SESSIONS);
    assert_eq!(closed[0].num_rows(), 1, "0, 20, 40 and 46 are one session");
    assert_eq!(closed[0].i64_column("events").unwrap().value(0), 4);
}

#[test]
fn a_restart_from_a_snapshot_gives_the_same_sessions() {
    let input = [
        events(&[(1, 0, "Home"), (2, 1, "NextSong"), (1, 10, "NextSong")]),
        events(&[(2, 20, "NextSong"), (1, 100, "Home"), (3, 101, "Home")]),
        events(&[(2, 150, "NextSong"), (1, 160, "Logout")]),
    ];
    let run = |restart_after: Option<usize>| {
        let mut h = Harness::<Sessionize>::new("{\"gap_ms\": 1800000}").unwrap();
        let mut sessions = Vec::new();
        for (i, batch) in input.iter().enumerate() {
            h.process(batch).unwrap();
            let wm = batch
                .i64_column("ts")
                .unwrap()
                .values()
                .iter()
                .max()
                .unwrap()
                - MIN;
            sessions.extend(h.on_watermark(wm).unwrap().output(SESSIONS));
            if restart_after == Some(i) {
                h = h.restart("{\"gap_ms\": 1800000}").unwrap();
            }
        }
        sessions.extend(h.on_watermark(i64::MAX).unwrap().output(SESSIONS));
        pretty(&sessions)
    };
    let uninterrupted = run(None);
    assert_eq!(run(Some(0)), uninterrupted);
    assert_eq!(run(Some(1)), uninterrupted);
}
