//! Kafka in, end to end against a real broker (`tests/services/kafka/kafka.sh`): exactly-once
//! into bronze, across a SIGKILL, a consumer-group handover and a broker outage; undecodable
//! messages in the dead-letter topic with headers.
//!
//! Each test starts a broker of its own (its own name, port and data) and the tests take turns,
//! so their topics never mix and two JVMs never compete for the 2 cores.
mod common;

use common::{
    Host, assert_success, int64_column, read_layer, repo_root, spawn, string_column, wait_for,
};
use rdkafka::Message;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Headers;
use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::time::{Duration, Instant};

static ONE_BROKER_AT_A_TIME: Mutex<()> = Mutex::new(());

struct Broker(common::Service);

impl std::ops::Deref for Broker {
    type Target = common::Service;
    fn deref(&self) -> &common::Service {
        &self.0
    }
}

impl Broker {
    fn start(name: &str, port: u16) -> Broker {
        Broker(common::Service::start(
            "tests/services/kafka/kafka.sh",
            name,
            port,
        ))
    }

    fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    fn generate(&self, events: u64, seed: u64, extra: &[&str]) -> u64 {
        let to = format!("kafka://{}", self.address());
        let events = events.to_string();
        let seed = seed.to_string();
        let mut args = vec![
            "gen", "--events", &events, "--seed", &seed, "--users", "300", "--to", &to,
        ];
        args.extend_from_slice(extra);
        let stdout = assert_success(&common::sluice(&args, &[]));
        stdout
            .lines()
            .find_map(|l| {
                l.split_once(" events in ")
                    .map(|(n, _)| n.trim().parse().unwrap())
            })
            .unwrap_or_else(|| panic!("no total in {stdout}"))
    }
}

/// How long a test's host waits, caught up and with nothing arriving, before it exits.
const IDLE_EXIT_MS: u64 = 4000;

fn pipeline(
    dir: &Path,
    broker: &Broker,
    instance: &str,
    idle_exit_ms: u64,
    source_extra: &str,
) -> PathBuf {
    let path = dir.join(format!("{instance}.yaml"));
    std::fs::write(
        &path,
        format!(
            "name: streamify\ninstance: {instance}\nsource:\n  kafka:\n    brokers: {}\n    topics: [listen_events, page_view_events, auth_events, status_change_events]\n    group: sluice-test\n    exit_when_idle_ms: {idle_exit_ms}\n{source_extra}batch_rows: 4096\nlake:\n  uri: file://{}/lake\n  commit_rows: 40000\n  commit_interval_ms: 1000\nbronze:\n  partition_by: [date]\n",
            broker.address(),
            dir.display()
        ),
    )
    .unwrap();
    path
}

fn run(pipeline: &Path) -> String {
    assert_success(&common::sluice(
        &["run", "--quiet", pipeline.to_str().unwrap()],
        &[],
    ))
}

fn commits(lake: &Path, instance: &str) -> usize {
    std::fs::read_dir(lake.join("_commits/streamify").join(instance)).map_or(0, |d| d.count())
}

/// Asserts that bronze holds each produced message exactly once: `expected` rows, no
/// (partition, offset) twice, and every partition's offsets contiguous from 0.
fn assert_exactly_once(lake: &Path, expected: u64) {
    let bronze = read_layer(lake, "bronze");
    let origins = string_column(&bronze, "_origin");
    let offsets = int64_column(&bronze, "_offset");
    let mut seen = HashSet::new();
    let mut per_partition: BTreeMap<&str, Vec<i64>> = BTreeMap::new();
    for (origin, offset) in origins.iter().zip(&offsets) {
        assert!(
            seen.insert((origin.clone(), *offset)),
            "{origin}@{offset} is in bronze twice"
        );
        per_partition.entry(origin).or_default().push(*offset);
    }
    for (origin, offsets) in &mut per_partition {
        offsets.sort_unstable();
        let gaps = offsets
            .iter()
            .enumerate()
            .filter(|(i, o)| *i as i64 != **o)
            .count();
        assert_eq!(gaps, 0, "{origin}: offsets are not 0..{}", offsets.len());
    }
    assert_eq!(origins.len() as u64, expected, "bronze rows");
    assert_eq!(
        per_partition.len(),
        16,
        "4 topics × 4 partitions: {:?}",
        per_partition.keys()
    );
}

