//! Gold into PostgreSQL, end to end against a real server (`tests/services/postgres/`,
//! Debian's postgresql): every gold table equals the gold Parquet row for row; a replay adds
//! nothing; a crash before a load's commit, and a server crash mid-run, leave exactly the
//! lake's rows; bad settings fail clearly and never print the password.
//!
//! Each test starts a server of its own (its own name, port and cluster).
mod common;

use arrow::datatypes::DataType;
use common::{PASSWORD, Service, assert_success, lake_rows, layer_tables, wait_for};
use std::path::{Path, PathBuf};
use std::time::Duration;

struct Server(Service);

impl Server {
    fn start(name: &str, port: u16) -> Server {
        Server(Service::start(
            "tests/services/postgres/postgres.sh",
            name,
            port,
        ))
    }

    fn client(&self) -> postgres::Client {
        postgres::Config::new()
            .host("127.0.0.1")
            .port(self.0.port)
            .user("sluice")
            .password(PASSWORD)
            .dbname("sluice")
            .connect(postgres::NoTls)
            .unwrap()
    }

    fn count(&self, sql: &str) -> i64 {
        self.client()
            .query_one(sql, &[])
            .map(|row| row.get(0))
            .unwrap_or(0)
    }

    /// Rows of `schema.table` in the lake table's column order, each cell as
    /// `common::parquet_cell` prints it, sorted.
    fn rows(&self, schema: &str, table: &str, like: &arrow::datatypes::Schema) -> Vec<Vec<String>> {
        let cells: Vec<String> = like
            .fields()
            .iter()
            .map(|field| {
                let column = format!("\"{}\"", field.name());
                match field.data_type() {
                    DataType::Timestamp(..) => {
                        format!("(extract(epoch from {column}) * 1000)::bigint")
                    }
                    DataType::Date32 => format!("{column}::text"),
                    DataType::Boolean => format!("{column}::int"),
                    DataType::Float32 => format!("{column}::float8"),
                    _ => column,
                }
            })
            .collect();
        let sql = format!(
            "SELECT json_build_array({})::text FROM \"{schema}\".\"{table}\"",
            cells.join(", ")
        );
        let mut rows: Vec<Vec<String>> = self
            .client()
            .query(&sql, &[])
            .unwrap_or_else(|e| panic!("{sql}: {e}"))
            .iter()
            .map(|row| {
                let values: Vec<serde_json::Value> =
                    serde_json::from_str(row.get::<_, &str>(0)).unwrap();
                values
                    .iter()
                    .zip(like.fields())
                    .map(|(value, field)| match value {
                        serde_json::Value::Null => "NULL".to_string(),
                        serde_json::Value::Number(n) if field.data_type().is_floating() => {
                            format!("{:?}", n.as_f64().unwrap())
                        }
                        serde_json::Value::Number(n) => n.to_string(),
                        serde_json::Value::String(s) => s.clone(),
                        other => panic!("unexpected JSON cell {other}"),
                    })
                    .collect()
            })
            .collect();
        rows.sort();
        rows
    }

    /// Every gold table of `lake` is in `schema`, row for row.
    fn assert_equals_lake(&self, schema: &str, lake: &Path) {
        let gold = layer_tables(lake, "gold");
        assert!(gold.len() >= 5, "gold tables: {:?}", gold.keys());
        for (table, batches) in &gold {
            let expected = lake_rows(batches);
            assert!(!expected.is_empty(), "{table} is empty in the lake");
            let actual = self.rows(schema, table, &batches[0].schema());
            assert_eq!(actual.len(), expected.len(), "{schema}.{table}: row count");
            assert_eq!(actual, expected, "{schema}.{table}: rows");
        }
    }

    fn loads(&self, schema: &str) -> i64 {
        self.count(&format!("SELECT count(*) FROM \"{schema}\"._sluice_loads"))
    }
}

/// The quickstart chain, gold → PostgreSQL schema `name`.
fn pipeline(dir: &Path, name: &str, server: &Server, events: u64) -> PathBuf {
    let lake = format!("file://{}", dir.join(format!("{name}-lake")).display());
    let postgres = format!(
        "postgres:
  url: postgresql://sluice@127.0.0.1:{}/sluice
  password: ${{PG_PASSWORD}}
  schema: {name}
  connect_timeout_ms: 5000
  max_backoff_ms: 500
",
        server.0.port
    );
    common::chain_pipeline(dir, name, name, &lake, events, &postgres)
}

fn run(pipeline: &Path, env: &[(&str, String)]) -> std::process::Output {
    let mut env = env.to_vec();
    env.push(("PG_PASSWORD", PASSWORD.to_string()));
    common::sluice(&["run", "--quiet", pipeline.to_str().unwrap()], &env)
}

