//! The lake on real HDFS (`tests/services/hdfs/`, Hadoop's MiniDFSCluster), end to end: every
//! layer, read back through hdfs-native, is byte for byte the lake of the same run on a local
//! folder; a NameNode stopped mid-run and started again costs nothing and doubles nothing;
//! pyarrow reads the hive partitions copied out of HDFS.
//!
//! Each test starts a cluster of its own (its own name, port and data).
mod common;

use common::{assert_success, interop_reader, wait_for};
use sluice::sink::lake::{LakeUri, Storage};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

struct Cluster(common::Service);

impl Cluster {
    fn start(name: &str, port: u16) -> Cluster {
        Cluster(common::Service::start(
            "tests/services/hdfs/hdfs.sh",
            name,
            port,
        ))
    }

    fn script(&self, command: &str) {
        self.0.script(command);
    }

    fn uri(&self, root: &str) -> String {
        format!("hdfs://127.0.0.1:{}/{root}", self.0.port)
    }
}

/// The chain, committing on record counts only: a commit for open files' size
/// (`max_buffer_mb`) comes when the sink thread is behind, which varies from run to run, and
/// these tests compare two lakes path for path.
fn pipeline(dir: &Path, file: &str, lake: &str, events: u64) -> PathBuf {
    let path = common::chain_pipeline(dir, file, "chain", lake, events, "");
    let text = std::fs::read_to_string(&path).unwrap().replace(
        "  commit_rows: 25000\n",
        "  commit_rows: 25000\n  max_buffer_mb: 4096\n",
    );
    std::fs::write(&path, text).unwrap();
    path
}

fn run(pipeline: &Path) -> String {
    assert_success(&common::sluice(
        &["run", "--quiet", pipeline.to_str().unwrap()],
        &[],
    ))
}

/// The same pipeline into `DIR/local-lake`, the reference an HDFS run must equal.
fn run_on_a_local_folder(dir: &Path, events: u64) -> PathBuf {
    let root = dir.join("local-lake");
    run(&pipeline(
        dir,
        "local",
        &format!("file://{}", root.display()),
        events,
    ));
    root
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn storage(uri: &str) -> Storage {
    LakeUri::parse(uri).unwrap().open().unwrap()
}

/// Every committed file of a lake on HDFS, read through hdfs-native: path → bytes. Staging
/// leftovers (`_tmp/`) are not part of the lake.
fn hdfs_lake(uri: &str) -> BTreeMap<String, Vec<u8>> {
    let store = storage(uri);
    let io = runtime();
    io.block_on(async {
        let mut files = BTreeMap::new();
        for path in store.list("").await.unwrap() {
            if !path.starts_with("_tmp/") {
                files.insert(path.clone(), store.get(&path).await.unwrap().to_vec());
            }
        }
        files
    })
}

/// The same for a lake in a local folder.
fn local_lake(root: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut files = BTreeMap::new();
    let mut pending = vec![root.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let relative = path
                .strip_prefix(root)
                .unwrap()
                .to_string_lossy()
                .into_owned();
            if relative.starts_with("_tmp") {
                continue;
            }
            if path.is_dir() {
                pending.push(path);
            } else {
                files.insert(relative, std::fs::read(&path).unwrap());
            }
        }
    }
    files
}

/// Rows per `layer/table` of a lake given as path → bytes.
fn rows_per_table(files: &BTreeMap<String, Vec<u8>>) -> BTreeMap<String, usize> {
    let mut rows = BTreeMap::new();
    for (path, bytes) in files {
        if !path.ends_with(".parquet") {
            continue;
        }
        let table: Vec<&str> = path.split('/').take(2).collect();
        let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(
            bytes::Bytes::from(bytes.clone()),
        )
        .unwrap()
        .build()
        .unwrap();
        let n: usize = reader.map(|b| b.unwrap().num_rows()).sum();
        *rows.entry(table.join("/")).or_default() += n;
    }
    rows
}

fn assert_same_lake(hdfs: &BTreeMap<String, Vec<u8>>, local: &BTreeMap<String, Vec<u8>>) {
    let hdfs_paths: Vec<&String> = hdfs.keys().collect();
    let local_paths: Vec<&String> = local.keys().collect();
    assert_eq!(
        hdfs_paths, local_paths,
        "the two lakes hold different files"
    );
    for (path, bytes) in hdfs {
        assert!(
            bytes == &local[path],
            "{path} differs between HDFS and the local lake"
        );
    }
}