#[test]
fn a_million_events_land_in_bronze_exactly_once() {
    let _turn = ONE_BROKER_AT_A_TIME
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    let broker = Broker::start("kafka-million", 19110);
    let produced = broker.generate(1_000_000, 1, &[]);
    assert_eq!(produced, 1_000_000);
    let dir = tempfile::tempdir().unwrap();
    run(&pipeline(dir.path(), &broker, "main", IDLE_EXIT_MS, ""));
    assert_exactly_once(&dir.path().join("lake"), produced);
}

#[test]
fn sigkill_mid_stream_and_restart_is_still_exactly_once() {
    let _turn = ONE_BROKER_AT_A_TIME
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    let broker = Broker::start("kafka-crash", 19120);
    let produced = broker.generate(300_000, 2, &[]);
    let dir = tempfile::tempdir().unwrap();
    let lake = dir.path().join("lake");
    let p = pipeline(dir.path(), &broker, "main", IDLE_EXIT_MS, "");
    let mut child = spawn(&p);
    wait_for("two commits", || {
        assert!(child.try_wait().unwrap().is_none(), "finished too early");
        commits(&lake, "main") >= 2
    });
    child.kill_now();
    run(&p);
    assert_exactly_once(&lake, produced);
}

#[test]
fn two_members_split_the_partitions_and_hand_over_on_stop() {
    let _turn = ONE_BROKER_AT_A_TIME
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    let broker = Broker::start("kafka-group", 19130);
    let mut produced = broker.generate(200_000, 3, &[]);
    let dir = tempfile::tempdir().unwrap();
    let lake = dir.path().join("lake");
    // Neither member may leave on its own while the other starts, joins or takes over.
    let member = |name| spawn(&pipeline(dir.path(), &broker, name, 15_000, ""));
    let files_of = |name: &str| {
        let prefix = format!("part-{name}-");
        common::parquet_files(&lake.join("bronze"))
            .iter()
            .filter(|p| {
                p.file_name()
                    .unwrap()
                    .to_string_lossy()
                    .starts_with(&prefix)
            })
            .count()
    };
    let mut first = member("a");
    wait_for("a's first commit", || commits(&lake, "a") >= 1);
    let mut second = member("b");
    wait_for("b's share of the partitions", || {
        second.log().contains("lanes assigned")
    });
    // `a` may have read all of the first events by now, however fast it is: these land on
    // every partition, so each member has some of them to read.
    produced += broker.generate(100_000, 6, &[]);
    wait_for("both members to write", || {
        files_of("a") > 0 && files_of("b") > 0
    });
    // A graceful stop: `a` commits and gives its partitions back; what arrives on them now
    // only `b` can read.
    let status = first.terminate();
    assert!(status.success(), "a stopped with {status}");
    produced += broker.generate(100_000, 7, &[]);
    let status = second.wait_exit();
    let log = second.log();
    assert!(status.success(), "b: {status}\n{log}");
    assert_exactly_once(&lake, produced);
    assert!(
        log.matches("lanes assigned").count() >= 2,
        "b never took over a's partitions: {log}"
    );
}

#[test]
fn the_host_waits_out_a_broker_outage_and_loses_nothing() {
    let _turn = ONE_BROKER_AT_A_TIME
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    let broker = Broker::start("kafka-outage", 19140);
    let mut produced = broker.generate(100_000, 4, &[]);
    let dir = tempfile::tempdir().unwrap();
    let lake = dir.path().join("lake");
    let p = pipeline(dir.path(), &broker, "main", 30_000, "");
    let mut child = spawn(&p);
    wait_for("a commit", || commits(&lake, "main") >= 1);
    broker.script("stop");
    std::thread::sleep(Duration::from_secs(8));
    assert!(
        child.try_wait().unwrap().is_none(),
        "the host gave up while the broker was down"
    );
    broker.script("start");
    produced += broker.generate(100_000, 5, &[]);
    let status = child.wait_exit();
    assert!(status.success(), "{status}");
    assert_exactly_once(&lake, produced);
}

