//! Undecodable input goes to `_rejects/` with the raw line, the reason and where it came from.
mod common;
use common::*;

#[test]
fn undecodable_lines_land_in_rejects_with_raw_line_reason_and_origin() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("listen_events.jsonl");
    let good = r#"{"ts":1793491200000,"sessionId":1,"auth":"Logged In","level":"free","itemInSession":0,"userId":7,"artist":"A","song":"S","duration":200.5}"#;
    let lines = [
        good.to_string(),
        "this is not json".to_string(),
        String::new(), // blank lines are skipped, but still counted in offsets
        r#"{"ts":"yesterday","sessionId":2}"#.to_string(),
        good.replace("\"sessionId\":1", "\"sessionId\":3"),
    ];
    std::fs::write(&data, lines.join("\n") + "\n").unwrap();
    let pipeline = dir.path().join("p.yaml");
    std::fs::write(
        &pipeline,
        format!("name: dlq\nsource:\n  files:\n    paths: [\"{}/*.jsonl\"]\nlake:\n  uri: file://{}/lake\nbronze: {{}}\n", dir.path().display(), dir.path().display()),
    )
    .unwrap();
    let stdout = assert_success(&sluice(&["run", pipeline.to_str().unwrap()], &[]));
    let lake = dir.path().join("lake");

    let bronze = read_layer(&lake, "bronze");
    assert_eq!(int64_column(&bronze, "sessionId"), vec![1, 3]);
    assert_eq!(
        int64_column(&bronze, "_offset"),
        vec![1, 5],
        "offsets are line numbers"
    );

    let rejects = read_layer(&lake, "_rejects");
    assert_eq!(
        string_column(&rejects, "raw"),
        vec![
            "this is not json".to_string(),
            r#"{"ts":"yesterday","sessionId":2}"#.to_string()
        ]
    );
    assert_eq!(int64_column(&rejects, "offset"), vec![2, 4]);
    assert!(
        string_column(&rejects, "origin")
            .iter()
            .all(|o| o == &data.display().to_string())
    );
    assert!(
        string_column(&rejects, "stage")
            .iter()
            .all(|s| s == "decode")
    );
    let reasons = string_column(&rejects, "reason");
    assert!(
        reasons[1].contains("ts"),
        "the reason names the field: {}",
        reasons[1]
    );
    assert!(lake.join("_rejects/listen_events/stage=decode").is_dir());
    assert!(
        stdout.contains("dead letters (_rejects)") && stdout.contains("decode"),
        "{stdout}"
    );
}

#[test]
fn a_topic_without_schema_is_rejected_whole_not_dropped() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("mystery.jsonl"), "{\"a\":1}\n{\"a\":2}\n").unwrap();
    let pipeline = dir.path().join("p.yaml");
    std::fs::write(
        &pipeline,
        format!("name: dlq\nsource:\n  files:\n    paths: [\"{}/*.jsonl\"]\nlake:\n  uri: file://{}/lake\nbronze: {{}}\n", dir.path().display(), dir.path().display()),
    )
    .unwrap();
    assert_success(&sluice(&["run", pipeline.to_str().unwrap()], &[]));
    let rejects = read_layer(&dir.path().join("lake"), "_rejects");
    assert_eq!(rows(&rejects), 2);
    assert!(
        string_column(&rejects, "reason")
            .iter()
            .all(|r| r.contains("no schema is declared for topic `mystery`"))
    );
}
