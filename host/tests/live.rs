//! Live operations against a running host: plugin hot-swap and rollback through the admin API
//! and by watching the plugin file, state handed over across a swap, the admin token.
mod common;

use common::*;
use sluice::sink::lake::CommitRecord;
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Every commit record of `pipeline`'s `main` instance, oldest first.
fn commit_records(lake: &Path, pipeline: &str) -> Vec<CommitRecord> {
    let dir = lake.join("_commits").join(pipeline).join("main");
    let mut paths: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    paths.sort();
    paths
        .iter()
        .map(|p| serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap())
        .collect()
}

fn plugin(name: &str) -> Vec<u8> {
    std::fs::read(Path::new(&plugin_dir()).join(name)).unwrap()
}

fn stage_status(base: &str, pipeline: &str) -> serde_json::Value {
    get_json(&format!("{base}/pipelines/{pipeline}"))["stages"][0].clone()
}

/// Under a steady load, `clean` goes v1 → v2 → v1 ten times through the admin API (plus one
/// refused upload and a rollback). Every source record ends up exactly once in silver or the
/// dead letters, and every file and dead letter was produced by the version its epoch's commit
/// record names — so no batch was processed twice, by two versions, or by none.
#[test]
fn hot_swaps_under_load_process_every_event_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let port = 18510;
    let base = format!("http://127.0.0.1:{port}");
    let pipeline = dir.path().join("swaps.yaml");
    std::fs::write(
        &pipeline,
        format!(
            "name: swaps\nsource:\n  generator: {{events: 100000000, rate: 20000, dirty_rate: 0.01}}\nbatch_rows: 1000\nlake:\n  uri: file://{lake}\nstages:\n  - name: clean\n    plugin: {plugins}/clean.wasm\n    layer: silver\nadmin:\n  listen: 127.0.0.1:{port}\n",
            lake = dir.path().join("lake").display(),
            plugins = plugin_dir(),
        ),
    )
    .unwrap();
    let mut host = spawn_logged(&pipeline, &dir.path().join("host.log"), &[]);
    wait_ready(&base, &mut host);
    let (v1, v2) = (plugin("clean.wasm"), plugin("clean_v2.wasm"));
    let url = format!("{base}/pipelines/swaps/stages/clean/plugin");
    let records_before = get_json(&format!("{base}/pipelines/swaps"))["records"]
        .as_u64()
        .unwrap();
    for round in 0..10 {
        for (bytes, version) in [(&v2, "2.0.0"), (&v1, "0.1.0")] {
            let (status, body) = http("PUT", &url, bytes, None);
            assert_eq!(status, 200, "round {round}, swap to {version}: {body}");
            let answer: serde_json::Value = serde_json::from_str(&body).unwrap();
            assert_eq!(answer["plugin"]["version"], version, "{body}");
            assert_eq!(answer["plugin"]["name"], "clean");
        }
        if round == 4 {
            let (status, body) = http("PUT", &url, b"\0asm not a component", None);
            assert_eq!(status, 409, "{body}");
            assert!(body.contains("refused"), "{body}");
            assert_eq!(stage_status(&base, "swaps")["plugin"]["version"], "0.1.0");
        }
    }
    let (status, body) = http(
        "POST",
        &format!("{base}/pipelines/swaps/stages/clean/rollback"),
        b"",
        None,
    );
    assert_eq!(status, 200, "{body}");
    assert!(
        body.contains("\"2.0.0\""),
        "rollback from v1 goes back to v2: {body}"
    );
    let stage = stage_status(&base, "swaps");
    assert_eq!(stage["swaps"], 21, "{stage}");
    assert_eq!(stage["plugin"]["version"], "2.0.0");
    let records_after = get_json(&format!("{base}/pipelines/swaps"))["records"]
        .as_u64()
        .unwrap();
    assert!(
        records_after > records_before,
        "the load went on while swapping"
    );
    // Let v2 process some batches, then stop (a final commit).
    std::thread::sleep(std::time::Duration::from_secs(1));
    assert!(host.terminate().success());

    let lake = dir.path().join("lake");
    let records = commit_records(&lake, "swaps");
    let consumed = records.last().unwrap().records;
    let mut stamps_seen = BTreeSet::new();
    let mut offsets: BTreeMap<i64, u32> = BTreeMap::new();
    for record in &records {
        let running = &record.plugins["clean"];
        for file in &record.files {
            let path = lake.join(&file.path);
            match file.layer.as_str() {
                "silver" => {
                    let stamp = plugin_stamp(&path).expect("silver files name their plugin");
                    assert_eq!(
                        stamp,
                        running.stamp(),
                        "epoch {}: {} was written by another version than the epoch ran",
                        record.epoch,
                        file.path
                    );
                    stamps_seen.insert(stamp);
                    for offset in int64_column(&read_parquet(&path), "_offset") {
                        *offsets.entry(offset).or_default() += 1;
                    }
                }
                "_rejects" => {
                    let batches = read_parquet(&path);
                    let stages = string_column(&batches, "stage");
                    let plugins = string_column(&batches, "plugin");
                    for ((offset, stage), plugin) in int64_column(&batches, "offset")
                        .into_iter()
                        .zip(stages)
                        .zip(plugins)
                    {
                        if stage == "clean" {
                            assert_eq!(plugin, running.label(), "epoch {}", record.epoch);
                        }
                        *offsets.entry(offset).or_default() += 1;
                    }
                }
                other => panic!("unexpected layer {other}"),
            }
        }
    }
    assert_eq!(
        stamps_seen.len(),
        2,
        "both versions wrote files: {stamps_seen:?}"
    );
    assert!(consumed > 20_000, "only {consumed} records consumed");
    let twice: Vec<_> = offsets.iter().filter(|(_, n)| **n > 1).take(5).collect();
    assert!(
        twice.is_empty(),
        "records processed more than once: {twice:?}"
    );
    let missing: Vec<i64> = (0..consumed as i64)
        .filter(|o| !offsets.contains_key(o))
        .take(10)
        .collect();
    let beyond: Vec<i64> = offsets
        .range(consumed as i64..)
        .map(|(o, _)| *o)
        .take(10)
        .collect();
    assert!(
        missing.is_empty() && beyond.is_empty(),
        "of {consumed} records, lost: {missing:?}…; committed beyond the last position: {beyond:?}…"
    );
}

