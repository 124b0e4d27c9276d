//! `sluice query`: SQL over a lake the pipeline wrote — every table as `<layer>.<table>`,
//! counts equal to the Parquet files', hive folders as columns that prune files, the output
//! formats, and clear errors.
mod common;
use common::*;
use std::collections::BTreeMap;
use std::path::Path;

fn query(lake: &Path, sql: &str, format: &str) -> String {
    let uri = lake_uri(lake);
    assert_success(&sluice(
        &["query", "--lake", &uri, "--format", format, sql],
        &[],
    ))
}

fn csv_rows(text: &str) -> Vec<Vec<String>> {
    text.lines()
        .skip(1)
        .map(|l| l.split(',').map(str::to_string).collect())
        .collect()
}

/// The lake of one chain run, shared by the tests of this file.
fn lake() -> &'static Path {
    static LAKE: std::sync::OnceLock<tempfile::TempDir> = std::sync::OnceLock::new();
    LAKE.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let lake = dir.path().join("lake");
        let pipeline = chain_pipeline(dir.path(), "chain", "chain", &lake_uri(&lake), 30_000, "");
        run(&pipeline);
        dir
    })
    .path()
    .join("lake")
    .leak()
}

#[test]
fn every_table_is_there_and_counts_equal_the_parquet_files() {
    let lake = lake();
    let tables = csv_rows(&query(
        lake,
        "SELECT table_schema, table_name FROM information_schema.tables \
         WHERE table_schema <> 'information_schema' ORDER BY 1, 2",
        "csv",
    ));
    let listed: Vec<String> = tables
        .iter()
        .map(|r| format!("{}.{}", r[0], r[1]))
        .collect();
    for expected in [
        "bronze.listen_events",
        "silver.page_view_events",
        "gold.sessions",
        "gold.top_songs",
        "rejects.listen_events",
    ] {
        assert!(
            listed.iter().any(|t| t == expected),
            "{expected} in {listed:?}"
        );
    }
    for (layer, folder) in [
        ("bronze", "bronze"),
        ("silver", "silver"),
        ("gold", "gold"),
        ("rejects", "_rejects"),
    ] {
        for (table, batches) in layer_tables(lake, folder) {
            let counted = query(
                lake,
                &format!("SELECT count(*) FROM {layer}.{table}"),
                "csv",
            );
            assert_eq!(
                csv_rows(&counted)[0][0],
                rows(&batches).to_string(),
                "{layer}.{table}"
            );
        }
    }
}

#[test]
fn hive_folders_are_columns_and_a_filter_on_them_reads_only_their_files() {
    let lake = lake();
    // Rows per `date=` folder, counted from the files, equal GROUP BY date.
    let mut by_folder: BTreeMap<String, usize> = BTreeMap::new();
    for file in parquet_files(&lake.join("silver/page_view_events")) {
        let date = file
            .components()
            .find_map(|c| c.as_os_str().to_str()?.strip_prefix("date="))
            .unwrap()
            .to_string();
        *by_folder.entry(date).or_default() += rows(&read_parquet(&file));
    }
    let grouped = csv_rows(&query(
        lake,
        "SELECT date, count(*) FROM silver.page_view_events GROUP BY date ORDER BY date",
        "csv",
    ));
    let grouped: BTreeMap<String, usize> = grouped
        .into_iter()
        .map(|r| (r[0].clone(), r[1].parse().unwrap()))
        .collect();
    assert_eq!(grouped, by_folder);

    // Only the filtered hour's files are in the plan (a max cannot come from statistics alone
    // once a filter on a data column is there).
    let hour_files = parquet_files(&lake.join("bronze/page_view_events"))
        .into_iter()
        .filter(|f| f.to_string_lossy().contains("/hour=03/"))
        .count();
    assert!(hour_files > 0);
    let plan = query(
        lake,
        "EXPLAIN SELECT max(sessionId) FROM bronze.page_view_events WHERE hour = '03' AND userId > 0",
        "csv",
    );
    let scanned = plan.matches(".parquet").count();
    assert!(plan.contains("hour=03"), "{plan}");
    assert!(!plan.contains("hour=04"), "only hour 03 is read: {plan}");
    assert_eq!(scanned, hour_files, "{plan}");
}

#[test]
fn results_come_as_a_table_csv_json_or_json_lines() {
    let lake = lake();
    let sql = "SELECT rank, artist, song, plays FROM gold.top_songs ORDER BY date, rank LIMIT 3";
    let table = query(lake, sql, "table");
    assert!(table.contains("| rank | artist"), "{table}");
    assert!(table.trim_end().ends_with("3 rows"), "{table}");
    let csv = csv_rows(&query(lake, sql, "csv"));
    let json: Vec<serde_json::Value> = serde_json::from_str(&query(lake, sql, "json")).unwrap();
    let ndjson: Vec<serde_json::Value> = query(lake, sql, "ndjson")
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(json, ndjson);
    assert_eq!(csv.len(), 3);
    for (row, object) in csv.iter().zip(&json) {
        assert_eq!(row[0], object["rank"].to_string());
        assert_eq!(row[1], object["artist"].as_str().unwrap());
        assert_eq!(row[3], object["plays"].to_string());
    }
    let empty = query(lake, "SELECT * FROM gold.top_songs WHERE rank < 0", "json");
    assert_eq!(empty.trim(), "[]");
}

#[test]
fn a_bad_query_names_the_problem_and_the_tables_there_are() {
    let lake = lake();
    let uri = lake_uri(lake);
    let out = sluice(&["query", "--lake", &uri, "SELECT * FROM silver.nope"], &[]);
    assert!(!out.status.success());
    let error = String::from_utf8_lossy(&out.stderr);
    assert!(
        error.contains("table 'datafusion.silver.nope' not found"),
        "{error}"
    );
    assert!(
        error.contains("tables in the lake:") && error.contains("silver.listen_events"),
        "{error}"
    );
    assert_eq!(error.matches("not found").count(), 1, "said once: {error}");

    let out = sluice(
        &[
            "query",
            "--lake",
            &uri,
            "SELECT nope FROM silver.listen_events",
        ],
        &[],
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("nope"));
    let out = sluice(
        &["query", "--lake", "file:///no/such/lake", "SELECT 1"],
        &[],
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("no lake at file:///no/such/lake"));
}
