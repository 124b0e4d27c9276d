//! `sluice compact` and `schedule:`: compaction merges small files without changing a row and
//! leaves what a backfill replays alone; a pipeline's schedule runs compactions and backfills
//! inside a stream, which then ends with exactly what an unscheduled run writes.
mod common;
use common::*;
use std::path::Path;

/// The chain, committing every `commit_rows` records, with `extra` YAML appended.
fn small_commits(
    dir: &Path,
    file: &str,
    lake: &Path,
    events: u64,
    extra: &str,
) -> std::path::PathBuf {
    let path = chain_pipeline(dir, file, "chain", &lake_uri(lake), events, extra);
    let text = std::fs::read_to_string(&path)
        .unwrap()
        .replace("commit_rows: 25000", "commit_rows: 4000");
    std::fs::write(&path, text).unwrap();
    path
}

fn files(lake: &Path, folder: &str) -> Vec<std::path::PathBuf> {
    parquet_files(&lake.join(folder))
}

fn done_jobs(lake: &Path, kind: &str) -> usize {
    std::fs::read_dir(lake.join("_jobs/chain"))
        .map(|d| {
            d.flatten()
                .filter(|e| {
                    e.file_name()
                        .to_string_lossy()
                        .ends_with(&format!(".{kind}.done.json"))
                })
                .count()
        })
        .unwrap_or(0)
}

#[test]
fn compaction_merges_small_files_keeps_every_row_and_leaves_the_replay_log_alone() {
    let dir = tempfile::tempdir().unwrap();
    let lake = dir.path().join("lake");
    let pipeline = small_commits(dir.path(), "chain", &lake, 30_000, "");
    run(&pipeline);
    let before = derived(&lake);
    let silver_before = files(&lake, "silver");
    let bronze = files(&lake, "bronze");
    let decode_rejects = files(&lake, "_rejects/listen_events/stage=decode");
    let latest: serde_json::Value = {
        let mut records: Vec<_> = std::fs::read_dir(lake.join("_commits/chain/main"))
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .collect();
        records.sort();
        serde_json::from_slice(&std::fs::read(records.last().unwrap()).unwrap()).unwrap()
    };

    let out = assert_success(&sluice(&["compact", pipeline.to_str().unwrap()], &[]));
    assert!(
        out.contains("compacted _rejects, gold, silver of pipeline chain"),
        "{out}"
    );
    let silver_after = files(&lake, "silver");
    assert!(
        silver_after.len() * 2 < silver_before.len(),
        "fewer files: {} -> {}",
        silver_before.len(),
        silver_after.len()
    );
    assert_same(&derived(&lake), &before);
    assert_eq!(files(&lake, "bronze"), bronze, "bronze is not compacted");
    assert_eq!(
        files(&lake, "_rejects/listen_events/stage=decode"),
        decode_rejects
    );
    for file in latest["files"].as_array().unwrap() {
        let path = lake.join(file["path"].as_str().unwrap());
        assert!(
            path.exists(),
            "the latest commit's files stay: {}",
            path.display()
        );
    }
    assert_eq!(done_jobs(&lake, "compact"), 1);

    // Nothing left to merge, and a backfill still replays bronze to the same layers.
    let out = assert_success(&sluice(&["compact", pipeline.to_str().unwrap()], &[]));
    assert!(out.contains("0 files in 0 folders"), "{out}");
    backfill(&pipeline);
    assert_same(&derived(&lake), &before);

    let refused = sluice(
        &["compact", "--layer", "bronze", pipeline.to_str().unwrap()],
        &[],
    );
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("bronze is the log a backfill replays")
    );
}

#[test]
fn a_stream_with_scheduled_compactions_and_backfills_ends_as_an_unscheduled_run() {
    let dir = tempfile::tempdir().unwrap();
    let (lake, reference) = (dir.path().join("lake"), dir.path().join("reference"));
    let paced = |file: &str, lake: &Path, extra: &str| {
        let path = small_commits(dir.path(), file, lake, 50_000, extra);
        let text = std::fs::read_to_string(&path)
            .unwrap()
            .replace("users: 400}", "users: 400, rate: 10000}");
        std::fs::write(&path, text).unwrap();
        path
    };
    let schedule = "schedule:
  - {name: merge, cron: \"*/2 * * * * *\", job: compact, min_files: 2}
  - {name: rebuild, cron: \"*/3 * * * * *\", job: backfill}
";
    let pipeline = paced("scheduled", &lake, schedule);
    let log = dir.path().join("host.log");
    let mut host = spawn_logged(&pipeline, &log, &[]);
    let status = host.wait_exit();
    let log = std::fs::read_to_string(&log).unwrap();
    assert!(status.success(), "{log}");
    assert!(log.contains("scheduled job starts"), "{log}");
    assert!(done_jobs(&lake, "compact") >= 1, "{log}");
    assert!(done_jobs(&lake, "backfill") >= 1, "{log}");

    run(&paced("reference", &reference, ""));
    assert_same(&derived(&lake), &derived(&reference));
}

#[test]
fn a_schedule_that_cannot_work_is_refused_at_validation() {
    let dir = tempfile::tempdir().unwrap();
    let lake = dir.path().join("lake");
    let pipeline = small_commits(
        dir.path(),
        "bad",
        &lake,
        1000,
        "schedule:
  - {name: nightly, cron: \"every night\", job: backfill}
  - {name: nightly, cron: \"0 3 * * *\", job: compact, layers: [bronze]}
",
    );
    let out = sluice(&["validate", pipeline.to_str().unwrap()], &[]);
    assert!(!out.status.success());
    let errors = String::from_utf8_lossy(&out.stderr);
    for expected in [
        "schedule[0].cron: `every night` is not a crontab time",
        "schedule[1].name: `nightly` is named twice",
        "schedule[1].layers: bronze is the log a backfill replays",
    ] {
        assert!(errors.contains(expected), "{expected}: {errors}");
    }
}
