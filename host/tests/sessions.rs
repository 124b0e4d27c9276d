//! Sessionization end to end against EventSim's ground truth: the sessions found equal the
//! generator's `sessionId` grouping (same count, same boundaries, same event counts) — in
//! order, across batch boundaries, shuffled within the allowed lateness, and after a crash
//! (where every gold KPI table must also equal an uninterrupted run's).
mod common;
use arrow::array::{Array, AsArray};
use arrow::datatypes::TimestampMillisecondType;
use common::*;
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// (user, first ts, last ts, events) per session.
type Sessions = BTreeSet<(i64, i64, i64, i64)>;

/// The ground truth: silver page views grouped by (userId, sessionId).
fn truth(lake: &Path) -> Sessions {
    let silver = parquet_files(&lake.join("silver/page_view_events"))
        .iter()
        .flat_map(|f| read_parquet(f))
        .collect::<Vec<_>>();
    let mut groups: BTreeMap<(i64, i64), (i64, i64, i64)> = BTreeMap::new();
    for batch in &silver {
        let (users, sessions, ts) = (
            batch.column_by_name("userId").unwrap(),
            int64_column(std::slice::from_ref(batch), "sessionId"),
            int64_column(std::slice::from_ref(batch), "ts"),
        );
        let users = users.as_primitive::<arrow::datatypes::Int64Type>();
        for row in 0..batch.num_rows() {
            if users.is_valid(row) {
                let g = groups.entry((users.value(row), sessions[row])).or_insert((
                    i64::MAX,
                    i64::MIN,
                    0,
                ));
                *g = (g.0.min(ts[row]), g.1.max(ts[row]), g.2 + 1);
            }
        }
    }
    groups
        .into_iter()
        .map(|((user, _), (start, end, n))| (user, start, end, n))
        .collect()
}

fn found(lake: &Path) -> Sessions {
    let gold = parquet_files(&lake.join("gold/sessions"))
        .iter()
        .flat_map(|f| read_parquet(f))
        .collect::<Vec<_>>();
    let mut sessions = Sessions::new();
    for batch in &gold {
        let start = batch
            .column_by_name("session_start")
            .unwrap()
            .as_primitive::<TimestampMillisecondType>();
        let end = batch
            .column_by_name("session_end")
            .unwrap()
            .as_primitive::<TimestampMillisecondType>();
        let users = int64_column(std::slice::from_ref(batch), "userId");
        let events = int64_column(std::slice::from_ref(batch), "events");
        for row in 0..batch.num_rows() {
            sessions.insert((users[row], start.value(row), end.value(row), events[row]));
        }
    }
    assert_eq!(sessions.len(), rows(&gold), "no session twice");
    sessions
}

/// Every gold table but sessions, each as its sorted rows (JSON): what a dashboard would read.
fn kpi_tables(lake: &Path) -> BTreeMap<String, Vec<String>> {
    let mut tables = BTreeMap::new();
    for entry in std::fs::read_dir(lake.join("gold")).unwrap() {
        let dir = entry.unwrap().path();
        let name = dir.file_name().unwrap().to_string_lossy().into_owned();
        if name == "sessions" {
            continue;
        }
        let mut rows = Vec::new();
        for batch in parquet_files(&dir).iter().flat_map(|f| read_parquet(f)) {
            let mut json = Vec::new();
            let mut writer = arrow::json::LineDelimitedWriter::new(&mut json);
            writer.write(&batch).unwrap();
            writer.finish().unwrap();
            rows.extend(String::from_utf8(json).unwrap().lines().map(str::to_string));
        }
        rows.sort();
        tables.insert(name, rows);
    }
    tables
}

