//! Pipeline files with mistakes: every error names the file, the line and the key.
use sluice::config::load;
use std::path::{Path, PathBuf};

fn write(dir: &tempfile::TempDir, name: &str, text: &str) -> PathBuf {
    let path = dir.path().join(name);
    std::fs::write(&path, text).unwrap();
    path
}

fn errors(path: &Path) -> Vec<String> {
    load(path)
        .unwrap_err()
        .0
        .iter()
        .map(ToString::to_string)
        .collect()
}

const VALID_HEAD: &str =
    "name: demo\nsource:\n  generator:\n    events: 10\nlake:\n  uri: file://./lake\n";

#[test]
fn unknown_key_names_file_line_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(
        &dir,
        "p.yaml",
        &format!("{VALID_HEAD}bronze:\n  partition_by: [date]\n  partitoin: [hour]\n"),
    );
    let errors = errors(&path);
    assert_eq!(errors.len(), 1, "{errors:?}");
    let expected = format!(
        "{}:9: bronze.partitoin: unknown field `partitoin`, expected `partition_by`",
        path.display()
    );
    assert!(
        errors[0].starts_with(&expected),
        "{} does not start with {expected}",
        errors[0]
    );
}

#[test]
fn wrong_type_names_file_line_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(
        &dir,
        "p.yaml",
        "name: demo\nsource:\n  generator:\n    events: lots\nlake:\n  uri: file://./lake\n",
    );
    let errors = errors(&path);
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(
        errors[0].starts_with(&format!(
            "{}:4: source.generator.events: invalid type: string \"lots\"",
            path.display()
        )),
        "{}",
        errors[0]
    );
}

#[test]
fn missing_plugin_and_other_problems_are_all_reported_with_lines() {
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        "{VALID_HEAD}stages:\n  - name: clean\n    plugin: nowhere/clean.wasm\n  - name: clean\n    plugin: also-missing.wasm\n    layer: bronze\n"
    );
    let path = write(&dir, "p.yaml", &text);
    let errors = errors(&path);
    let file = path.display().to_string();
    assert_eq!(errors.len(), 4, "{errors:#?}");
    assert!(
        errors[0].starts_with(&format!("{file}:9: stages[0].plugin: plugin file "))
            && errors[0].contains("nowhere/clean.wasm does not exist"),
        "{}",
        errors[0]
    );
    assert!(
        errors[1].starts_with(&format!(
            "{file}:10: stages[1].name: stage name `clean` is used twice"
        )),
        "{}",
        errors[1]
    );
    assert!(
        errors[2].starts_with(&format!("{file}:11: stages[1].plugin: plugin file ")),
        "{}",
        errors[2]
    );
    assert!(
        errors[3].starts_with(&format!(
            "{file}:12: stages[1].layer: `bronze` is not a valid layer name"
        )),
        "{}",
        errors[3]
    );
}

#[test]
fn environment_substitution_with_defaults() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(
        &dir,
        "p.yaml",
        "name: demo\nsource:\n  generator:\n    events: ${SLUICE_TEST_UNSET_EVENTS:-1234}\nlake:\n  uri: ${SLUICE_TEST_UNSET_LAKE:-file://./elsewhere}\n",
    );
    let loaded = load(&path).unwrap();
    assert_eq!(loaded.config.lake.uri, "file://./elsewhere");
    assert_eq!(loaded.config.source.generator.unwrap().events, 1234);
    let path = write(
        &dir,
        "q.yaml",
        "name: demo\nsource:\n  generator:\n    events: ${SLUICE_TEST_UNSET_EVENTS}\nlake:\n  uri: file://./lake\n",
    );
    let errors = errors(&path);
    assert!(
        errors[0].starts_with(&format!(
            "{}:4: environment variable `SLUICE_TEST_UNSET_EVENTS` is not set",
            path.display()
        )),
        "{}",
        errors[0]
    );
}

#[test]
fn the_shipped_pipelines_validate() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    for entry in std::fs::read_dir(root.join("pipelines")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "yaml")
            && let Err(errors) = load(&path)
        {
            panic!("{errors}");
        }
    }
}

#[test]
fn an_admin_server_beyond_loopback_needs_a_token() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(
        &dir,
        "p.yaml",
        &format!("{VALID_HEAD}admin:\n  listen: 0.0.0.0:9464\n"),
    );
    let problems = errors(&path);
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(
        problems[0].starts_with(&format!(
            "{}:8: admin.listen: 0.0.0.0:9464 is reachable",
            path.display()
        )),
        "{}",
        problems[0]
    );
    let path = write(
        &dir,
        "q.yaml",
        &format!("{VALID_HEAD}admin:\n  listen: localhost\n"),
    );
    assert!(errors(&path)[0].contains("admin.listen: `localhost` is not IP:PORT"));
    let path = write(
        &dir,
        "r.yaml",
        &format!("{VALID_HEAD}admin:\n  listen: 0.0.0.0:9464\n  token: s3cret\n"),
    );
    assert!(load(&path).is_ok());
}

#[test]
fn statistics_of_a_layer_the_pipeline_does_not_write_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(
        &dir,
        "p.yaml",
        &format!(
            "{VALID_HEAD}  statistics: {{bronze: all, bronz: none}}\nbronze:\n  partition_by: [date]\n"
        ),
    );
    let errors = errors(&path);
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(
        errors[0].starts_with(&format!(
            "{}:7: lake.statistics.bronz: this pipeline writes no layer `bronz`",
            path.display()
        )),
        "{}",
        errors[0]
    );
}