/// A stateful stage keeps its state across a swap: sessions from a run whose `sessionize` was
/// swapped twice mid-stream equal an uninterrupted run's.
#[test]
fn a_swapped_stateful_stage_hands_its_state_over() {
    let dir = tempfile::tempdir().unwrap();
    let port = 18520;
    let base = format!("http://127.0.0.1:{port}");
    let write = |name: &str, extra: &str| {
        let path = dir.path().join(format!("{name}.yaml"));
        std::fs::write(
            &path,
            format!(
                "name: {name}\nsource:\n  generator: {{events: 120000, users: 200{extra}}}\nbatch_rows: 2000\nlake:\n  uri: file://{lake}\nstages:\n  - name: clean\n    plugin: {plugins}/clean.wasm\n  - name: sessionize\n    plugin: {plugins}/sessionize.wasm\n    topics: [page_view_events]\n    layer: gold\n    write: [sessions]\n    event_time: session_start\nadmin:\n  listen: 127.0.0.1:{port}\n",
                lake = dir.path().join(name).display(),
                plugins = plugin_dir(),
            ),
        )
        .unwrap();
        path
    };
    let reference = write("reference", "");
    let mut host = spawn_logged(&reference, &dir.path().join("reference.log"), &[]);
    assert!(host.wait_exit().success());

    let swapped = write("swapped", ", rate: 10000");
    let mut host = spawn_logged(&swapped, &dir.path().join("swapped.log"), &[]);
    wait_ready(&base, &mut host);
    let url = format!("{base}/pipelines/swapped/stages/sessionize/plugin");
    let sessionize = plugin("sessionize.wasm");
    for _ in 0..2 {
        std::thread::sleep(std::time::Duration::from_secs(2));
        let (status, body) = http("PUT", &url, &sessionize, None);
        assert_eq!(status, 200, "{body}");
    }
    // A stateless build cannot replace a stateful one: its state would be lost.
    let (status, body) = http("PUT", &url, &plugin("clean.wasm"), None);
    assert_eq!(status, 409, "{body}");
    assert!(body.contains("state would be lost"), "{body}");
    assert!(host.wait_exit().success());
    let log = std::fs::read_to_string(dir.path().join("swapped.log")).unwrap();
    assert_eq!(log.matches("swap: now running").count(), 2, "{log}");

    let sessions = |name: &str| {
        let batches = read_layer(&dir.path().join(name), "gold");
        let mut rows: Vec<String> = arrow::util::pretty::pretty_format_batches(&batches)
            .unwrap()
            .to_string()
            .lines()
            .filter(|l| l.starts_with("| "))
            .skip(1)
            .map(str::to_string)
            .collect();
        rows.sort();
        rows
    };
    let (expected, got) = (sessions("reference"), sessions("swapped"));
    assert!(expected.len() > 1000, "{} sessions", expected.len());
    assert_eq!(got.len(), expected.len());
    assert!(got == expected, "sessions differ after swaps");
}

