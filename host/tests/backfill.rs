//! `sluice backfill --from bronze`: the layers the stages write, rebuilt from bronze, equal
//! what the stream wrote — after a finished run, after a plugin change (equal to a stream that
//! ran the new plugin from the start), after a stream stopped midway and resumed, and after a
//! backfill that crashed in its swap.
mod common;
use common::*;
use std::collections::BTreeMap;
use std::path::Path;

fn bronze_files(lake: &Path) -> Vec<std::path::PathBuf> {
    parquet_files(&lake.join("bronze"))
}

#[test]
fn a_backfill_rebuilds_what_the_stream_wrote_and_a_second_one_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let lake = dir.path().join("lake");
    let pipeline = chain_pipeline(dir.path(), "chain", "chain", &lake_uri(&lake), 30_000, "");
    run(&pipeline);
    let streamed = derived(&lake);
    let bronze = bronze_files(&lake);

    let out = backfill(&pipeline);
    assert!(
        out.contains("backfill 1 of pipeline chain: 30000 bronze records replayed"),
        "{out}"
    );
    assert!(out.contains("rebuilt gold, silver"), "{out}");
    assert_same(&derived(&lake), &streamed);
    assert_eq!(bronze_files(&lake), bronze, "bronze is left as it was");
    let silver = parquet_files(&lake.join("silver"));
    assert!(
        silver.iter().all(|f| f
            .file_name()
            .unwrap()
            .to_string_lossy()
            .starts_with("part-backfill-1-")),
        "only the backfill's files are left: {silver:?}"
    );
    assert!(
        lake.join("_jobs/chain/0000000001.backfill.done.json")
            .is_file()
    );
    assert!(
        parquet_files(&lake.join("_jobs")).is_empty(),
        "no shadow is left"
    );

    let out = backfill(&pipeline);
    assert!(out.contains("backfill 2 of pipeline chain"), "{out}");
    assert_same(&derived(&lake), &streamed);

    // The stream resumes after its last commit (the backfill's record): nothing new to do.
    let out = run(&pipeline);
    assert!(
        out.contains("resumed after 30000 committed events"),
        "{out}"
    );
    assert_same(&derived(&lake), &streamed);
}

#[test]
fn a_backfill_after_a_plugin_change_equals_a_stream_that_ran_the_new_plugin_from_the_start() {
    let dir = tempfile::tempdir().unwrap();
    let (lake, reference) = (dir.path().join("lake"), dir.path().join("reference"));
    let old = chain_pipeline(dir.path(), "old", "chain", &lake_uri(&lake), 20_000, "");
    run(&old);
    // The new clean plugin config refuses everything before 02:00 on the first day.
    let changed = |file: &str, lake: &Path| {
        let path = chain_pipeline(dir.path(), file, "chain", &lake_uri(lake), 20_000, "");
        let text = std::fs::read_to_string(&path).unwrap().replace(
            "    layer: silver\n",
            "    layer: silver\n    config: {min_ts_ms: 1793498400000}\n",
        );
        std::fs::write(&path, text).unwrap();
        path
    };
    let new = changed("new", &lake);
    backfill(&new);
    run(&changed("reference", &reference));
    let (rebuilt, expected) = (derived(&lake), derived(&reference));
    assert_same(&rebuilt, &expected);
    let early = rebuilt["_rejects/page_view_events"]
        .iter()
        .filter(|row| row[3] == "ts_out_of_range")
        .count();
    assert!(
        early > 1000,
        "the new rule refused the early events: {early}"
    );
}

