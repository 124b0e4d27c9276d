//! The quickstart pipeline end to end on 100,000 generated events, through the real binary.
mod common;
use common::*;
use std::collections::BTreeSet;

#[test]
fn quickstart_writes_every_event_once_and_accounts_for_every_row() {
    let lake = tempfile::tempdir().unwrap();
    let env = [
        ("SLUICE_LAKE", format!("file://{}", lake.path().display())),
        ("SLUICE_EVENTS", "100000".to_string()),
        ("SLUICE_PLUGIN_DIR", plugin_dir()),
    ];
    let stdout = assert_success(&sluice(&["run", "pipelines/quickstart.yaml"], &env));

    let bronze = read_layer(lake.path(), "bronze");
    let silver = read_layer(lake.path(), "silver");
    let rejects = read_layer(lake.path(), "_rejects");
    assert_eq!(rows(&bronze), 100_000, "bronze holds every generated event");
    let offsets: BTreeSet<i64> = int64_column(&bronze, "_offset").into_iter().collect();
    assert_eq!(
        offsets,
        (0..100_000).collect::<BTreeSet<i64>>(),
        "each generator offset exactly once"
    );
    assert!(
        rows(&rejects) > 0,
        "the generator's dirty records are rejected"
    );
    assert_eq!(
        rows(&silver) + rows(&rejects),
        rows(&bronze),
        "silver + rejects = bronze"
    );

    // Every reject says why and which stage; the reasons are the clean plugin's.
    let reasons: BTreeSet<String> = string_column(&rejects, "reason").into_iter().collect();
    let known: BTreeSet<String> = [
        "duplicate",
        "missing_user_id",
        "negative_duration",
        "ts_out_of_range",
    ]
    .map(String::from)
    .into();
    assert!(
        reasons.is_subset(&known) && reasons.len() >= 3,
        "{reasons:?}"
    );
    assert!(
        string_column(&rejects, "stage")
            .iter()
            .all(|s| s == "clean")
    );
    assert!(
        string_column(&rejects, "raw")
            .iter()
            .all(|r| r.starts_with('{') && r.contains("\"ts\""))
    );

    // Silver carries the normalised data plus event_time.
    assert!(
        silver
            .iter()
            .all(|b| b.schema().field_with_name("event_time").is_ok())
    );
    assert!(
        string_column(&silver, "level")
            .iter()
            .all(|l| l == "free" || l == "paid")
    );

    // Hive layout, no staging leftovers, and a summary that matches the lake.
    assert!(
        lake.path()
            .join("bronze/listen_events")
            .read_dir()
            .unwrap()
            .all(|d| d
                .unwrap()
                .file_name()
                .to_string_lossy()
                .starts_with("date="))
    );
    assert!(parquet_files(&lake.path().join("_tmp")).is_empty());
    assert!(
        stdout.contains(&format!("silver {:>47}", rows(&silver)))
            || stdout.contains(&rows(&silver).to_string()),
        "{stdout}"
    );
    assert!(stdout.contains("events/s per core"), "{stdout}");

    // Running it again resumes after the last commit: nothing new, nothing duplicated.
    let again = assert_success(&sluice(&["run", "pipelines/quickstart.yaml"], &env));
    assert!(again.contains("0 events"), "{again}");
    assert_eq!(rows(&read_layer(lake.path(), "bronze")), 100_000);
}