fn dead_letters(
    broker: &Broker,
    topic: &str,
    expected: usize,
) -> Vec<(String, BTreeMap<String, String>)> {
    let consumer: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", broker.address())
        .set("group.id", "dlq-reader")
        .set("auto.offset.reset", "earliest")
        .create()
        .unwrap();
    consumer.subscribe(&[topic]).unwrap();
    let mut letters = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while letters.len() < expected && Instant::now() < deadline {
        let Some(message) = consumer.poll(Duration::from_millis(200)) else {
            continue;
        };
        let message = message.unwrap();
        let mut headers = BTreeMap::new();
        if let Some(h) = message.headers() {
            for header in h.iter() {
                headers.insert(
                    header.key.to_string(),
                    String::from_utf8_lossy(header.value.unwrap_or_default()).into_owned(),
                );
            }
        }
        let payload = message.payload().unwrap_or_default();
        letters.push((String::from_utf8_lossy(payload).into_owned(), headers));
    }
    letters
}

fn produce_raw(broker: &Broker, topic: &str, payloads: &[&[u8]]) {
    let producer = sluice::source::kafka::producer(&broker.address(), &BTreeMap::new()).unwrap();
    for payload in payloads {
        sluice::source::kafka::send(&producer, topic, Some(b"1"), payload, None).unwrap();
    }
    sluice::source::kafka::flush(&producer).unwrap();
}

#[test]
fn undecodable_json_and_avro_go_to_the_dead_letter_topic_with_headers() {
    let _turn = ONE_BROKER_AT_A_TIME
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    let dlq = "    dead_letter_topic: eventsim-dlq\n";

    // JSON: two malformed messages among generated ones.
    let broker = Broker::start("kafka-dlq-json", 19150);
    let produced = broker.generate(20_000, 6, &[]);
    produce_raw(
        &broker,
        "listen_events",
        &[b"{\"ts\": 17", b"not json at all"],
    );
    let dir = tempfile::tempdir().unwrap();
    run(&pipeline(dir.path(), &broker, "main", IDLE_EXIT_MS, dlq));
    let bronze = read_layer(&dir.path().join("lake"), "bronze");
    assert_eq!(common::rows(&bronze) as u64, produced);
    let letters = dead_letters(&broker, "eventsim-dlq", 2);
    assert_eq!(letters.len(), 2, "{letters:?}");
    let payloads: HashSet<&str> = letters.iter().map(|(p, _)| p.as_str()).collect();
    assert_eq!(payloads, HashSet::from(["{\"ts\": 17", "not json at all"]));
    for (_, headers) in &letters {
        assert_eq!(headers["sluice.topic"], "listen_events");
        assert!(
            headers["sluice.partition"].parse::<i32>().is_ok(),
            "{headers:?}"
        );
        assert!(
            headers["sluice.offset"].parse::<i64>().is_ok(),
            "{headers:?}"
        );
        assert!(!headers["sluice.error"].is_empty(), "{headers:?}");
    }
    // Also in the lake's dead-letter output, with the same reason.
    assert_eq!(
        common::rows(&read_layer(&dir.path().join("lake"), "_rejects")),
        2
    );
    drop(broker);

    // Avro with schemas from the pipeline file: one truncated datum, one JSON message.
    let broker = Broker::start("kafka-dlq-avro", 19160);
    let produced = broker.generate(20_000, 7, &["--format", "avro"]);
    produce_raw(&broker, "auth_events", &[b"\x02\x04", b"{\"ts\": 1}"]);
    let dir = tempfile::tempdir().unwrap();
    let schemas: String = [
        "listen_events",
        "page_view_events",
        "auth_events",
        "status_change_events",
    ]
    .iter()
    .map(|topic| {
        let arrow = sluice::decode::schema::eventsim(topic).unwrap();
        let text = sluice::decode::avro::avro_schema(topic, &arrow);
        format!("      {topic}: '{text}'\n")
    })
    .collect();
    let avro = format!("    format: avro\n    avro_schemas:\n{schemas}{dlq}");
    run(&pipeline(dir.path(), &broker, "main", IDLE_EXIT_MS, &avro));
    let bronze = read_layer(&dir.path().join("lake"), "bronze");
    assert_eq!(
        common::rows(&bronze) as u64,
        produced,
        "every valid datum decoded"
    );
    let letters = dead_letters(&broker, "eventsim-dlq", 2);
    assert_eq!(letters.len(), 2, "{letters:?}");
    for (_, headers) in &letters {
        assert_eq!(headers["sluice.topic"], "auth_events");
        assert!(headers["sluice.error"].contains("Avro"), "{headers:?}");
    }
}

