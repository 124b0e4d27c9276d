//! The plugin author's kit end to end: the tutorial in docs/plugins.md run command for command
//! (scaffold → cargo test → build → plugin test → inspect → pipeline → hot-swap), the stateful
//! scaffold, and the errors an author meets (a failing plugin, an unexpected schema, a foreign
//! import).
mod common;

use common::{plugin_dir, repo_root, sluice};
use std::path::Path;
use std::process::Command;

/// The admin port the tutorial uses, and the one this test gives it instead.
const TUTORIAL_ADMIN: &str = "127.0.0.1:9464";
const TEST_ADMIN: &str = "127.0.0.1:18570";

/// The `sh` blocks of the tutorial section, in order.
fn tutorial_commands() -> String {
    let doc = std::fs::read_to_string(repo_root().join("docs/plugins.md")).unwrap();
    let start = doc
        .find("\n## Tutorial")
        .expect("docs/plugins.md has a Tutorial section");
    let section = &doc[start + 1..];
    let section = &section[..section[1..].find("\n## ").map_or(section.len(), |i| i + 1)];
    let mut script = String::new();
    let mut in_block = false;
    for line in section.lines() {
        match (in_block, line.trim_end()) {
            (false, "```sh") => in_block = true,
            (true, "```") => in_block = false,
            (true, line) => {
                script.push_str(line);
                script.push('\n');
            }
            _ => {}
        }
    }
    script
}