/// The state snapshots under the lake's `_state/`, and those the latest commit record of
/// instance `main` names: old ones are removed at each commit, so the two are the same.
fn state_files(lake: &Path) -> (BTreeSet<String>, BTreeSet<String>) {
    fn walk(dir: &Path, found: &mut BTreeSet<String>, root: &Path) {
        for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                walk(&path, found, root);
            } else {
                let relative = path.strip_prefix(root).unwrap();
                found.insert(relative.to_string_lossy().into_owned());
            }
        }
    }
    let mut stored = BTreeSet::new();
    walk(&lake.join("_state"), &mut stored, lake);
    let commits = lake.join("_commits/sessions/main");
    let latest = std::fs::read_dir(&commits)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .max()
        .unwrap();
    let record: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&latest).unwrap()).unwrap();
    let named = record["lanes"]
        .as_object()
        .unwrap()
        .values()
        .flat_map(|lane| lane["state"].as_object().unwrap().values())
        .map(|path| path.as_str().unwrap().to_string())
        .collect();
    (stored, named)
}

fn pipeline(dir: &Path, source: &str, extra: &str) -> std::path::PathBuf {
    let path = dir.join("p.yaml");
    std::fs::write(
        &path,
        format!(
            "name: sessions\nsource:\n{source}\nbatch_rows: 2048\n{extra}lake:\n  uri: file://{0}/lake\n  commit_rows: 40000\nstages:\n  - name: clean\n    plugin: {1}/clean.wasm\n    layer: silver\n  - name: sessionize\n    plugin: {1}/sessionize.wasm\n    topics: [page_view_events]\n    layer: gold\n    write: [sessions]\n    partition_by: [date]\n    event_time: session_start\n  - name: kpis\n    plugin: {1}/kpis.wasm\n    layer: gold\n",
            dir.display(),
            plugin_dir()
        ),
    )
    .unwrap();
    path
}

#[test]
fn sessions_equal_eventsim_ground_truth_across_batches() {
    let dir = tempfile::tempdir().unwrap();
    let p = pipeline(dir.path(), "  generator: {events: 150000, users: 300}", "");
    assert_success(&sluice(&["run", p.to_str().unwrap()], &[]));
    let lake = dir.path().join("lake");
    let truth = truth(&lake);
    assert!(truth.len() > 1000, "{} sessions", truth.len());
    assert_eq!(found(&lake), truth);
    let commits = std::fs::read_dir(lake.join("_commits/sessions/main"))
        .unwrap()
        .count();
    assert!(commits > 2, "{commits} commits");
    let (stored, named) = state_files(&lake);
    // sessionize and kpis, on one lane.
    assert_eq!(named.len(), 2, "{named:?}");
    assert_eq!(stored, named);
    assert!(lake.join("gold/sessions").read_dir().unwrap().all(|d| {
        d.unwrap()
            .file_name()
            .to_string_lossy()
            .starts_with("date=")
    }));
}