#[test]
fn streamify_yaml_runs_against_kafka_until_sigterm() {
    let _turn = ONE_BROKER_AT_A_TIME
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    let broker = Broker::start("kafka-streamify", 19170);
    let clickhouse = common::ClickHouseServer::start("ch-streamify", 18470);
    let produced = broker.generate(60_000, 8, &[]);
    let dir = tempfile::tempdir().unwrap();
    let lake = dir.path().join("lake");
    let mut command = Command::new(env!("CARGO_BIN_EXE_sluice"));
    command
        .args(["run", "--quiet", "pipelines/streamify.yaml"])
        .current_dir(repo_root())
        .env("SLUICE_KAFKA", broker.address())
        .env("SLUICE_LAKE", format!("file://{}", lake.display()))
        .env("SLUICE_PLUGIN_DIR", common::plugin_dir())
        .env("SLUICE_CLICKHOUSE", clickhouse.url())
        .env("CLICKHOUSE_USER", "sluice")
        .env("CLICKHOUSE_PASSWORD", common::PASSWORD)
        .env("SLUICE_ADMIN", "127.0.0.1:18560");
    let mut child = Host::start(command, &dir.path().join("host.log"));
    common::wait_ready("http://127.0.0.1:18560", &mut child);
    wait_for("every event in bronze", || {
        assert!(
            child.try_wait().unwrap().is_none(),
            "a stream does not end by itself"
        );
        lake.join("bronze").is_dir()
            && common::rows(&read_layer(&lake, "bronze")) as u64 == produced
    });
    let status = child.terminate();
    assert!(status.success(), "{status}");
    assert_exactly_once(&lake, produced);
    assert!(common::rows(&read_layer(&lake, "silver")) as u64 > produced * 9 / 10);
    let sessions = common::rows(&read_layer(&lake, "gold"));
    assert!(sessions > 0, "closed sessions reach gold");
    // Every committed gold row is in ClickHouse, once.
    assert_eq!(
        clickhouse.count("SELECT count() FROM streamify.sessions FINAL"),
        sessions as u64
    );
    assert_eq!(
        clickhouse.count("SELECT count() FROM streamify.sessions"),
        sessions as u64
    );
}

/// The sum of the group's committed offsets over the 16 partitions of the four topics.
fn committed_total(broker: &Broker, group: &str) -> i64 {
    let consumer: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", broker.address())
        .set("group.id", group)
        .create()
        .unwrap();
    let mut partitions = rdkafka::TopicPartitionList::new();
    for topic in [
        "listen_events",
        "page_view_events",
        "auth_events",
        "status_change_events",
    ] {
        for partition in 0..4 {
            partitions.add_partition(topic, partition);
        }
    }
    let committed = consumer
        .committed_offsets(partitions, Duration::from_secs(10))
        .unwrap();
    committed
        .elements()
        .iter()
        .filter_map(|e| e.offset().to_raw().filter(|o| *o >= 0))
        .sum()
}

