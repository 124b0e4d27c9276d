//! Delta Lake tables as the format of silver and gold (`lake.formats`): an independent Delta
//! reader (the `deltalake` package from PyPI) sees exactly the rows a Parquet lake of the same
//! run holds; a crash between the commit record and the Delta commit is finished once, without
//! a file added twice; `sluice query` reads the tables through their logs; a backfill and a
//! compaction replace files by Delta commits.
mod common;
use common::*;
use std::path::Path;

const DELTA: &str = "  formats: {silver: delta, gold: delta}\n";

/// The chain into `lake`, with silver and gold as Delta tables when `delta`.
fn chain(dir: &Path, file: &str, lake: &Path, events: u64, delta: bool) -> std::path::PathBuf {
    let path = chain_pipeline(dir, file, "chain", &lake_uri(lake), events, "");
    let mut text = std::fs::read_to_string(&path)
        .unwrap()
        .replace("commit_rows: 25000", "commit_rows: 8000");
    if delta {
        text = text.replace(
            "  commit_rows: 8000\n",
            &format!("  commit_rows: 8000\n{DELTA}"),
        );
    }
    std::fs::write(&path, text).unwrap();
    path
}

/// The independent reader's verdict on `delta` against `parquet` (tests/interop/read_delta.py).
fn independent_reader(delta: &Path, parquet: &Path) -> serde_json::Value {
    interop_reader("read_delta.py", &[&delta, &parquet, &"silver", &"gold"])
}

fn count(lake: &Path, sql: &str) -> String {
    let out = assert_success(&sluice(
        &["query", "--lake", &lake_uri(lake), "--format", "csv", sql],
        &[],
    ));
    out.lines().nth(1).unwrap().to_string()
}

#[test]
fn delta_tables_hold_what_a_parquet_lake_holds_as_an_independent_reader_sees_them() {
    let dir = tempfile::tempdir().unwrap();
    let (delta, parquet) = (dir.path().join("delta"), dir.path().join("parquet"));
    run(&chain(dir.path(), "delta", &delta, 40_000, true));
    run(&chain(dir.path(), "parquet", &parquet, 40_000, false));
    assert!(
        delta
            .join("gold/sessions/_delta_log/00000000000000000000.json")
            .is_file()
    );
    assert!(!parquet.join("gold/sessions/_delta_log").exists());

    let summary = independent_reader(&delta, &parquet);
    let sessions = &summary["gold/sessions"];
    assert!(sessions["rows"].as_u64().unwrap() > 100, "{summary}");
    // One Delta version per epoch that wrote the table, plus the table's creation.
    assert!(sessions["versions"].as_u64().unwrap() >= 3, "{summary}");
    // Generator rounds are ~7,400 events, so 40,000 at commit_rows 8000 are 3 epochs of
    // silver (and a last one that only closes gold's windows).
    assert_eq!(
        summary["silver/page_view_events"]["txn"]["sluice/chain/main"].as_u64(),
        Some(3),
        "{summary}"
    );

    // SQL over the logs, partition columns included, equals SQL over the Parquet lake.
    for sql in [
        "SELECT count(*), count(DISTINCT userId) FROM silver.listen_events",
        "SELECT count(*) FROM gold.sessions WHERE date = '2026-11-02'",
        "SELECT sum(plays) FROM gold.top_songs",
    ] {
        assert_eq!(count(&delta, sql), count(&parquet, sql), "{sql}");
    }
}

#[test]
fn a_crash_between_the_commit_record_and_the_delta_commit_is_finished_once() {
    let dir = tempfile::tempdir().unwrap();
    let (delta, parquet) = (dir.path().join("delta"), dir.path().join("parquet"));
    let pipeline = chain(dir.path(), "delta", &delta, 40_000, true);
    // The fifth Delta commit aborts the process: its epoch's record is written, its table's
    // log is not; a restart must finish it, and a replay must not add its files again.
    let crashed = sluice(
        &["run", "--quiet", pipeline.to_str().unwrap()],
        &[("SLUICE_FAILPOINTS", "delta.commit=5".into())],
    );
    assert!(!crashed.status.success());
    let out = run(&pipeline);
    assert!(out.contains("resumed after"), "{out}");
    run(&chain(dir.path(), "parquet", &parquet, 40_000, false));
    independent_reader(&delta, &parquet);
}

#[test]
fn a_backfill_and_a_compaction_replace_delta_files_through_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let (delta, parquet) = (dir.path().join("delta"), dir.path().join("parquet"));
    let pipeline = chain(dir.path(), "delta", &delta, 30_000, true);
    run(&pipeline);
    run(&chain(dir.path(), "parquet", &parquet, 30_000, false));
    let files_before = parquet_files(&delta.join("silver")).len();

    backfill(&pipeline);
    independent_reader(&delta, &parquet);
    let log = std::fs::read_dir(delta.join("silver/listen_events/_delta_log"))
        .unwrap()
        .count();
    assert!(log >= 2, "the backfill is a commit of its own");

    let out = assert_success(&sluice(&["compact", pipeline.to_str().unwrap()], &[]));
    assert!(out.contains("compacted"), "{out}");
    let summary = independent_reader(&delta, &parquet);
    let live: u64 = ["listen_events", "page_view_events"]
        .iter()
        .map(|t| summary[format!("silver/{t}")]["files"].as_u64().unwrap())
        .sum();
    assert!(
        (live as usize) < files_before,
        "fewer live files after compaction: {live} vs {files_before}"
    );
}