/// Runs a bash script in `dir` with the `sluice` under test first on PATH; returns stdout.
fn bash(dir: &Path, script: &str) -> String {
    let binary = Path::new(env!("CARGO_BIN_EXE_sluice"));
    let path = format!(
        "{}:{}",
        binary.parent().unwrap().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let output = Command::new("bash")
        .args(["-euo", "pipefail", "-c", script])
        .current_dir(dir)
        .env("PATH", path)
        // The generated crate finds the SDK of this checkout.
        .env("SLUICE_ROOT", repo_root())
        .output()
        .expect("running bash");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "script failed: {}\n--- script\n{script}\n--- stdout\n{stdout}\n--- stderr\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

#[test]
fn the_tutorial_runs_as_written() {
    let script = tutorial_commands();
    for step in [
        "sluice plugin new my-filter",
        "cargo test",
        "sluice plugin build",
        "sluice plugin test my_filter.wasm",
        "sluice plugin inspect my_filter.wasm",
        "sluice run pipeline.yaml",
        "version = \"0.2.0\"",
    ] {
        assert!(
            script.contains(step),
            "the tutorial lost `{step}`:\n{script}"
        );
    }
    let work = tempfile::tempdir().unwrap();
    let stdout = bash(work.path(), &script.replace(TUTORIAL_ADMIN, TEST_ADMIN));

    // What each step printed.
    for expected in [
        "created ./my-filter (stateless plugin",
        "test result: ok. 2 passed",
        "built ./my_filter.wasm",
        // plugin test: page views of visitors who are not logged in have no user.
        "plugin my-filter@0.1.0 on `page_view_events` (schema declared (EventSim `page_view_events`))",
        "missing_userId",
        // plugin test with the config file: page views that are not song plays have no artist.
        "missing_artist",
        // inspect
        "contract  sluice:plugin@0.1.0 (this host's)",
        "name      my-filter",
        "version   0.1.0",
        "inputs    userId",
        "ok        the sandbox grants every import",
        // the running pipeline reported the first version
        "\"version\":\"0.1.0\"",
    ] {
        assert!(
            stdout.contains(expected),
            "missing `{expected}` in:\n{stdout}"
        );
    }
    let rejects_line = stdout
        .lines()
        .find(|l| l.starts_with("rejects: "))
        .expect("a rejects count");
    assert_ne!(rejects_line, "rejects: 0 rows", "{stdout}");

    // The pipeline ran both versions: silver files of each, nothing lost at the swap.
    let crate_dir = work.path().join("my-filter");
    let log = std::fs::read_to_string(crate_dir.join("run.log")).unwrap();
    assert!(
        log.contains("pipeline tutorial: ") && log.contains("silver"),
        "the run printed its summary:\n{log}"
    );
    let silver = common::read_layer(&crate_dir.join("lake"), "silver");
    let rejected = common::read_layer(&crate_dir.join("lake"), "_rejects");
    let mut offsets = common::int64_column(&silver, "_offset");
    offsets.extend(common::int64_column(&rejected, "offset"));
    offsets.sort();
    let expected: Vec<i64> = (0..offsets.len() as i64).collect();
    assert_eq!(
        offsets, expected,
        "every generated event once, in silver or rejected"
    );
    let stamps: std::collections::BTreeSet<String> =
        common::parquet_files(&crate_dir.join("lake/silver"))
            .iter()
            .filter_map(|file| common::plugin_stamp(file))
            .map(|stamp| stamp.split(' ').next().unwrap_or_default().to_string())
            .collect();
    assert_eq!(
        stamps,
        ["my-filter@0.1.0", "my-filter@0.2.0"]
            .map(String::from)
            .into(),
        "silver files of both versions"
    );
}

#[test]
fn a_stateful_plugin_scaffolds_builds_and_closes_its_windows_at_the_end() {
    let work = tempfile::tempdir().unwrap();
    let stdout = bash(
        work.path(),
        "sluice plugin new user-windows --stateful
         cd user-windows
         cargo test
         sluice plugin build
         sluice gen --events 3000 --to data
         sluice plugin test user_windows.wasm --input data/listen_events.jsonl --batch-rows 500 --rows 2",
    );
    for expected in [
        "created ./user-windows (stateful plugin",
        "test result: ok. 2 passed",
        "built ./user_windows.wasm",
        "end of input (watermark +∞)",
        "window_start",
    ] {
        assert!(
            stdout.contains(expected),
            "missing `{expected}` in:\n{stdout}"
        );
    }
    let windows = stdout
        .lines()
        .find_map(|l| l.strip_prefix("windows: ")?.strip_suffix(" rows"))
        .and_then(|n| n.parse::<usize>().ok())
        .expect("a windows count");
    assert!(windows > 0, "{stdout}");
    let out = stdout
        .lines()
        .find_map(|l| l.strip_prefix("out: ")?.strip_suffix(" rows"))
        .and_then(|n| n.parse::<usize>().ok())
        .expect("an out count");
    let input_lines =
        std::fs::read_to_string(work.path().join("user-windows/data/listen_events.jsonl"))
            .unwrap()
            .lines()
            .count();
    assert_eq!(out, input_lines, "every input row passes on: {stdout}");
}

#[test]
fn plugin_test_fails_when_the_plugin_does_and_names_plugin_stage_and_batch() {
    let work = tempfile::tempdir().unwrap();
    let data = work.path().join("data");
    assert!(
        sluice(
            &["gen", "--events", "2000", "--to", data.to_str().unwrap()],
            &[]
        )
        .status
        .success()
    );
    let config = work.path().join("faulty.yaml");
    std::fs::write(&config, "mode: error\ntrigger_offset: 100\n").unwrap();
    let faulty = format!("{}/faulty.wasm", plugin_dir());
    let input = data.join("listen_events.jsonl");
    let output = sluice(
        &[
            "plugin",
            "test",
            &faulty,
            "--input",
            input.to_str().unwrap(),
            "--config",
            config.to_str().unwrap(),
            "--batch-rows",
            "50",
        ],
        &[],
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        !output.status.success(),
        "a failing plugin fails the command:\n{stdout}"
    );
    assert!(stderr.contains("plugin faulty@"), "{stderr}");
    assert!(
        stderr.contains("failed on 1 of"),
        "one batch failed: {stderr}"
    );
    let failed = stdout
        .lines()
        .find(|l| l.contains("FAILED"))
        .unwrap_or_else(|| panic!("a FAILED call in:\n{stdout}"));
    assert!(
        failed.contains("stage `faulty` (plugin faulty@"),
        "{failed}"
    );
    assert!(
        failed.contains("in batch ") && failed.contains("listen_events.jsonl offsets "),
        "the batch is named by its rows: {failed}"
    );

    // A schema the plugin did not expect: clean needs `ts`; these rows have none.
    let other = work.path().join("clicks.jsonl");
    std::fs::write(
        &other,
        "{\"user\": 1, \"page\": \"Home\"}\n{\"user\": 2, \"page\": \"About\"}\n",
    )
    .unwrap();
    let clean = format!("{}/clean.wasm", plugin_dir());
    let output = sluice(
        &["plugin", "test", &clean, "--input", other.to_str().unwrap()],
        &[],
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(!output.status.success(), "{stdout}");
    assert!(stdout.contains("schema inferred from the file"), "{stdout}");
    assert!(
        stdout.contains("stage `clean` (plugin clean@")
            && stdout.contains("input column `ts` is missing from the batch")
            && stdout.contains("clicks.jsonl offsets 1..=2"),
        "{stdout}"
    );

    // An unknown --schema is refused with the known topics.
    let output = sluice(
        &[
            "plugin",
            "test",
            &clean,
            "--input",
            other.to_str().unwrap(),
            "--schema",
            "clicks",
        ],
        &[],
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(
        stderr.contains("--schema clicks: not a known topic (known: listen_events"),
        "{stderr}"
    );
}

#[test]
fn inspect_shows_a_first_party_plugin_and_refuses_what_the_sandbox_does_not_grant() {
    let sessionize = format!("{}/sessionize.wasm", plugin_dir());
    let output = sluice(&["plugin", "inspect", &sessionize], &[]);
    let stdout = common::assert_success(&output);
    for expected in [
        "contract  sluice:plugin@0.1.0 (this host's)",
        "name      sessionize",
        "inputs    userId, ts",
        "state     stateful",
        "wasi:",
        "exports   sluice:plugin/guest@0.1.0",
    ] {
        assert!(
            stdout.contains(expected),
            "missing `{expected}` in:\n{stdout}"
        );
    }

    // A component that claims the contract but imports a capability nobody grants.
    let work = tempfile::tempdir().unwrap();
    let foreign = work.path().join("foreign.wasm");
    let component = wat::parse_str(
        r#"(component
             (import "acme:secrets/vault" (instance (export "read" (func (result u32)))))
             (instance $guest)
             (export "sluice:plugin/guest@0.1.0" (instance $guest)))"#,
    )
    .unwrap();
    std::fs::write(&foreign, component).unwrap();
    let output = sluice(&["plugin", "inspect", foreign.to_str().unwrap()], &[]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(!output.status.success(), "{stdout}");
    assert!(
        stdout.contains("  acme:secrets/vault"),
        "imports are listed: {stdout}"
    );
    let refused = stdout
        .lines()
        .find(|l| l.starts_with("REFUSED"))
        .unwrap_or_default();
    assert!(
        refused.contains("needs imports this sandbox does not grant")
            && refused.contains("acme:secrets/vault"),
        "{stdout}"
    );

    // A pipeline that loads such a plugin fails before reading a record, naming the stage.
    let yaml = work.path().join("pipeline.yaml");
    std::fs::write(
        &yaml,
        format!(
            "name: refused\nsource:\n  generator: {{events: 10}}\nlake:\n  uri: file://{}/lake\nstages:\n  - name: secrets\n    plugin: {}\n",
            work.path().display(),
            foreign.display()
        ),
    )
    .unwrap();
    let output = sluice(&["run", yaml.to_str().unwrap()], &[]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(
        stderr.contains("stage `secrets`: plugin ")
            && stderr.contains("needs imports this sandbox does not grant"),
        "{stderr}"
    );

    // A core module and another contract version get their own clear refusals.
    let core = work.path().join("core.wasm");
    std::fs::write(&core, wat::parse_str("(module)").unwrap()).unwrap();
    let stderr = String::from_utf8_lossy(
        &sluice(&["plugin", "inspect", core.to_str().unwrap()], &[]).stderr,
    )
    .into_owned();
    assert!(
        stderr.contains("core wasm module, not a component"),
        "{stderr}"
    );
    let old = work.path().join("old.wasm");
    std::fs::write(
        &old,
        wat::parse_str(
            r#"(component (instance $g) (export "sluice:plugin/guest@0.0.9" (instance $g)))"#,
        )
        .unwrap(),
    )
    .unwrap();
    let output = sluice(&["plugin", "inspect", old.to_str().unwrap()], &[]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(!output.status.success());
    assert!(
        stdout.contains("contract  sluice:plugin@0.0.9 (this host supports 0.1.0 only)"),
        "{stdout}"
    );
    assert!(
        stdout.contains("REFUSED") && stdout.contains("rebuild it against sluice-sdk 0.1.0"),
        "{stdout}"
    );
}

/// Silver rows of a files → `plugin` → silver pipeline, as a table sorted by offset (the
/// `sluice.plugin` stamp, which names the plugin, left out).
fn silver_through(plugin: &str, input: &Path, lake: &Path) -> String {
    let yaml = lake.with_extension("yaml");
    std::fs::write(
        &yaml,
        format!(
            "name: twins\nsource:\n  files: {{paths: [\"{}/*.jsonl\"]}}\nbatch_rows: 700\nlake:\n  uri: file://{}\nstages:\n  - name: paid\n    plugin: {}/{plugin}\n    layer: silver\n",
            input.display(),
            lake.display(),
            plugin_dir()
        ),
    )
    .unwrap();
    common::assert_success(&sluice(&["run", "--quiet", yaml.to_str().unwrap()], &[]));
    let batches: Vec<_> = common::read_layer(lake, "silver")
        .into_iter()
        .map(|b| {
            let schema = b
                .schema()
                .as_ref()
                .clone()
                .with_metadata(Default::default());
            b.with_schema(std::sync::Arc::new(schema)).unwrap()
        })
        .collect();
    let table = arrow::compute::concat_batches(&batches[0].schema(), &batches).unwrap();
    let order =
        arrow::compute::sort_to_indices(table.column_by_name("_offset").unwrap(), None, None)
            .unwrap();
    let sorted = arrow::compute::take_record_batch(&table, &order).unwrap();
    arrow::util::pretty::pretty_format_batches(&[sorted])
        .unwrap()
        .to_string()
}

#[test]
fn a_javascript_plugin_runs_in_the_host_like_its_rust_twin() {
    // plugins/paid-only-js (componentize-js + apache-arrow), built by scripts/test.sh (plugins/paid-only-js/build.sh).
    let js = format!("{}/paid_only_js.wasm", plugin_dir());
    let stdout = common::assert_success(&sluice(&["plugin", "inspect", &js], &[]));
    for expected in [
        "contract  sluice:plugin@0.1.0 (this host's)",
        "name      paid-only-js",
        "inputs    level",
        "ok        the sandbox grants every import",
    ] {
        assert!(
            stdout.contains(expected),
            "missing `{expected}` in:\n{stdout}"
        );
    }

    let work = tempfile::tempdir().unwrap();
    let input = work.path().join("data");
    common::assert_success(&sluice(
        &["gen", "--events", "3000", "--to", input.to_str().unwrap()],
        &[],
    ));
    // One topic is enough (and the JS engine is slow): listen events only.
    for topic in ["page_view_events", "auth_events", "status_change_events"] {
        std::fs::remove_file(input.join(format!("{topic}.jsonl"))).unwrap();
    }
    let from_js = silver_through("paid_only_js.wasm", &input, &work.path().join("js"));
    let from_rust = silver_through("paid_only.wasm", &input, &work.path().join("rust"));
    assert!(
        from_rust.lines().count() > 100,
        "paid rows were kept:\n{from_rust}"
    );
    assert_eq!(
        from_js, from_rust,
        "the JavaScript plugin wrote other silver rows"
    );

    // Its errors reach the host like a Rust plugin's: a thrown string fails the batch.
    let config = work.path().join("bad.yaml");
    std::fs::write(&config, "levle: paid\n").unwrap();
    let output = sluice(
        &[
            "plugin",
            "inspect",
            &js,
            "--config",
            config.to_str().unwrap(),
        ],
        &[],
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(!output.status.success());
    assert!(
        stdout.contains("init      FAILED") && stdout.contains("unknown config key `levle`"),
        "{stdout}"
    );
}