#[test]
fn group_offsets_wait_until_clickhouse_has_the_rows() {
    let _turn = ONE_BROKER_AT_A_TIME
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    let broker = Broker::start("kafka-offsets", 19180);
    let clickhouse = common::ClickHouseServer::start("ch-offsets", 18480);
    let produced = broker.generate(200_000, 9, &[]);
    let dir = tempfile::tempdir().unwrap();
    let lake = dir.path().join("lake");
    let p = pipeline(dir.path(), &broker, "main", IDLE_EXIT_MS, "");
    // Bronze into ClickHouse: every epoch has rows to load.
    let mut yaml = std::fs::read_to_string(&p).unwrap();
    yaml.push_str(&format!(
        "clickhouse:\n  url: {}\n  user: sluice\n  password: {}\n  database: offsets\n  layer: bronze\n  max_backoff_ms: 300\n",
        clickhouse.url(),
        common::PASSWORD
    ));
    std::fs::write(&p, yaml).unwrap();
    let loaded = |c: &common::ClickHouseServer| {
        c.client()
            .query("SELECT count() FROM offsets._sluice_loads")
            .ok()
            .and_then(|t| t.trim().parse::<u64>().ok())
            .unwrap_or(0)
    };

    let mut child = spawn(&p);
    wait_for("a load into ClickHouse", || loaded(&clickhouse) >= 1);
    clickhouse.script("kill");
    std::thread::sleep(Duration::from_secs(2));
    let held = committed_total(&broker, "sluice-test");
    std::thread::sleep(Duration::from_secs(4));
    assert_eq!(
        committed_total(&broker, "sluice-test"),
        held,
        "offsets were committed while ClickHouse was down"
    );
    // The lake's newest commit is durable but waits for ClickHouse: its offsets must not be
    // in the group yet.
    let newest = std::fs::read_dir(lake.join("_commits/streamify/main"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .max()
        .unwrap();
    let record: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&newest).unwrap()).unwrap();
    let in_lake: i64 = record["lanes"]
        .as_object()
        .unwrap()
        .values()
        // A lane the consumer group assigned before it read a record has no position yet.
        .filter_map(|lane| lane["position"].as_object())
        .flat_map(|position| position.values())
        .map(|offset| offset.as_i64().unwrap())
        .sum();
    assert!(
        held < in_lake,
        "group offsets ({held}) include the lake commit ClickHouse lacks ({in_lake})"
    );
    assert!(child.try_wait().unwrap().is_none(), "the host gave up");
    clickhouse.script("start");
    let status = child.wait_exit();
    assert!(status.success(), "{status}");

    assert_exactly_once(&lake, produced);
    assert_eq!(committed_total(&broker, "sluice-test") as u64, produced);
    let in_clickhouse: u64 = [
        "listen_events",
        "page_view_events",
        "auth_events",
        "status_change_events",
    ]
    .iter()
    .map(|t| clickhouse.count(&format!("SELECT count() FROM offsets.{t} FINAL")))
    .sum();
    assert_eq!(in_clickhouse, produced);
}

/// One number from Prometheus's HTTP API: the value of an instant query (None: no series).
fn prometheus_value(prometheus: &common::Service, query: &str) -> Option<f64> {
    let url = format!(
        "http://127.0.0.1:{}/api/v1/query?query={}",
        prometheus.port,
        percent_encoding::utf8_percent_encode(query, percent_encoding::NON_ALPHANUMERIC)
    );
    let answer = common::get_json(&url);
    assert_eq!(answer["status"], "success", "{query}: {answer}");
    let value = answer["data"]["result"].get(0)?["value"][1]
        .as_str()?
        .to_string();
    Some(value.parse().unwrap())
}

