//! Shared helpers for the host's end-to-end tests: run the real binary, read the lake back.
#![allow(dead_code)]
use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::{
    DataType, Date32Type, Float32Type, Float64Type, Int8Type, Int16Type, Int32Type, Int64Type,
    TimeUnit, TimestampMillisecondType, UInt8Type, UInt16Type, UInt32Type, UInt64Type,
};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// `sluice <args>` with extra environment, from the repository root.
pub fn sluice(args: &[&str], env: &[(&str, String)]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_sluice"));
    command
        .args(args)
        .current_dir(repo_root())
        .env_remove("RUST_BACKTRACE")
        .env_remove("RUST_LIB_BACKTRACE");
    for (k, v) in env {
        command.env(k, v);
    }
    output_within(command, SLUICE_DEADLINE)
}

/// How long one `sluice` command may take in a test before it is killed and the test fails.
const SLUICE_DEADLINE: Duration = Duration::from_secs(600);

/// `command`'s output, as `Command::output` gives it, but never a wait without end: past
/// `limit` the process is killed and the test fails with its threads' stacks and output.
pub fn output_within(mut command: Command, limit: Duration) -> Output {
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("starting {command:?}: {e}"));
    let stdout = drain(child.stdout.take());
    let stderr = drain(child.stderr.take());
    let status = match exit_within(&mut child, limit) {
        Ok(status) => status,
        Err(stacks) => panic!(
            "{command:?} did not end within {limit:?}\n{stacks}\nstderr:\n{}",
            String::from_utf8_lossy(&stderr.join().unwrap())
        ),
    };
    Output {
        status,
        stdout: stdout.join().unwrap(),
        stderr: stderr.join().unwrap(),
    }
}

/// Reads a child's pipe to its end on a thread of its own, so that a full pipe never blocks
/// the child while the test waits for it.
fn drain<R: std::io::Read + Send + 'static>(pipe: Option<R>) -> std::thread::JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut bytes = Vec::new();
        if let Some(mut pipe) = pipe {
            let _ = pipe.read_to_end(&mut bytes);
        }
        bytes
    })
}

