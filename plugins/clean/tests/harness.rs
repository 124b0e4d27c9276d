//! The clean plugin's rules, natively through the SDK harness (same IPC round trip as wasm).
use clean::Clean;
use sluice_sdk::harness::{Harness, batch_from_json, pretty};
use sluice_sdk::prelude::*;
use std::sync::Arc;

fn listen_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("ts", DataType::Int64, true),
        Field::new("auth", DataType::Utf8, true),
        Field::new("userId", DataType::Int64, true),
        Field::new("level", DataType::Utf8, true),
        Field::new("state", DataType::Utf8, true),
        Field::new("song", DataType::Utf8, true),
        Field::new("duration", DataType::Float64, true),
        Field::new("_offset", DataType::Int64, false),
    ]))
}

#[test]
fn every_row_is_kept_normalised_or_rejected_with_its_reason() {
    let batch = batch_from_json(
        listen_schema(),
        &[
            r#"{"ts":1793491200000,"auth":"Logged In","userId":1,"level":" Paid","state":"ny ","song":"  Summer Love ","duration":200.5,"_offset":0}"#,
            r#"{"auth":"Logged In","userId":2,"level":"free","duration":1.0,"_offset":1}"#,
            r#"{"ts":4102444800001,"auth":"Logged In","userId":3,"level":"free","_offset":2}"#,
            r#"{"ts":1793491200000,"auth":"Logged In","level":"free","_offset":3}"#,
            r#"{"ts":1793491200000,"auth":"Logged Out","level":"free","_offset":4}"#,
            r#"{"ts":1793491200000,"auth":"Logged In","userId":5,"level":"free","duration":-3.5,"_offset":5}"#,
            r#"{"ts":1793491200000,"auth":"Logged In","userId":1,"level":"paid","state":"NY","song":"Summer Love","duration":200.5,"_offset":6}"#,
        ],
    )
    .unwrap();
    let out = Harness::<Clean>::new("{}")
        .unwrap()
        .process(&batch)
        .unwrap();
    assert_eq!(
        pretty(&out.output("out")),
        "\
+---------------+------------+--------+-------+-------+-------------+----------+---------+----------------------+
| ts            | auth       | userId | level | state | song        | duration | _offset | event_time           |
+---------------+------------+--------+-------+-------+-------------+----------+---------+----------------------+
| 1793491200000 | Logged In  | 1      | paid  | NY    | Summer Love | 200.5    | 0       | 2026-11-01T00:00:00Z |
| 1793491200000 | Logged Out |        | free  |       |             |          | 4       | 2026-11-01T00:00:00Z |
+---------------+------------+--------+-------+-------+-------------+----------+---------+----------------------+"
    );
    let reasons: Vec<String> = out
        .output("rejects")
        .iter()
        .flat_map(|b| {
            b.string_column("_reject_reason")
                .unwrap()
                .iter()
                .map(|r| r.unwrap().to_string())
                .collect::<Vec<_>>()
        })
        .collect();
    let offsets: Vec<i64> = out
        .output("rejects")
        .iter()
        .flat_map(|b| b.i64_column("_offset").unwrap().values().to_vec())
        .collect();
    assert_eq!(offsets, vec![1, 2, 3, 5, 6]);
    assert_eq!(
        reasons,
        vec![
            "missing_ts",
            "ts_out_of_range",
            "missing_user_id",
            "negative_duration",
            "duplicate"
        ]
    );
}