/// A real Prometheus (Debian's package) scrapes a host consuming Kafka; what it stored —
/// read back through its HTTP API — matches what the pipeline did: records consumed, rows per
/// layer in the lake, dead letters, consumer lag, the plugin version. Its alert rules load.
#[test]
fn prometheus_scrapes_what_the_pipeline_did() {
    let _turn = ONE_BROKER_AT_A_TIME
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    let broker = Broker::start("kafka-metrics", 19185);
    let admin = "127.0.0.1:18540";
    let prometheus = common::Service::start_with(
        "tests/services/prometheus/prometheus.sh",
        "prometheus-metrics",
        18600,
        &[admin],
    );
    for check in [
        vec!["check", "config", "dashboards/prometheus.yml"],
        vec!["check", "rules", "dashboards/alerts.yml"],
    ] {
        let status = Command::new("promtool")
            .args(&check)
            .current_dir(repo_root())
            .status()
            .unwrap();
        assert!(status.success(), "promtool {check:?}");
    }
    let produced = broker.generate(20_000, 11, &["--partitions", "2"]);
    let dir = tempfile::tempdir().unwrap();
    let lake = dir.path().join("lake");
    let pipeline = dir.path().join("metrics.yaml");
    std::fs::write(
        &pipeline,
        format!(
            "name: metrics\nsource:\n  kafka:\n    brokers: {}\n    topics: [listen_events, page_view_events, auth_events, status_change_events]\n    group: sluice-metrics\nbatch_rows: 2048\nlake:\n  uri: file://{}\n  commit_interval_ms: 1000\nbronze: {{}}\nstages:\n  - name: clean\n    plugin: {}/clean.wasm\n    layer: silver\nadmin:\n  listen: {admin}\n",
            broker.address(),
            lake.display(),
            common::plugin_dir()
        ),
    )
    .unwrap();
    let mut host = common::spawn_logged(&pipeline, &dir.path().join("host.log"), &[]);
    let lake_rows = |layer: &str| {
        if lake.join(layer).is_dir() {
            common::rows(&read_layer(&lake, layer)) as f64
        } else {
            0.0
        }
    };
    wait_for("every event committed to bronze", || {
        assert!(host.try_wait().unwrap().is_none(), "the host ended");
        lake_rows("bronze") == produced as f64
    });
    let metric = |query: &str| prometheus_value(&prometheus, query);
    let records = r#"sum(sluice_source_records_total{pipeline="metrics"})"#;
    wait_for("Prometheus to scrape the final figures", || {
        metric(records) == Some(produced as f64)
            && metric(r#"max(sluice_kafka_consumer_lag{pipeline="metrics"})"#) == Some(0.0)
            && metric(r#"sum(sluice_lake_rows_total{layer="silver"})"#) == Some(lake_rows("silver"))
    });
    assert_eq!(metric(r#"up{job="sluice"}"#), Some(1.0));
    assert_eq!(
        metric(r#"sum(sluice_lake_rows_total{pipeline="metrics",layer="bronze"})"#),
        Some(produced as f64)
    );
    assert_eq!(
        metric(r#"sum(sluice_stage_records_rejected_total{pipeline="metrics"})"#),
        Some(lake_rows("_rejects"))
    );
    assert_eq!(
        metric(r#"sum(sluice_stage_records_in_total{pipeline="metrics",stage="clean"})"#),
        Some(produced as f64),
        "every decoded record went through clean"
    );
    assert_eq!(
        metric(r#"count(sluice_kafka_consumer_lag{pipeline="metrics"})"#),
        Some(8.0),
        "four topics of two partitions"
    );
    assert_eq!(
        metric(
            r#"sluice_plugin_info{pipeline="metrics",stage="clean",plugin="clean",version="0.1.0"}"#
        ),
        Some(1.0)
    );
    assert_eq!(metric("sum(sluice_build_info)"), Some(1.0));
    assert!(metric(r#"sum(sluice_commits_total{pipeline="metrics"})"#).unwrap() >= 1.0);
    assert!(
        metric(r#"sum(sluice_stage_batch_seconds_count{pipeline="metrics",stage="clean"})"#)
            .unwrap()
            >= (produced / 2048) as f64
    );
    let rules = common::get_json(&format!(
        "http://127.0.0.1:{}/api/v1/rules",
        prometheus.port
    ));
    let loaded: Vec<(String, String)> = rules["data"]["groups"][0]["rules"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["name"].as_str().unwrap().to_string(),
                r["health"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    assert_eq!(loaded.len(), 6, "{loaded:?}");
    assert!(
        loaded.iter().all(|(_, health)| health != "err"),
        "{loaded:?}"
    );
    assert!(host.terminate().success());
}