#[test]
fn killed_mid_run_and_restarted_writes_each_event_exactly_once() {
    let lake = tempfile::tempdir().unwrap();
    let pipeline = lake.path().join("p.yaml");
    std::fs::write(
        &pipeline,
        format!(
            "name: crash\nsource:\n  generator:\n    events: 200000\nbatch_rows: 4096\nlake:\n  uri: file://{}/lake\n  commit_rows: 20000\nbronze:\n  partition_by: [date]\nstages:\n  - name: clean\n    plugin: {}/clean.wasm\n    layer: silver\n",
            lake.path().display(),
            plugin_dir()
        ),
    )
    .unwrap();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(["run", "--quiet", pipeline.to_str().unwrap()])
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let commits = lake.path().join("lake/_commits/crash/main");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    while std::fs::read_dir(&commits).map_or(0, |d| d.count()) < 2 {
        assert!(
            std::time::Instant::now() < deadline,
            "no commit within 120 s"
        );
        assert!(
            child.try_wait().unwrap().is_none(),
            "finished before it could be killed: raise `events`"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let before = rows(&read_layer(&lake.path().join("lake"), "bronze"));
    assert!(before < 200_000, "killed before the end ({before} rows)");

    let stdout = assert_success(&sluice(
        &["run", "--quiet", pipeline.to_str().unwrap()],
        &[],
    ));
    assert!(stdout.contains("resumed after"), "{stdout}");
    let lake = lake.path().join("lake");
    let bronze = read_layer(&lake, "bronze");
    let mut offsets = int64_column(&bronze, "_offset");
    offsets.sort_unstable();
    assert_eq!(
        offsets,
        (0..200_000).collect::<Vec<i64>>(),
        "every event exactly once after the crash"
    );
    assert_eq!(
        rows(&read_layer(&lake, "silver")) + rows(&read_layer(&lake, "_rejects")),
        200_000
    );
}

#[test]
fn gen_writes_one_jsonl_file_per_topic() {
    let out = tempfile::tempdir().unwrap();
    let stdout = assert_success(&sluice(
        &[
            "gen",
            "--events",
            "5000",
            "--seed",
            "7",
            "--out",
            out.path().to_str().unwrap(),
        ],
        &[],
    ));
    let mut total = 0;
    for topic in [
        "listen_events",
        "page_view_events",
        "auth_events",
        "status_change_events",
    ] {
        let text = std::fs::read_to_string(out.path().join(format!("{topic}.jsonl"))).unwrap();
        for line in text.lines() {
            let value: serde_json::Value = serde_json::from_str(line).unwrap();
            assert!(
                value["ts"].is_i64() && value["sessionId"].is_i64(),
                "{line}"
            );
        }
        total += text.lines().count();
    }
    assert_eq!(total, 5000, "{stdout}");
}

/// Runs fifty records an hour apart, one per batch (so one file each), partitioned by hour with
/// room for `max_buffer_mb` of open files, and returns the files of each commit, in order.
fn files_per_commit_of_fifty_hours(max_buffer_mb: u32) -> Vec<usize> {
    let dir = tempfile::tempdir().unwrap();
    let lines: Vec<String> = (0..50)
        .map(|h| {
            format!(
                r#"{{"ts":{},"sessionId":{h}}}"#,
                1_793_491_200_000i64 + h * 3_600_000
            )
        })
        .collect();
    std::fs::write(dir.path().join("auth_events.jsonl"), lines.join("\n")).unwrap();
    let pipeline = dir.path().join("p.yaml");
    std::fs::write(
        &pipeline,
        format!(
            "name: bounded\nsource:\n  files:\n    paths: [\"{0}/*.jsonl\"]\nbatch_rows: 1\nlake:\n  uri: file://{0}/lake\n  max_buffer_mb: {max_buffer_mb}\nbronze:\n  partition_by: [date, hour]\n",
            dir.path().display()
        ),
    )
    .unwrap();
    assert_success(&sluice(&["run", pipeline.to_str().unwrap()], &[]));
    assert_eq!(rows(&read_layer(&dir.path().join("lake"), "bronze")), 50);
    let mut commits: Vec<_> = std::fs::read_dir(dir.path().join("lake/_commits/bounded/main"))
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .collect();
    commits.sort();
    let files_per_commit: Vec<usize> = commits
        .iter()
        .map(|path| {
            let record: serde_json::Value =
                serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
            record["files"].as_array().unwrap().len()
        })
        .collect();
    assert_eq!(files_per_commit.iter().sum::<usize>(), 50);
    files_per_commit
}

#[test]
fn open_files_are_bounded_by_committing_early() {
    // Each open file costs about 1 MiB of buffers. Its size is known once an encoder thread
    // has encoded its first batch: the pipeline can be ahead by the sink channel's depth (8),
    // the write in progress, the one being sent and the encoders' queues (4 each, two
    // encoders on CI), so a commit holds at most ~19 files here, not 50.
    let files_per_commit = files_per_commit_of_fifty_hours(1);
    assert!(files_per_commit.len() >= 3, "{files_per_commit:?}");
    assert!(
        files_per_commit.iter().all(|&n| n <= 19),
        "{files_per_commit:?}"
    );
}

#[test]
fn a_commit_in_flight_does_not_trigger_another() {
    // Room for several files: until the sink thread has done a commit, the size it last
    // published is of the files that commit closes. Read as current, it made the pipeline
    // commit again at each of the next batches, one file each (17 1 1 1 1 17 1 1 1 1 8).
    // (The end of input commits what is left: any number of files, or none.)
    let files_per_commit = files_per_commit_of_fifty_hours(4);
    let mut full = files_per_commit.clone();
    while full.pop() == Some(0) {}
    assert!(full.iter().all(|&n| n >= 2), "{files_per_commit:?}");
}
