//! Gold into ClickHouse, end to end against a real server (`tests/services/clickhouse/`,
//! Debian's clickhouse-server): every KPI table equals the gold Parquet; a crash between an
//! insert and its marker, a SIGKILL, and a server outage leave the dashboard numbers of an
//! uninterrupted run; bad settings fail clearly and never print the password.
//!
//! Each test starts a server of its own (its own name, port and data).
mod common;

use arrow::array::RecordBatch;
use arrow::datatypes::{DataType, TimeUnit};
use common::{
    ClickHouseServer as Server, Host, PASSWORD, assert_success, lake_rows, layer_tables, wait_for,
};
use sluice::sink::clickhouse::ClickHouseSink;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// The quickstart chain, gold → ClickHouse.
fn pipeline(dir: &Path, name: &str, server: &Server, database: &str, events: u64) -> PathBuf {
    let lake = format!("file://{}", dir.join(format!("{name}-lake")).display());
    let clickhouse = format!(
        "clickhouse:
  url: {}
  user: sluice
  password: ${{CLICKHOUSE_PASSWORD}}
  database: {database}
  connect_timeout_ms: 5000
  max_backoff_ms: 500
",
        server.url()
    );
    common::chain_pipeline(dir, name, name, &lake, events, &clickhouse)
}

fn run(pipeline: &Path, env: &[(&str, String)]) -> std::process::Output {
    let mut env = env.to_vec();
    env.push(("CLICKHOUSE_PASSWORD", PASSWORD.to_string()));
    common::sluice(&["run", "--quiet", pipeline.to_str().unwrap()], &env)
}

/// `sluice run` in the background with the password in its environment, logging to `log`.
fn spawn_with_password(pipeline: &Path, log: &Path) -> Host {
    common::spawn_logged(pipeline, log, &[("CLICKHOUSE_PASSWORD", PASSWORD)])
}

fn clickhouse_cell(value: &serde_json::Value, data_type: &DataType) -> String {
    match value {
        serde_json::Value::Null => "NULL".into(),
        // Printed as the shortest text that reads back as the same f32.
        serde_json::Value::Number(n) if data_type == &DataType::Float32 => {
            format!("{:?}", n.to_string().parse::<f32>().unwrap() as f64)
        }
        serde_json::Value::String(s) if data_type.is_floating() => {
            format!("{:?}", s.parse::<f64>().unwrap())
        }
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Number(n) if data_type.is_floating() => {
            format!("{:?}", n.as_f64().unwrap())
        }
        serde_json::Value::Number(n) => n.to_string(),
        other => panic!("unexpected JSON cell {other}"),
    }
}

/// Rows of the ClickHouse table (with FINAL), in the lake table's column order, sorted.
fn clickhouse_rows(
    server: &Server,
    database: &str,
    table: &str,
    like: &RecordBatch,
) -> Vec<Vec<String>> {
    let schema = like.schema();
    let names: Vec<String> = schema
        .fields()
        .iter()
        .map(|f| format!("`{}`", f.name()))
        .collect();
    let text = server.query(&format!(
        "SELECT {} FROM {database}.{table} FINAL FORMAT JSONEachRow",
        names.join(", ")
    ));
    let mut rows: Vec<Vec<String>> = text
        .lines()
        .map(|line| {
            let cells: serde_json::Map<String, serde_json::Value> =
                serde_json::from_str(line).unwrap();
            schema
                .fields()
                .iter()
                .map(|field| clickhouse_cell(&cells[field.name()], field.data_type()))
                .collect()
        })
        .collect();
    rows.sort();
    rows
}

/// The numbers a dashboard shows, read the documented way (`FINAL`).
fn dashboard(server: &Server, database: &str) -> Vec<String> {
    [
        "SELECT date, level, users FROM {db}.daily_active_users FINAL ORDER BY date, level",
        "SELECT date, sum(streams) FROM {db}.streams_per_hour FINAL GROUP BY date ORDER BY date",
        "SELECT date, rank, artist, song, plays FROM {db}.top_songs FINAL ORDER BY date, rank",
        "SELECT date, rank, artist, plays FROM {db}.top_artists FINAL ORDER BY date, rank",
        "SELECT state, round(sum(listen_seconds), 3), sum(plays) FROM {db}.listening_by_state FINAL GROUP BY state ORDER BY state",
        "SELECT * FROM {db}.sessions_per_day FINAL ORDER BY date",
        "SELECT * FROM {db}.subscriptions_per_day FINAL ORDER BY date",
        "SELECT count(), sum(events), sum(songs), round(sum(listen_seconds), 3) FROM {db}.sessions FINAL",
        "SELECT level_start, count() FROM {db}.sessions FINAL GROUP BY level_start ORDER BY level_start",
    ]
    .iter()
    .map(|q| server.query(&q.replace("{db}", database)))
    .collect()
}