#[test]
fn the_window_and_rules_are_configurable() {
    let batch = batch_from_json(
        listen_schema(),
        &[
            r#"{"ts":1000,"auth":"Logged In","level":"FREE","_offset":0}"#,
            r#"{"ts":1000,"auth":"Logged In","level":"FREE","_offset":1}"#,
        ],
    )
    .unwrap();
    let config = r#"{"min_ts_ms": 0, "user_required_for": [], "lowercase": [], "dedupe": false}"#;
    let out = Harness::<Clean>::new(config)
        .unwrap()
        .process(&batch)
        .unwrap();
    assert_eq!(out.rows("out"), 2);
    assert_eq!(out.rows("rejects"), 0);
    assert!(
        out.output("out")[0]
            .string_column("level")
            .unwrap()
            .iter()
            .all(|l| l == Some("FREE"))
    );
    assert!(
        Harness::<Clean>::new(r#"{"min_ts": 0}"#).is_err(),
        "unknown options are refused"
    );
}

#[test]
fn only_rows_equal_on_every_data_column_are_duplicates() {
    // Each row differs from the first in one column only (null against an empty string
    // included), except the last, which repeats it with another `_offset`.
    let batch = batch_from_json(
        listen_schema(),
        &[
            r#"{"ts":1793491200000,"auth":"Logged In","userId":1,"level":"paid","state":"NY","song":"","duration":200.5,"_offset":0}"#,
            r#"{"ts":1793491200000,"auth":"Logged In","userId":1,"level":"paid","state":"NY","duration":200.5,"_offset":1}"#,
            r#"{"ts":1793491200000,"auth":"Logged In","userId":1,"level":"paid","state":"NY","song":"","duration":200.25,"_offset":2}"#,
            r#"{"ts":1793491200001,"auth":"Logged In","userId":1,"level":"paid","state":"NY","song":"","duration":200.5,"_offset":3}"#,
            r#"{"ts":1793491200000,"auth":"Logged In","userId":2,"level":"paid","state":"NY","song":"","duration":200.5,"_offset":4}"#,
            r#"{"ts":1793491200000,"auth":"Logged In","userId":1,"level":"paid","state":"NJ","song":"","duration":200.5,"_offset":5}"#,
            r#"{"ts":1793491200000,"auth":"Logged In","userId":1,"level":"paid","state":"NY","song":"","duration":200.5,"_offset":6}"#,
        ],
    )
    .unwrap();
    let out = Harness::<Clean>::new("{}")
        .unwrap()
        .process(&batch)
        .unwrap();
    let offsets = |output: &str| -> Vec<i64> {
        out.output(output)
            .iter()
            .flat_map(|b| b.i64_column("_offset").unwrap().values().to_vec())
            .collect()
    };
    assert_eq!(offsets("out"), vec![0, 1, 2, 3, 4, 5]);
    assert_eq!(offsets("rejects"), vec![6]);
}

/// 512 rows with every third one repeating the row before it, whose fixed-width columns
/// either tell the rows apart (`distinct_numbers`) or are the same in every row, so that only
/// the strings do: duplicates are found the same either way.
fn rows_with_repeats(distinct_numbers: bool) -> Vec<String> {
    let mut lines = Vec::new();
    for n in 0..512i64 {
        let id = if n % 3 == 2 { n - 1 } else { n };
        let ts = if distinct_numbers {
            1793491200000 + id
        } else {
            1793491200000
        };
        lines.push(format!(
            r#"{{"ts":{ts},"auth":"Logged In","userId":7,"level":"paid","state":"NY","song":"song {id}","duration":200.5,"_offset":{n}}}"#
        ));
    }
    lines
}

#[test]
fn duplicates_are_found_whether_numbers_or_only_strings_tell_rows_apart() {
    for distinct_numbers in [true, false] {
        let lines = rows_with_repeats(distinct_numbers);
        let lines: Vec<&str> = lines.iter().map(String::as_str).collect();
        let batch = batch_from_json(listen_schema(), &lines).unwrap();
        let out = Harness::<Clean>::new("{}")
            .unwrap()
            .process(&batch)
            .unwrap();
        let rejected: Vec<i64> = out
            .output("rejects")
            .iter()
            .flat_map(|b| b.i64_column("_offset").unwrap().values().to_vec())
            .collect();
        let expected: Vec<i64> = (0..512).filter(|n| n % 3 == 2).collect();
        assert_eq!(rejected, expected, "distinct numbers: {distinct_numbers}");
        let kept: usize = out.output("out").iter().map(|b| b.num_rows()).sum();
        assert_eq!(kept, 512 - expected.len());
    }
}

#[test]
fn whitespace_beyond_ascii_spaces_is_trimmed_too() {
    let batch = batch_from_json(
        listen_schema(),
        &[
            r#"{"ts":1793491200000,"auth":"Logged In","userId":1,"level":"paid","state":"NY","song":"\u00a0Summer Love\u000b","_offset":0}"#,
            r#"{"ts":1793491200001,"auth":"Logged In","userId":1,"level":"paid","state":"NY","song":"Été\u2003","_offset":1}"#,
            r#"{"ts":1793491200002,"auth":"Logged In","userId":1,"level":"paid","state":"NY","song":"Plain","_offset":2}"#,
        ],
    )
    .unwrap();
    let out = Harness::<Clean>::new("{}")
        .unwrap()
        .process(&batch)
        .unwrap();
    let songs: Vec<String> = out
        .output("out")
        .iter()
        .flat_map(|b| {
            let songs = b.column_by_name("song").unwrap().as_string::<i32>().clone();
            (0..songs.len()).map(move |i| songs.value(i).to_string())
        })
        .collect();
    assert_eq!(songs, ["Summer Love", "Été", "Plain"]);
}