#[test]
fn every_gold_table_in_postgres_equals_the_gold_parquet_and_a_replay_adds_nothing() {
    let server = Server::start("pg-equal", 18641);
    let dir = tempfile::tempdir().unwrap();
    let p = pipeline(dir.path(), "equal", &server, 150_000);
    assert_success(&run(&p, &[]));
    let lake = dir.path().join("equal-lake");
    server.assert_equals_lake("equal", &lake);

    // One marker per table and epoch, with the rows it brought.
    let gold_rows: usize = layer_tables(&lake, "gold")
        .values()
        .map(|b| common::rows(b))
        .sum();
    assert_eq!(
        server.count("SELECT sum(rows)::bigint FROM equal._sluice_loads"),
        gold_rows as i64
    );
    // Declared types and NOT NULL come from the Arrow schema.
    let sessions: Vec<(String, String, String)> = server
        .client()
        .query(
            "SELECT column_name::text, data_type::text, is_nullable::text \
             FROM information_schema.columns \
             WHERE table_schema = 'equal' AND table_name = 'sessions' ORDER BY ordinal_position",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    assert!(
        sessions.contains(&(
            "session_start".into(),
            "timestamp with time zone".into(),
            "NO".into()
        )),
        "{sessions:?}"
    );

    // Running the finished pipeline again loads its last epoch again at start: the markers
    // make that a no-op.
    let loads = server.loads("equal");
    let output = run(&p, &[("SLUICE_LOG", "info".to_string())]);
    assert_success(&output);
    assert_eq!(server.loads("equal"), loads);
    server.assert_equals_lake("equal", &lake);
}

#[test]
fn a_crash_before_a_load_commits_and_a_server_crash_mid_run_leave_exactly_the_lake() {
    let server = Server::start("pg-faults", 18642);
    let dir = tempfile::tempdir().unwrap();

    // 1. Abort inside the third load's transaction, after its COPY: nothing of it is visible,
    // and the restart loads it (and the rest) exactly once.
    let crashed = pipeline(dir.path(), "crashed", &server, 200_000);
    let output = run(
        &crashed,
        &[("SLUICE_FAILPOINTS", "postgres.before_commit=3".to_string())],
    );
    assert!(!output.status.success(), "the failpoint did not fire");
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("failpoint postgres.before_commit"),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(
        server.count("SELECT count(DISTINCT epoch) FROM crashed._sluice_loads"),
        2,
        "the third epoch's load was rolled back"
    );
    let output = run(&crashed, &[("SLUICE_LOG", "info".to_string())]);
    assert_success(&output);
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("PostgreSQL caught up with the lake"),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    server.assert_equals_lake("crashed", &dir.path().join("crashed-lake"));

    // 2. The server crashes (immediate shutdown: no checkpoint, crash recovery on start)
    // mid-run: the pipeline holds, then completes with every row once.
    let p = pipeline(dir.path(), "outage", &server, 600_000);
    let commits = || {
        std::fs::read_dir(dir.path().join("outage-lake/_commits/outage/main"))
            .map_or(0, |d| d.count())
    };
    let log = dir.path().join("outage.log");
    let log_text = || std::fs::read_to_string(&log).unwrap_or_default();
    let mut host = common::spawn_logged(&p, &log, &[("PG_PASSWORD", PASSWORD)]);
    wait_for("two loads", || server.loads("outage") >= 2);
    server.0.script("kill");
    // The sink waits for PostgreSQL, the channels fill, the lake stops committing.
    std::thread::sleep(Duration::from_secs(3));
    let held = commits();
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(
        commits(),
        held,
        "the lake kept committing while PostgreSQL was down"
    );
    assert!(
        host.try_wait().unwrap().is_none(),
        "the host gave up:\n{}",
        log_text()
    );
    server.0.script("start");
    let status = host.wait_exit();
    assert!(status.success(), "{status}:\n{}", log_text());
    assert!(
        log_text().contains("PostgreSQL loading failed; retrying in"),
        "{}",
        log_text()
    );
    server.assert_equals_lake("outage", &dir.path().join("outage-lake"));
}

#[test]
fn bad_settings_fail_clearly_and_never_print_the_password() {
    let server = Server::start("pg-config", 18643);
    let dir = tempfile::tempdir().unwrap();
    let p = pipeline(dir.path(), "bad", &server, 20_000);
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
    let url = format!("127.0.0.1:{}/sluice", server.0.port);

    // Nothing listens on the port: the error says where it tried.
    let wrong_port = variant("port", &url, "127.0.0.1:1/sluice");
    let error = stderr(&run(&wrong_port, &[]));
    assert!(
        error.contains("PostgreSQL at 127.0.0.1:1/sluice is unreachable"),
        "{error}"
    );

    // Wrong credentials: refused at once, naming the user, not the password.
    let output = common::sluice(
        &["run", "--quiet", p.to_str().unwrap()],
        &[("PG_PASSWORD", "not-the-password".to_string())],
    );
    let error = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(!output.status.success());
    assert!(error.contains("refused user `sluice`"), "{error}");
    assert!(!error.contains("not-the-password"), "{error}");

    // A table whose columns do not fit the gold schema.
    server
        .client()
        .batch_execute(
            "CREATE SCHEMA bad; \
             CREATE TABLE bad.daily_active_users (date date, level text, users text)",
        )
        .unwrap();
    let error = stderr(&run(&p, &[]));
    assert!(
        error.contains(
            "PostgreSQL table bad.daily_active_users: column `users`: Int64 cannot be written to a text column"
        ),
        "{error}"
    );
    // The failing epoch loaded nothing: no marker names the table (an earlier epoch, whose
    // gold had only sessions, may have loaded), and its rows stay in the lake for the next
    // start to load.
    assert_eq!(
        server
            .count("SELECT count(*) FROM bad._sluice_loads WHERE \"table\" = 'daily_active_users'"),
        0
    );
    assert_eq!(
        server.count("SELECT count(*) FROM bad.daily_active_users"),
        0
    );

    // A password inside the URL is refused by validation, naming the key.
    let in_url = variant(
        "in-url",
        "postgresql://sluice@",
        "postgresql://sluice:hunter2@",
    );
    let error = stderr(&run(&in_url, &[]));
    assert!(
        error.contains("postgres.url: carries a password"),
        "{error}"
    );
    assert!(!error.contains("hunter2"), "{error}");
}