fn loads(server: &Server, database: &str) -> u64 {
    server
        .client()
        .query(&format!("SELECT count() FROM {database}._sluice_loads"))
        .ok()
        .and_then(|t| t.trim().parse().ok())
        .unwrap_or(0)
}

#[test]
fn every_gold_table_in_clickhouse_equals_the_gold_parquet() {
    let server = Server::start("ch-equal", 18410);
    let dir = tempfile::tempdir().unwrap();
    let p = pipeline(dir.path(), "equal", &server, "sluice_eq", 120_000);
    assert_success(&run(&p, &[]));

    let gold = layer_tables(&dir.path().join("equal-lake"), "gold");
    let expected = [
        "daily_active_users",
        "listening_by_state",
        "sessions",
        "sessions_per_day",
        "streams_per_hour",
        "subscriptions_per_day",
        "top_artists",
        "top_songs",
    ];
    assert_eq!(gold.keys().collect::<Vec<_>>(), expected);
    for (table, batches) in &gold {
        let lake = lake_rows(batches);
        assert!(!lake.is_empty(), "{table} is empty in the lake");
        let clickhouse = clickhouse_rows(&server, "sluice_eq", table, &batches[0]);
        assert_eq!(clickhouse.len(), lake.len(), "{table}: row count");
        assert_eq!(clickhouse, lake, "{table}: rows differ");
        // Nothing was replayed, so nothing is there twice even without FINAL.
        let raw = server.count(&format!("SELECT count() FROM sluice_eq.{table}"));
        assert_eq!(raw, lake.len() as u64, "{table}: rows without FINAL");
    }
    // The plugins' declared keys became the tables' sorting keys.
    assert_eq!(
        server.query(
            "SELECT name, engine, sorting_key FROM system.tables WHERE database = 'sluice_eq' \
             AND name IN ('top_songs', 'sessions') ORDER BY name FORMAT TabSeparated"
        ),
        "sessions\tReplacingMergeTree\tuserId, session_start\n\
         top_songs\tReplacingMergeTree\tdate, rank\n"
    );
}

#[test]
fn type_mapping_round_trips_every_gold_type() {
    use arrow::array::{
        BooleanArray, Date32Array, Float32Array, Float64Array, Int8Array, Int16Array, Int32Array,
        Int64Array, StringArray, TimestampMillisecondArray, UInt8Array, UInt16Array, UInt32Array,
        UInt64Array,
    };
    use arrow::datatypes::{Field, Schema};
    use std::sync::Arc;
    let server = Server::start("ch-types", 18420);
    let ts = DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into()));
    let schema = Arc::new(Schema::new(vec![
        Field::new("i8", DataType::Int8, false),
        Field::new("i16", DataType::Int16, false),
        Field::new("i32", DataType::Int32, false),
        Field::new("i64", DataType::Int64, false),
        Field::new("u8", DataType::UInt8, false),
        Field::new("u16", DataType::UInt16, false),
        Field::new("u32", DataType::UInt32, false),
        Field::new("u64", DataType::UInt64, false),
        Field::new("f32", DataType::Float32, false),
        Field::new("f64", DataType::Float64, false),
        Field::new("flag", DataType::Boolean, false),
        Field::new("text", DataType::Utf8, true),
        Field::new("date", DataType::Date32, false),
        Field::new("ts", ts, false),
    ]));
    let batch = RecordBatch::try_new(
        schema,
        vec![
            Arc::new(Int8Array::from(vec![-128, 127])),
            Arc::new(Int16Array::from(vec![-32768, 1])),
            Arc::new(Int32Array::from(vec![i32::MIN, 7])),
            Arc::new(Int64Array::from(vec![i64::MIN, i64::MAX])),
            Arc::new(UInt8Array::from(vec![0, 255])),
            Arc::new(UInt16Array::from(vec![0, 65535])),
            Arc::new(UInt32Array::from(vec![0, u32::MAX])),
            Arc::new(UInt64Array::from(vec![0, u64::MAX])),
            Arc::new(Float32Array::from(vec![0.25, -1.5e10])),
            Arc::new(Float64Array::from(vec![0.1, 1.0 / 3.0])),
            Arc::new(BooleanArray::from(vec![true, false])),
            Arc::new(StringArray::from(vec![Some("tab\there 'q' \\ ünï"), None])),
            // Day 0 would do too, but an 18.x server prints it as 0000-00-00.
            Arc::new(Date32Array::from(vec![1, 20_000])),
            Arc::new(
                TimestampMillisecondArray::from(vec![1_700_000_000_123, 0]).with_timezone("UTC"),
            ),
        ],
    )
    .unwrap();
    let mut sink = ClickHouseSink::connect(&server.config("types"), "types", None).unwrap();
    sink.insert_batches(1, "all_types", std::slice::from_ref(&batch))
        .unwrap();
    assert_eq!(
        clickhouse_rows(&server, "types", "all_types", &batch),
        lake_rows(std::slice::from_ref(&batch))
    );
    let types = server.query(
        "SELECT name, type FROM system.columns WHERE database = 'types' AND table = 'all_types' \
         FORMAT TabSeparated",
    );
    assert!(types.contains("flag\tUInt8\n"), "{types}");
    assert!(types.contains("text\tNullable(String)\n"), "{types}");
    assert!(types.contains("date\tDate\n"), "{types}");
    // An 18.x server has no DateTime64: the epoch milliseconds go to an Int64.
    assert!(types.contains("ts\tInt64\n"), "{types}");

    // A table created beforehand may use the other accepted types: DateTime takes seconds.
    server.query(
        "CREATE TABLE types.wider (date Date, ts DateTime, flag UInt8, text Nullable(String)) \
         ENGINE = MergeTree ORDER BY date",
    );
    let narrow = batch.project(&[12, 13, 10, 11]).unwrap();
    sink.insert_batches(2, "wider", std::slice::from_ref(&narrow))
        .unwrap();
    assert_eq!(
        server.query("SELECT toUInt32(ts), flag FROM types.wider ORDER BY ts FORMAT TabSeparated"),
        "0\t0\n1700000000\t1\n"
    );

    let metrics = sluice::metrics::render();
    assert!(
        metrics.contains(
            "sluice_sink_rows_total{pipeline=\"types\",sink=\"clickhouse\",table=\"all_types\"} 2"
        ),
        "{metrics}"
    );
}