#[test]
fn the_quickstart_chain_on_hdfs_equals_the_same_run_on_a_local_folder() {
    let cluster = Cluster::start("hdfs-chain", 19830);
    let dir = tempfile::tempdir().unwrap();
    let events = 150_000;
    let local_root = run_on_a_local_folder(dir.path(), events);
    let uri = cluster.uri("lakes/chain");
    let stdout = run(&pipeline(dir.path(), "hdfs", &uri, events));
    assert!(stdout.contains("150000 events"), "{stdout}");

    let hdfs = hdfs_lake(&uri);
    let local = local_lake(&local_root);
    assert_same_lake(&hdfs, &local);
    let rows = rows_per_table(&hdfs);
    let layer = |name: &str| -> usize {
        rows.iter()
            .filter(|(t, _)| t.starts_with(&format!("{name}/")))
            .map(|(_, n)| n)
            .sum()
    };
    assert_eq!(layer("bronze"), events as usize);
    assert!(layer("silver") > events as usize * 9 / 10);
    assert!(rows.contains_key("gold/sessions") && rows.contains_key("gold/top_songs"));
    assert!(hdfs.keys().any(|p| p.starts_with("_commits/chain/main/")));
    assert!(hdfs.keys().any(|p| p.starts_with("_state/chain/main/")));
    assert!(hdfs.keys().any(|p| p.starts_with("_rejects/")));

    // An independent reader: pyarrow over the hive partitions copied out of HDFS.
    let copy = dir.path().join("copied-out");
    for (path, bytes) in &hdfs {
        let target = copy.join(path);
        std::fs::create_dir_all(target.parent().unwrap()).unwrap();
        std::fs::write(target, bytes).unwrap();
    }
    let counted: BTreeMap<String, usize> = interop_reader("count_rows.py", &[&copy]);
    let expected: BTreeMap<String, usize> = rows
        .iter()
        .filter(|(t, _)| {
            ["bronze/", "silver/", "gold/"]
                .iter()
                .any(|l| t.starts_with(l))
        })
        .map(|(t, n)| (t.clone(), *n))
        .collect();
    assert_eq!(counted, expected);

    // `sluice query` reads the HDFS lake through the same client: its counts per table too.
    let listed = assert_success(&common::sluice(
        &[
            "query",
            "--lake",
            &uri,
            "--format",
            "csv",
            "SELECT 'silver/page_view_events', count(*) FROM silver.page_view_events \
             UNION ALL SELECT 'gold/sessions', count(*) FROM gold.sessions",
        ],
        &[],
    ));
    for line in listed.lines().skip(1) {
        let (table, count) = line.split_once(',').unwrap();
        assert_eq!(
            count.parse::<usize>().unwrap(),
            rows[table],
            "{table} via sluice query"
        );
    }

    // The same run with silver and gold as Delta tables on HDFS: every table, read through its
    // log, has the rows of the Parquet run.
    let delta_uri = cluster.uri("lakes/delta");
    let delta = pipeline(dir.path(), "delta", &delta_uri, events);
    let text = std::fs::read_to_string(&delta).unwrap().replace(
        "  max_buffer_mb: 4096\n",
        "  max_buffer_mb: 4096\n  formats: {silver: delta, gold: delta}\n",
    );
    std::fs::write(&delta, text).unwrap();
    run(&delta);
    let delta_lake = hdfs_lake(&delta_uri);
    assert!(
        delta_lake
            .keys()
            .any(|p| p.starts_with("gold/sessions/_delta_log/"))
    );
    let tables: Vec<&String> = rows
        .keys()
        .filter(|t| t.starts_with("silver/") || t.starts_with("gold/"))
        .collect();
    let sql = tables
        .iter()
        .map(|t| format!("SELECT '{t}', count(*) FROM {}", t.replace('/', ".")))
        .collect::<Vec<_>>()
        .join(" UNION ALL ");
    let counted = assert_success(&common::sluice(
        &["query", "--lake", &delta_uri, "--format", "csv", &sql],
        &[],
    ));
    assert_eq!(counted.lines().count(), tables.len() + 1, "{counted}");
    for line in counted.lines().skip(1) {
        let (table, count) = line.split_once(',').unwrap();
        assert_eq!(
            count.parse::<usize>().unwrap(),
            rows[table],
            "{table} as a Delta table"
        );
    }
}

#[test]
fn a_namenode_stopped_mid_run_and_started_again_loses_and_doubles_nothing() {
    let cluster = Cluster::start("hdfs-outage", 19840);
    let dir = tempfile::tempdir().unwrap();
    let events = 600_000;
    let local_root = run_on_a_local_folder(dir.path(), events);

    let uri = cluster.uri("lakes/outage");
    let log = dir.path().join("host.log");
    let mut host = common::spawn_logged(&pipeline(dir.path(), "hdfs", &uri, events), &log, &[]);
    let store = storage(&uri);
    let io = runtime();
    wait_for("the first commit on HDFS", || {
        io.block_on(store.list("_commits/chain/main"))
            .is_ok_and(|records| !records.is_empty())
    });
    cluster.script("namenode-stop");
    std::thread::sleep(Duration::from_secs(6));
    let log_text = || std::fs::read_to_string(&log).unwrap();
    assert!(
        host.try_wait().unwrap().is_none(),
        "the host gave up:\n{}",
        log_text()
    );
    cluster.script("namenode-start");
    let status = host.wait_exit();
    assert!(status.success(), "{status}\n{}", log_text());
    assert!(
        log_text().contains("failed; retrying in"),
        "the outage went unnoticed: {}",
        log_text()
    );

    assert_same_lake(&hdfs_lake(&uri), &local_lake(&local_root));
}

#[test]
fn lake_uris_name_what_they_accept() {
    assert_eq!(
        LakeUri::parse("hdfs://127.0.0.1:9000/lakes/a/").unwrap(),
        LakeUri::Hdfs {
            namenode: "hdfs://127.0.0.1:9000".into(),
            root: "lakes/a".into()
        }
    );
    for bad in [
        "hdfs://127.0.0.1:9000",
        "hdfs://127.0.0.1:9000/",
        "s3://b/k",
    ] {
        let error = LakeUri::parse(bad).unwrap_err().to_string();
        assert!(error.contains("hdfs://HOST:PORT/path"), "{error}");
    }
}