/// Waits at most `limit` for `child` to exit. Past it, takes its threads' stacks, kills it and
/// gives the stacks as the error.
fn exit_within(child: &mut Child, limit: Duration) -> Result<ExitStatus, String> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return Ok(status);
        }
        if Instant::now() >= deadline {
            let stacks = thread_stacks(child.id());
            let _ = child.kill();
            let _ = child.wait();
            return Err(stacks);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

pub fn assert_success(output: &Output) -> String {
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "sluice failed: {}\nstdout:\n{stdout}\nstderr:\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

/// Runs the independent reader `tests/interop/<script>` with the test virtualenv's Python
/// (scripts/test.sh creates it; SLUICE_PYTHON overrides) and returns the JSON it prints.
pub fn interop_reader<T: serde::de::DeserializeOwned>(
    script: &str,
    args: &[&dyn AsRef<std::ffi::OsStr>],
) -> T {
    let python = std::env::var("SLUICE_PYTHON").unwrap_or_else(|_| {
        let cache = std::env::var("SLUICE_CACHE")
            .unwrap_or_else(|_| format!("{}/.cache/sluice", std::env::var("HOME").unwrap()));
        format!("{cache}/venv/bin/python")
    });
    assert!(
        Path::new(&python).is_file(),
        "{python} is missing: scripts/test.sh creates the virtualenv (or set SLUICE_PYTHON)"
    );
    let run = || {
        Command::new(&python)
            .arg(repo_root().join("tests/interop").join(script))
            .args(args)
            .output()
            .unwrap()
    };
    let mut output = run();
    if output.status.code().is_none() {
        // Killed by a signal, not a verdict: the deltalake wheel's native runtime has been seen
        // to abort now and then ("terminate called without an active exception"). A reader that
        // found a difference exits with a status, and that is never retried.
        eprintln!(
            "{script} died ({}), running it once more: {}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
        output = run();
    }
    assert!(
        output.status.success(),
        "{script}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap()
}

/// The URI of a lake in a local folder.
pub fn lake_uri(lake: &Path) -> String {
    format!("file://{}", lake.display())
}

/// Every Parquet file under `dir`, sorted.
pub fn parquet_files(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(dir) = pending.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries {
            let path = entry.unwrap().path();
            if path.is_dir() {
                pending.push(path);
            } else if path.extension().is_some_and(|e| e == "parquet") {
                files.push(path);
            }
        }
    }
    files.sort();
    files
}

pub fn read_parquet(path: &Path) -> Vec<RecordBatch> {
    let file = std::fs::File::open(path).unwrap();
    ParquetRecordBatchReaderBuilder::try_new(file)
        .unwrap()
        .build()
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

/// All rows of a layer (`bronze`, `silver`, `_rejects`), across tables and partitions.
pub fn read_layer(lake: &Path, layer: &str) -> Vec<RecordBatch> {
    parquet_files(&lake.join(layer))
        .iter()
        .flat_map(|f| read_parquet(f))
        .collect()
}

pub fn rows(batches: &[RecordBatch]) -> usize {
    batches.iter().map(RecordBatch::num_rows).sum()
}

pub fn int64_column(batches: &[RecordBatch], column: &str) -> Vec<i64> {
    batches
        .iter()
        .flat_map(|b| {
            b.column_by_name(column)
                .unwrap_or_else(|| panic!("no column {column}"))
                .as_primitive::<Int64Type>()
                .values()
                .to_vec()
        })
        .collect()
}

pub fn string_column(batches: &[RecordBatch], column: &str) -> Vec<String> {
    batches
        .iter()
        .flat_map(|b| {
            b.column_by_name(column)
                .unwrap_or_else(|| panic!("no column {column}"))
                .as_string::<i32>()
                .iter()
                .map(|s| s.unwrap_or("").to_string())
                .collect::<Vec<_>>()
        })
        .collect()
}

/// The `sluice.plugin` stamp a Parquet file carries (`name@version sha256:…`).
pub fn plugin_stamp(path: &Path) -> Option<String> {
    let builder =
        ParquetRecordBatchReaderBuilder::try_new(std::fs::File::open(path).unwrap()).unwrap();
    builder.schema().metadata().get("sluice.plugin").cloned()
}

pub fn plugin_dir() -> String {
    sluice::testing::plugin_dir()
        .canonicalize()
        .expect("plugins are built (scripts/build-plugins.sh)")
        .display()
        .to_string()
}

/// How long a test waits for a host to exit before it kills it and fails: a hang becomes a
/// failure with the host's log instead of a CI run that never ends.
const HOST_EXIT_DEADLINE: Duration = Duration::from_secs(300);

/// A host process that is killed if the test fails before it ends. Its stderr goes to a file,
/// never to a pipe: a pipe nobody reads fills up and blocks the host in its next log line.
pub struct Host {
    child: Child,
    log: PathBuf,
}

impl std::ops::Deref for Host {
    type Target = Child;
    fn deref(&self) -> &Child {
        &self.child
    }
}

impl std::ops::DerefMut for Host {
    fn deref_mut(&mut self) -> &mut Child {
        &mut self.child
    }
}

impl Host {
    /// Starts `command` with stdout discarded and stderr written to `log`.
    pub fn start(mut command: Command, log: &Path) -> Host {
        let child = command
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(log).unwrap())
            .spawn()
            .unwrap();
        Host {
            child,
            log: log.to_path_buf(),
        }
    }

    /// What the host has logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits for the host to exit; past `HOST_EXIT_DEADLINE` it kills the host and panics
    /// with the end of its log.
    pub fn wait_exit(&mut self) -> ExitStatus {
        exit_within(&mut self.child, HOST_EXIT_DEADLINE).unwrap_or_else(|stacks| {
            let log = self.log();
            let tail = &log[log.floor_char_boundary(log.len().saturating_sub(8000))..];
            panic!(
                "the host did not exit within {HOST_EXIT_DEADLINE:?}\n{stacks}\nthe end of {}:\n{tail}",
                self.log.display()
            )
        })
    }

    /// SIGTERM, as a service manager stops it; waits for the exit.
    pub fn terminate(&mut self) -> ExitStatus {
        let pid = self.child.id().to_string();
        let sent = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        assert!(sent.success(), "kill -TERM {pid}");
        self.wait_exit()
    }

    /// SIGKILL: no final commit, no goodbye to a consumer group.
    pub fn kill_now(&mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
}

/// Where each thread of a process that hangs is, from gdb when the machine has it, so that a
/// hang is diagnosed from the CI log alone.
fn thread_stacks(pid: u32) -> String {
    let Ok(output) = Command::new("timeout")
        .args(["60", "gdb", "-p", &pid.to_string(), "-batch", "-ex"])
        .arg("thread apply all bt 30")
        .output()
    else {
        return "(no gdb here for the threads' stacks)".into();
    };
    let stacks = String::from_utf8_lossy(&output.stdout);
    // Only the frames: gdb's own chatter about symbols and threads is noise here.
    stacks
        .lines()
        .filter(|l| l.starts_with('#') || l.starts_with("Thread "))
        .map(|l| &l[..l.floor_char_boundary(200)])
        .collect::<Vec<_>>()
        .join("\n")
}

impl Drop for Host {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `sluice run --quiet PIPELINE` in the background, logging at info to `PIPELINE.log`.
pub fn spawn(pipeline: &Path) -> Host {
    spawn_logged(pipeline, &pipeline.with_extension("log"), &[])
}

/// `sluice run --quiet PIPELINE` in the background with extra environment, logging at info
/// to the file `log`.
pub fn spawn_logged(pipeline: &Path, log: &Path, env: &[(&str, &str)]) -> Host {
    let mut command = Command::new(env!("CARGO_BIN_EXE_sluice"));
    command
        .args(["run", "--quiet"])
        .arg(pipeline)
        .env("SLUICE_LOG", "info")
        .envs(env.iter().copied());
    Host::start(command, log)
}

/// Polls `done` every 50 ms; panics after 180 s.
pub fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(180);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The password of the `sluice` user of the test servers.
pub const PASSWORD: &str = "sluice-test-secret";

/// A server of a test's own, run by one of the `tests/services/` scripts (`start`, `stop`,
/// `wipe`, … with a name and a port); wiped before it starts and when dropped.
pub struct Service {
    script: &'static str,
    pub name: String,
    pub port: u16,
}

impl Service {
    /// `script` is relative to the repository root, e.g. `tests/services/hdfs/hdfs.sh`.
    pub fn start(script: &'static str, name: &str, port: u16) -> Service {
        Self::start_with(script, name, port, &[])
    }

    /// `start` with arguments after the port (e.g. what Prometheus scrapes).
    pub fn start_with(script: &'static str, name: &str, port: u16, extra: &[&str]) -> Service {
        let service = Service {
            script,
            name: name.to_string(),
            port,
        };
        service.script("wipe");
        service.script_with("start", extra);
        service
    }

    pub fn script(&self, command: &str) {
        self.script_with(command, &[])
    }

    fn script_with(&self, command: &str, extra: &[&str]) {
        let status = Command::new("bash")
            .arg(repo_root().join(self.script))
            .args([command, &self.name, &self.port.to_string()])
            .args(extra)
            .status()
            .unwrap_or_else(|e| panic!("running {}: {e}", self.script));
        assert!(
            status.success(),
            "{} {command} {} failed",
            self.script,
            self.name
        );
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        self.script("wipe");
    }
}

/// A ClickHouse server of a test's own (`tests/services/clickhouse/clickhouse.sh`).
pub struct ClickHouseServer(pub Service);

impl std::ops::Deref for ClickHouseServer {
    type Target = Service;
    fn deref(&self) -> &Service {
        &self.0
    }
}

impl ClickHouseServer {
    pub fn start(name: &str, port: u16) -> ClickHouseServer {
        ClickHouseServer(Service::start(
            "tests/services/clickhouse/clickhouse.sh",
            name,
            port,
        ))
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn config(&self, database: &str) -> sluice::config::ClickHouseConfig {
        let yaml = format!(
            "url: {}\nuser: sluice\npassword: {PASSWORD}\ndatabase: {database}\n",
            self.url()
        );
        serde_norway::from_str(&yaml).unwrap()
    }

    pub fn client(&self) -> sluice::sink::clickhouse::ClickHouseClient {
        sluice::sink::clickhouse::ClickHouseClient::new(&self.config("default"))
    }

    pub fn query(&self, sql: &str) -> String {
        self.client()
            .query(sql)
            .unwrap_or_else(|e| panic!("{sql}: {e}"))
    }

    pub fn count(&self, sql: &str) -> u64 {
        self.query(sql).trim().parse().unwrap()
    }
}

/// The quickstart chain — generator → bronze → clean/silver → sessionize/gold sessions →
/// kpis/gold — as `DIR/FILE.yaml`, with `extra` YAML appended (a `clickhouse:` block, say).
pub fn chain_pipeline(
    dir: &Path,
    file: &str,
    name: &str,
    lake: &str,
    events: u64,
    extra: &str,
) -> PathBuf {
    let plugins = plugin_dir();
    let path = dir.join(format!("{file}.yaml"));
    std::fs::write(
        &path,
        format!(
            "name: {name}
source:
  generator: {{events: {events}, seed: 11, users: 400}}
batch_rows: 4096
lake:
  uri: {lake}
  commit_rows: 25000
bronze:
  partition_by: [date, hour]
stages:
  - name: clean
    plugin: {plugins}/clean.wasm
    layer: silver
    partition_by: [date]
  - name: sessionize
    plugin: {plugins}/sessionize.wasm
    topics: [page_view_events]
    config: {{gap_ms: 1800000}}
    layer: gold
    write: [sessions]
    partition_by: [date]
    event_time: session_start
  - name: kpis
    plugin: {plugins}/kpis.wasm
    config: {{top_n: 10, close_after_ms: 3600000}}
    layer: gold
{extra}"
        ),
    )
    .unwrap();
    path
}

/// One HTTP request; the status and the body (no error for 4xx/5xx).
pub fn http(method: &str, url: &str, body: &[u8], token: Option<&str>) -> (u16, String) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(120)))
        .build()
        .into();
    let mut request = ureq::http::Request::builder().method(method).uri(url);
    if let Some(token) = token {
        request = request.header("Authorization", format!("Bearer {token}"));
    }
    let response = agent.run(request.body(body.to_vec()).unwrap());
    let mut response = response.unwrap_or_else(|e| panic!("{method} {url}: {e}"));
    let status = response.status().as_u16();
    (
        status,
        response.body_mut().read_to_string().unwrap_or_default(),
    )
}

/// `GET url` as JSON (panics on a status other than 200).
pub fn get_json(url: &str) -> serde_json::Value {
    let (status, body) = http("GET", url, b"", None);
    assert_eq!(status, 200, "GET {url}: {body}");
    serde_json::from_str(&body).unwrap()
}

/// Waits until the admin server at `base` says the pipeline is ready.
pub fn wait_ready(base: &str, host: &mut Host) {
    wait_for("the pipeline to be ready", || {
        if let Ok(Some(status)) = host.try_wait() {
            panic!("the host exited early: {status}");
        }
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .build()
            .into();
        agent
            .get(format!("{base}/ready"))
            .call()
            .is_ok_and(|r| r.status() == 200)
    });
}

/// The tables of a lake layer, by name.
pub fn layer_tables(lake: &Path, layer: &str) -> BTreeMap<String, Vec<RecordBatch>> {
    let mut tables = BTreeMap::new();
    for entry in std::fs::read_dir(lake.join(layer)).unwrap() {
        let dir = entry.unwrap().path();
        let batches: Vec<RecordBatch> = parquet_files(&dir)
            .iter()
            .flat_map(|f| read_parquet(f))
            .collect();
        tables.insert(
            dir.file_name().unwrap().to_string_lossy().into_owned(),
            batches,
        );
    }
    tables
}

/// One cell as text that both sides agree on: floats by their exact value, dates as
/// `YYYY-MM-DD`, timestamps as epoch milliseconds (what an 18.x server stores), null as NULL.
pub fn parquet_cell(array: &dyn Array, row: usize) -> String {
    if array.is_null(row) {
        return "NULL".into();
    }
    macro_rules! num {
        ($t:ty) => {
            array.as_primitive::<$t>().value(row).to_string()
        };
    }
    match array.data_type() {
        DataType::Int8 => num!(Int8Type),
        DataType::Int16 => num!(Int16Type),
        DataType::Int32 => num!(Int32Type),
        DataType::Int64 => num!(Int64Type),
        DataType::UInt8 => num!(UInt8Type),
        DataType::UInt16 => num!(UInt16Type),
        DataType::UInt32 => num!(UInt32Type),
        DataType::UInt64 => num!(UInt64Type),
        DataType::Float32 => format!(
            "{:?}",
            array.as_primitive::<Float32Type>().value(row) as f64
        ),
        DataType::Float64 => format!("{:?}", array.as_primitive::<Float64Type>().value(row)),
        DataType::Boolean => (array.as_boolean().value(row) as u8).to_string(),
        DataType::Utf8 => array.as_string::<i32>().value(row).to_string(),
        DataType::Date32 => {
            let days = array.as_primitive::<Date32Type>().value(row);
            (chrono::NaiveDate::from_ymd_opt(1970, 1, 1).unwrap()
                + chrono::Duration::days(days as i64))
            .to_string()
        }
        DataType::Timestamp(TimeUnit::Millisecond, _) => {
            num!(TimestampMillisecondType)
        }
        other => panic!("no test formatting for {other}"),
    }
}

/// Rows of the lake table, sorted, as text.
pub fn lake_rows(batches: &[RecordBatch]) -> Vec<Vec<String>> {
    let mut rows = Vec::new();
    for batch in batches {
        for row in 0..batch.num_rows() {
            rows.push(
                batch
                    .columns()
                    .iter()
                    .map(|c| parquet_cell(c.as_ref(), row))
                    .collect(),
            );
        }
    }
    rows.sort();
    rows
}

/// Every row of every table the stages write: silver, gold, and the stages' dead letters.
pub fn derived(lake: &Path) -> BTreeMap<String, Vec<Vec<String>>> {
    let mut tables = BTreeMap::new();
    for layer in ["silver", "gold"] {
        for (table, batches) in layer_tables(lake, layer) {
            tables.insert(format!("{layer}/{table}"), lake_rows(&batches));
        }
    }
    for (topic, batches) in layer_tables(lake, "_rejects") {
        let mut rows = lake_rows(&batches);
        // Columns: topic, stage, plugin, reason, origin, offset, raw.
        rows.retain(|row| row[1] != "decode");
        tables.insert(format!("_rejects/{topic}"), rows);
    }
    tables
}

pub fn assert_same(
    left: &BTreeMap<String, Vec<Vec<String>>>,
    right: &BTreeMap<String, Vec<Vec<String>>>,
) {
    assert_eq!(
        left.keys().collect::<Vec<_>>(),
        right.keys().collect::<Vec<_>>(),
        "the same tables"
    );
    for (table, rows) in left {
        assert!(
            !rows.is_empty() || table.starts_with("_rejects"),
            "{table} is empty"
        );
        assert_eq!(rows.len(), right[table].len(), "{table}: row count");
        assert!(rows == &right[table], "{table}: rows differ");
    }
}

pub fn run(pipeline: &Path) -> String {
    assert_success(&sluice(
        &["run", "--quiet", pipeline.to_str().unwrap()],
        &[],
    ))
}

pub fn backfill(pipeline: &Path) -> String {
    assert_success(&sluice(
        &["backfill", "--quiet", pipeline.to_str().unwrap()],
        &[],
    ))
}