#[test]
fn a_crash_between_insert_and_marker_and_a_sigkill_leave_the_numbers_of_an_uninterrupted_run() {
    let server = Server::start("ch-crash", 18430);
    let dir = tempfile::tempdir().unwrap();
    let events = 300_000;
    let reference = pipeline(dir.path(), "reference", &server, "reference", events);
    assert_success(&run(&reference, &[]));

    // 1. Abort right after an insert, before its marker: the restart inserts those rows again.
    let crashed = pipeline(dir.path(), "crashed", &server, "crashed", events);
    let output = run(
        &crashed,
        &[(
            "SLUICE_FAILPOINTS",
            "clickhouse.before_marker=5".to_string(),
        )],
    );
    assert!(!output.status.success(), "the failpoint did not fire");
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("failpoint clickhouse.before_marker"),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    // 2. Restart, then SIGKILL it at some later load, and restart again to the end.
    let log = dir.path().join("crashed.log");
    let log_text = || std::fs::read_to_string(&log).unwrap_or_default();
    let mut host = spawn_with_password(&crashed, &log);
    // It first loads again what the aborted process had inserted without a marker (those
    // rows go in twice; FINAL is what hides them until a merge).
    wait_for("the reload at start", || {
        log_text().contains("ClickHouse caught up with the lake")
    });
    let loaded = loads(&server, "crashed");
    wait_for("more loads", || loads(&server, "crashed") >= loaded + 4);
    host.kill_now();
    assert_success(&run(&crashed, &[]));

    assert_eq!(
        dashboard(&server, "crashed"),
        dashboard(&server, "reference")
    );
}

#[test]
fn clickhouse_down_mid_run_holds_the_pipeline_then_everything_arrives_once() {
    let server = Server::start("ch-outage", 18440);
    let dir = tempfile::tempdir().unwrap();
    let events = 600_000;
    let reference = pipeline(dir.path(), "reference", &server, "reference", events);
    assert_success(&run(&reference, &[]));

    let p = pipeline(dir.path(), "outage", &server, "outage", events);
    // Long enough that the outage starts well before the end.
    let commits = |dir: &Path| {
        std::fs::read_dir(dir.join("outage-lake/_commits/outage/main")).map_or(0, |d| d.count())
    };
    let log = dir.path().join("outage.log");
    let mut host = spawn_with_password(&p, &log);
    let log_text = || std::fs::read_to_string(&log).unwrap_or_default();
    wait_for("two loads", || loads(&server, "outage") >= 2);
    server.script("kill");
    // The sink waits for ClickHouse, the channels fill, the pipeline stops committing: at
    // most the epoch in flight is durable in the lake beyond what ClickHouse has.
    std::thread::sleep(Duration::from_secs(3));
    let held = commits(dir.path());
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(
        commits(dir.path()),
        held,
        "the lake kept committing while ClickHouse was down"
    );
    assert!(
        host.try_wait().unwrap().is_none(),
        "the host gave up:\n{}",
        log_text()
    );
    server.script("start");
    let status = host.wait_exit();
    assert!(status.success(), "{status}:\n{}", log_text());
    assert!(log_text().contains("retrying in"), "{}", log_text());

    assert_eq!(
        dashboard(&server, "outage"),
        dashboard(&server, "reference")
    );
    for table in ["sessions", "top_songs", "daily_active_users"] {
        assert_eq!(
            server.count(&format!("SELECT count() FROM outage.{table}")),
            server.count(&format!("SELECT count() FROM reference.{table}")),
            "{table}: rows without FINAL (nothing doubled)"
        );
    }
}