#[test]
fn shuffled_input_within_lateness_gives_the_same_sessions_and_late_events_are_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    assert_success(&sluice(
        &[
            "gen",
            "--events",
            "60000",
            "--users",
            "200",
            "--out",
            data.to_str().unwrap(),
        ],
        &[],
    ));
    // Keep only page views; displace each by up to 5 minutes (lateness is 10).
    let text = std::fs::read_to_string(data.join("page_view_events.jsonl")).unwrap();
    let mut lines: Vec<(i64, &str)> = text
        .lines()
        .enumerate()
        .map(|(i, line)| {
            let ts = serde_json::from_str::<serde_json::Value>(line).unwrap()["ts"]
                .as_i64()
                .unwrap();
            let jitter = ((i as i64).wrapping_mul(2_654_435_761) % 300_000).abs();
            (ts + jitter, line)
        })
        .collect();
    lines.sort_by_key(|(key, _)| *key);
    let mut shuffled: Vec<&str> = lines.iter().map(|(_, l)| *l).collect();
    // One event from long before the watermark: late.
    let late = r#"{"ts":1793491200000,"sessionId":999999,"auth":"Logged In","page":"Home","level":"free","userId":1000,"itemInSession":0}"#;
    shuffled.push(late);
    for f in std::fs::read_dir(&data).unwrap() {
        std::fs::remove_file(f.unwrap().path()).unwrap();
    }
    std::fs::write(data.join("page_view_events.jsonl"), shuffled.join("\n")).unwrap();

    let p = pipeline(
        dir.path(),
        &format!("  files: {{paths: [\"{}/*.jsonl\"]}}", data.display()),
        "allowed_lateness_ms: 600000\n",
    );
    assert_success(&sluice(&["run", p.to_str().unwrap()], &[]));
    let lake = dir.path().join("lake");
    let rejects = read_layer(&lake, "_rejects");
    let late_rows: Vec<usize> = string_column(&rejects, "reason")
        .iter()
        .enumerate()
        .filter(|(_, r)| *r == "late")
        .map(|(i, _)| i)
        .collect();
    assert_eq!(late_rows.len(), 1, "exactly the one late event");
    assert_eq!(string_column(&rejects, "stage")[late_rows[0]], "sessionize");
    assert!(string_column(&rejects, "raw")[late_rows[0]].contains("999999"));
    // Ground truth without the late event (it is in silver, but no session may include it).
    let truth: Sessions = truth(&lake)
        .into_iter()
        .filter(|s| !(s.0 == 1000 && s.1 == 1_793_491_200_000))
        .collect();
    assert!(truth.len() > 500, "{} sessions", truth.len());
    assert_eq!(found(&lake), truth);
}

#[test]
fn killed_and_restarted_the_sessions_equal_an_uninterrupted_run() {
    let whole = tempfile::tempdir().unwrap();
    let p = pipeline(
        whole.path(),
        "  generator: {events: 300000, users: 500}",
        "",
    );
    assert_success(&sluice(&["run", "--quiet", p.to_str().unwrap()], &[]));
    let expected = found(&whole.path().join("lake"));
    assert!(expected.len() > 1000, "{} sessions", expected.len());
    let expected_kpis = kpi_tables(&whole.path().join("lake"));
    assert_eq!(expected_kpis.len(), 7, "{:?}", expected_kpis.keys());
    assert!(
        expected_kpis["subscriptions_per_day"].len() > 2,
        "several days: {:?}",
        expected_kpis["subscriptions_per_day"]
    );

    let dir = tempfile::tempdir().unwrap();
    let p = pipeline(dir.path(), "  generator: {events: 300000, users: 500}", "");
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(["run", "--quiet", p.to_str().unwrap()])
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let commits = dir.path().join("lake/_commits/sessions/main");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    while std::fs::read_dir(&commits).map_or(0, |d| d.count()) < 3 {
        assert!(
            std::time::Instant::now() < deadline,
            "no commit within 120 s"
        );
        assert!(
            child.try_wait().unwrap().is_none(),
            "finished before it could be killed"
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(
        dir.path().join("lake/_state/sessions").is_dir(),
        "state was checkpointed"
    );
    let stdout = assert_success(&sluice(&["run", "--quiet", p.to_str().unwrap()], &[]));
    assert!(stdout.contains("resumed after"), "{stdout}");
    assert_eq!(found(&dir.path().join("lake")), expected);
    let (stored, named) = state_files(&dir.path().join("lake"));
    assert_eq!(
        stored, named,
        "the snapshots of the run before the crash are gone too"
    );
    let restarted = kpi_tables(&dir.path().join("lake"));
    for (table, rows) in &expected_kpis {
        let got = restarted.get(table).cloned().unwrap_or_default();
        let missing: Vec<&String> = rows.iter().filter(|r| !got.contains(r)).collect();
        let extra: Vec<&String> = got.iter().filter(|r| !rows.contains(r)).collect();
        assert!(
            missing.is_empty() && extra.is_empty(),
            "{table} after the crash: missing {missing:#?}\nextra {extra:#?}"
        );
    }
}