/// The state a resumed stream restores is the backfill's: the sessionize gap changes before
/// the backfill, so only state rebuilt with the new gap gives the reference's sessions.
#[test]
fn a_stream_stopped_midway_then_backfilled_with_a_new_gap_and_resumed_equals_a_run_with_it() {
    let dir = tempfile::tempdir().unwrap();
    let (lake, reference) = (dir.path().join("lake"), dir.path().join("reference"));
    let streaming = |file: &str, lake: &Path, gap_ms: u64| {
        let path = chain_pipeline(dir.path(), file, "chain", &lake_uri(lake), 60_000, "");
        // Paced and committing often, so that a stop lands midway with sessions still open.
        let text = std::fs::read_to_string(&path)
            .unwrap()
            .replace("users: 400}", "users: 400, rate: 10000}")
            .replace("commit_rows: 25000", "commit_rows: 5000")
            .replace("gap_ms: 1800000", &format!("gap_ms: {gap_ms}"));
        std::fs::write(&path, text).unwrap();
        path
    };
    let pipeline = streaming("chain", &lake, 1_800_000);
    let log = dir.path().join("host.log");
    let mut host = spawn_logged(&pipeline, &log, &[]);
    wait_for("a commit or two", || {
        std::fs::read_dir(lake.join("_commits/chain/main"))
            .map(|d| d.count() >= 2)
            .unwrap_or(false)
    });
    assert!(host.terminate().success());
    let stopped = int64_column(&read_layer(&lake, "bronze"), "_offset").len();
    assert!(stopped > 0 && stopped < 60_000, "stopped midway: {stopped}");

    let changed = streaming("changed", &lake, 600_000);
    backfill(&changed);
    let out = run(&changed);
    assert!(
        out.contains(&format!("resumed after {stopped} committed events")),
        "{out}"
    );
    run(&streaming("reference", &reference, 600_000));
    let (resumed, expected) = (derived(&lake), derived(&reference));
    assert_same(&resumed, &expected);
    let sessions = |tables: &BTreeMap<String, Vec<Vec<String>>>| tables["gold/sessions"].len();
    let long_gap = derived_of_a_run(dir.path(), 60_000);
    assert!(
        sessions(&resumed) > sessions(&long_gap),
        "a shorter gap splits sessions: {} vs {}",
        sessions(&resumed),
        sessions(&long_gap)
    );
}

/// The derived layers of the unchanged chain over `events`, in a lake of its own.
fn derived_of_a_run(dir: &Path, events: u64) -> BTreeMap<String, Vec<Vec<String>>> {
    let lake = dir.join("long-gap");
    let pipeline = chain_pipeline(dir, "long-gap", "chain", &lake_uri(&lake), events, "");
    run(&pipeline);
    derived(&lake)
}

#[test]
fn a_backfill_that_crashed_in_its_swap_is_finished_by_the_next_start() {
    let dir = tempfile::tempdir().unwrap();
    let lake = dir.path().join("lake");
    let pipeline = chain_pipeline(dir.path(), "chain", "chain", &lake_uri(&lake), 20_000, "");
    run(&pipeline);
    let streamed = derived(&lake);
    let crashed = sluice(
        &["backfill", "--quiet", pipeline.to_str().unwrap()],
        &[("SLUICE_FAILPOINTS", "rewrite.move=3".into())],
    );
    assert!(!crashed.status.success());
    assert!(
        lake.join("_jobs/chain/0000000001.backfill.pending.json")
            .is_file()
    );

    let out = run(&pipeline);
    assert!(
        out.contains("resumed after 20000 committed events"),
        "{out}"
    );
    assert!(
        lake.join("_jobs/chain/0000000001.backfill.done.json")
            .is_file()
    );
    assert_same(&derived(&lake), &streamed);
}

#[test]
fn what_cannot_be_backfilled_is_refused_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let lake = format!("file://{}", dir.path().join("lake").display());
    let pipeline = chain_pipeline(dir.path(), "chain", "chain", &lake, 1000, "");
    let refused = |args: &[&str], pipeline: &Path| {
        let mut all = vec!["backfill"];
        all.extend_from_slice(args);
        all.push(pipeline.to_str().unwrap());
        let out = sluice(&all, &[]);
        assert!(!out.status.success());
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let error = refused(&[], &pipeline);
    assert!(
        error.contains("pipeline `chain` has no commits in"),
        "{error}"
    );
    let error = refused(&["--from", "silver"], &pipeline);
    assert!(error.contains("cannot backfill from `silver`"), "{error}");
    let text = std::fs::read_to_string(&pipeline).unwrap();
    std::fs::write(
        &pipeline,
        text.replace("bronze:\n  partition_by: [date, hour]\n", ""),
    )
    .unwrap();
    let error = refused(&[], &pipeline);
    assert!(error.contains("has no bronze layer"), "{error}");
}