#[test]
fn bad_settings_fail_clearly_and_never_print_the_password() {
    let server = Server::start("ch-config", 18450);
    let dir = tempfile::tempdir().unwrap();
    let p = pipeline(dir.path(), "bad", &server, "bad", 20_000);
    let text = std::fs::read_to_string(&p).unwrap();
    let variant = |name: &str, from: &str, to: &str| {
        let path = dir.path().join(format!("{name}.yaml"));
        assert!(text.contains(from));
        std::fs::write(&path, text.replace(from, to)).unwrap();
        path
    };
    let stderr = |output: &std::process::Output| {
        assert!(!output.status.success(), "expected a failure");
        let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
        assert!(!stderr.contains(PASSWORD), "the password leaked: {stderr}");
        stderr
    };

    // Nothing listens on the port: the error says where it tried, after connect_timeout_ms.
    let wrong_port = variant("port", &server.url(), "http://127.0.0.1:1");
    let error = stderr(&run(&wrong_port, &[]));
    assert!(
        error.contains("ClickHouse at http://127.0.0.1:1 is unreachable"),
        "{error}"
    );

    // Wrong credentials: refused at once, naming the user, not the password.
    let output = common::sluice(
        &["run", "--quiet", p.to_str().unwrap()],
        &[("CLICKHOUSE_PASSWORD", "not-the-password".to_string())],
    );
    let error = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(!output.status.success());
    assert!(error.contains("refused user `sluice`"), "{error}");
    assert!(!error.contains("not-the-password"), "{error}");

    // A table whose columns do not fit the gold schema.
    server.query("CREATE DATABASE bad");
    server.query(
        "CREATE TABLE bad.daily_active_users (date Date, level String, users String) \
         ENGINE = MergeTree ORDER BY date",
    );
    let error = stderr(&run(&p, &[("SLUICE_LOG", "debug".to_string())]));
    assert!(
        error.contains("ClickHouse table bad.daily_active_users: column `users`"),
        "{error}"
    );

    // https is refused by validation, naming the key.
    let https = variant("https", &server.url(), "https://127.0.0.1:8443");
    let error = stderr(&run(&https, &[]));
    assert!(error.contains("clickhouse.url"), "{error}");
}