/// `watch: true`: a new file at the plugin path is checked and swapped in; a broken one is
/// refused with the reason in the status, and the running version stays. With a token, the
/// admin endpoints want it (health and readiness do not).
#[test]
fn a_watched_plugin_file_is_swapped_in_and_a_broken_one_refused() {
    let dir = tempfile::tempdir().unwrap();
    let port = 18530;
    let base = format!("http://127.0.0.1:{port}");
    let plugin_path = dir.path().join("clean.wasm");
    std::fs::write(&plugin_path, plugin("clean.wasm")).unwrap();
    let pipeline = dir.path().join("watched.yaml");
    std::fs::write(
        &pipeline,
        format!(
            "name: watched\nsource:\n  generator: {{events: 100000000, rate: 5000}}\nlake:\n  uri: file://{lake}\nstages:\n  - name: clean\n    plugin: clean.wasm\n    layer: silver\n    watch: true\nadmin:\n  listen: 127.0.0.1:{port}\n  token: ${{ADMIN_TOKEN}}\n",
            lake = dir.path().join("lake").display(),
        ),
    )
    .unwrap();
    let mut host = spawn_logged(
        &pipeline,
        &dir.path().join("host.log"),
        &[("ADMIN_TOKEN", "s3cret")],
    );
    wait_ready(&base, &mut host);
    let status_url = format!("{base}/pipelines/watched");
    assert_eq!(http("GET", &status_url, b"", None).0, 401);
    assert_eq!(http("GET", &status_url, b"", Some("wrong")).0, 401);
    assert_eq!(http("GET", &format!("{base}/health"), b"", None).0, 200);
    let stage = || {
        let (status, body) = http("GET", &status_url, b"", Some("s3cret"));
        assert_eq!(status, 200, "{body}");
        serde_json::from_str::<serde_json::Value>(&body).unwrap()["stages"][0].clone()
    };
    assert_eq!(stage()["plugin"]["version"], "0.1.0");

    let replace = |bytes: &[u8]| {
        let staged = dir.path().join("clean.wasm.new");
        std::fs::write(&staged, bytes).unwrap();
        std::fs::rename(&staged, &plugin_path).unwrap();
    };
    replace(&plugin("clean_v2.wasm"));
    wait_for("the watched v2 to be swapped in", || {
        stage()["plugin"]["version"] == "2.0.0"
    });
    replace(b"this is not wasm");
    wait_for("the broken file to be refused", || {
        stage()["last_swap"]
            .as_str()
            .is_some_and(|s| s.contains("refused"))
    });
    let now = stage();
    assert_eq!(now["plugin"]["version"], "2.0.0", "{now}");
    assert!(
        now["plugin"]["origin"]
            .as_str()
            .unwrap()
            .ends_with("clean.wasm"),
        "{now}"
    );
    let (_, page) = http("GET", &format!("{base}/"), b"", Some("s3cret"));
    assert!(
        page.contains("clean@2.0.0") && page.contains("refused"),
        "{page}"
    );
    assert!(host.terminate().success());

    let lake = dir.path().join("lake");
    let stamps: BTreeSet<String> = parquet_files(&lake.join("silver"))
        .iter()
        .filter_map(|f| plugin_stamp(f))
        .map(|s| s.split(' ').next().unwrap().to_string())
        .collect();
    assert!(stamps.contains("clean@2.0.0"), "{stamps:?}");
}