/// Insert throughput for gold-shaped rows (sessions), against `clickhouse-client` loading the
/// same rows as TabSeparated in the same run. `bench/clickhouse.sh` runs it.
#[test]
#[ignore = "a benchmark: bench/clickhouse.sh"]
fn bench_insert_throughput() {
    let server = Server::start("ch-bench", 18460);
    let dir = tempfile::tempdir().unwrap();
    let rows: usize = std::env::var("SLUICE_BENCH_ROWS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let batch = sessions_like(rows);
    let chunk = 100_000;
    let chunks: Vec<RecordBatch> = (0..rows.div_ceil(chunk))
        .map(|i| batch.slice(i * chunk, chunk.min(rows - i * chunk)))
        .collect();
    let mut medians = BTreeMap::new();
    for compress in [true, false] {
        let mut config = server.config("bench");
        config.compress = compress;
        let mut times = Vec::new();
        for round in 0..3 {
            let mut sink = ClickHouseSink::connect(&config, "bench", None).unwrap();
            let table = format!("sessions_{compress}_{round}");
            let started = std::time::Instant::now();
            for (i, part) in chunks.iter().enumerate() {
                sink.insert_batches(i as u64, &table, std::slice::from_ref(part))
                    .unwrap();
            }
            times.push(started.elapsed().as_secs_f64());
            assert_eq!(
                server.count(&format!("SELECT count() FROM bench.{table}")),
                rows as u64
            );
        }
        times.sort_by(f64::total_cmp);
        medians.insert(
            if compress {
                "sluice_gzip"
            } else {
                "sluice_plain"
            },
            times[1],
        );
    }
    // Baseline: the native client inserting the same rows from a TabSeparated file.
    let tsv = dir.path().join("rows.tsv");
    let mut text = String::new();
    for row in lake_rows(std::slice::from_ref(&batch)) {
        text.push_str(&row.join("\t").replace("NULL", "\\N"));
        text.push('\n');
    }
    std::fs::write(&tsv, text).unwrap();
    let mut times = Vec::new();
    for round in 0..3 {
        let table = format!("bench.sessions_client_{round}");
        server.query(&format!("CREATE TABLE {table} AS bench.sessions_true_0"));
        let started = std::time::Instant::now();
        let status = Command::new("sh")
            .arg("-c")
            .arg(format!(
                "clickhouse-client --port {} --user sluice --password {PASSWORD} --query 'INSERT INTO {table} FORMAT TabSeparated' < {}",
                server.port + 1,
                tsv.display()
            ))
            .status()
            .unwrap();
        assert!(status.success());
        times.push(started.elapsed().as_secs_f64());
    }
    times.sort_by(f64::total_cmp);
    medians.insert("clickhouse_client_tsv", times[1]);
    let baseline = medians["clickhouse_client_tsv"];
    let mut csv = String::from("engine,rows,median_s,rows_per_s,ratio_vs_client\n");
    for (engine, seconds) in &medians {
        println!(
            "{engine:>22}: {rows} rows in {seconds:.2} s = {:.0} rows/s ({:.2}x clickhouse-client)",
            rows as f64 / seconds,
            baseline / seconds
        );
        csv.push_str(&format!(
            "{engine},{rows},{seconds:.3},{:.0},{:.3}\n",
            rows as f64 / seconds,
            baseline / seconds
        ));
    }
    if let Ok(out) = std::env::var("SLUICE_BENCH_CSV") {
        std::fs::write(out, csv).unwrap();
    }
}

/// `rows` rows shaped like gold `sessions`.
fn sessions_like(rows: usize) -> RecordBatch {
    use arrow::array::{Float64Array, Int64Array, StringArray, TimestampMillisecondArray};
    use arrow::datatypes::{Field, Schema};
    use std::sync::Arc;
    let utc = DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into()));
    let start = |i: usize| 1_700_000_000_000 + (i as i64) * 37_000;
    let states = ["CA", "NY", "TX", "WA", "FL"];
    let schema = Schema::new(vec![
        Field::new("userId", DataType::Int64, false),
        Field::new("session_start", utc.clone(), false),
        Field::new("session_end", utc, false),
        Field::new("duration_s", DataType::Float64, false),
        Field::new("events", DataType::Int64, false),
        Field::new("songs", DataType::Int64, false),
        Field::new("listen_seconds", DataType::Float64, false),
        Field::new("level_start", DataType::Utf8, true),
        Field::new("city", DataType::Utf8, true),
        Field::new("state", DataType::Utf8, true),
    ]);
    let schema = sluice_sdk::with_key(schema, &["userId", "session_start"]);
    RecordBatch::try_new(
        Arc::new(schema),
        vec![
            Arc::new(Int64Array::from_iter_values(
                (0..rows).map(|i| (i % 5000) as i64),
            )),
            Arc::new(
                TimestampMillisecondArray::from_iter_values((0..rows).map(start))
                    .with_timezone("UTC"),
            ),
            Arc::new(
                TimestampMillisecondArray::from_iter_values((0..rows).map(|i| start(i) + 900_000))
                    .with_timezone("UTC"),
            ),
            Arc::new(Float64Array::from_iter_values(
                (0..rows).map(|i| (i % 3600) as f64 + 0.5),
            )),
            Arc::new(Int64Array::from_iter_values(
                (0..rows).map(|i| (i % 40) as i64),
            )),
            Arc::new(Int64Array::from_iter_values(
                (0..rows).map(|i| (i % 30) as i64),
            )),
            Arc::new(Float64Array::from_iter_values(
                (0..rows).map(|i| (i % 7000) as f64 * 1.25),
            )),
            Arc::new(StringArray::from_iter_values(
                (0..rows).map(|i| if i % 4 == 0 { "paid" } else { "free" }),
            )),
            Arc::new(StringArray::from_iter_values(
                (0..rows).map(|i| format!("City {}", i % 977)),
            )),
            Arc::new(StringArray::from_iter_values(
                (0..rows).map(|i| states[i % states.len()]),
            )),
        ],
    )
    .unwrap()
}
