//! Every gold KPI table equals the same KPI computed independently with DataFusion SQL over the
//! silver layer (sessions: from EventSim's `sessionId` in silver, not from the gold sessions).
//! Counts compare exactly; float sums and means are rounded to 6 decimals on both sides.
mod common;
use common::*;
use datafusion::arrow::util::pretty::pretty_format_batches;
use datafusion::prelude::{ParquetReadOptions, SessionContext};
use std::path::Path;

async fn query(ctx: &SessionContext, sql: &str) -> String {
    let batches = ctx
        .sql(sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .collect()
        .await
        .unwrap();
    pretty_format_batches(&batches).unwrap().to_string()
}

async fn context(lake: &Path) -> SessionContext {
    let ctx = SessionContext::new();
    for topic in [
        "listen_events",
        "page_view_events",
        "auth_events",
        "status_change_events",
    ] {
        ctx.register_parquet(
            topic,
            lake.join("silver").join(topic).to_str().unwrap(),
            ParquetReadOptions::default(),
        )
        .await
        .unwrap();
    }
    for table in [
        "daily_active_users",
        "streams_per_hour",
        "top_songs",
        "top_artists",
        "listening_by_state",
        "sessions_per_day",
        "subscriptions_per_day",
    ] {
        ctx.register_parquet(
            format!("gold_{table}"),
            lake.join("gold").join(table).to_str().unwrap(),
            ParquetReadOptions::default(),
        )
        .await
        .unwrap();
    }
    ctx
}

const DATE: &str = "CAST(to_timestamp_millis(ts) AS DATE)";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_kpi_equals_datafusion_sql_over_silver() {
    let dir = tempfile::tempdir().unwrap();
    let pipeline = dir.path().join("p.yaml");
    std::fs::write(
        &pipeline,
        format!(
            "name: kpis\nsource:\n  generator: {{events: 150000, users: 300}}\nbatch_rows: 4096\nlake:\n  uri: file://{0}/lake\n  commit_rows: 50000\nstages:\n  - name: clean\n    plugin: {1}/clean.wasm\n    layer: silver\n  - name: sessionize\n    plugin: {1}/sessionize.wasm\n    topics: [page_view_events]\n    layer: gold\n    write: [sessions]\n  - name: kpis\n    plugin: {1}/kpis.wasm\n    layer: gold\n",
            dir.path().display(),
            plugin_dir()
        ),
    )
    .unwrap();
    assert_success(&sluice(
        &["run", "--quiet", pipeline.to_str().unwrap()],
        &[],
    ));
    let lake = dir.path().join("lake");
    let ctx = context(&lake).await;
    let days = query(
        &ctx,
        "SELECT COUNT(*) AS days FROM gold_subscriptions_per_day",
    )
    .await;
    assert!(!days.contains("| 0 "), "{days}");

    let checks: Vec<(&str, String, String)> = vec![
        (
            "daily_active_users",
            "SELECT date, level, users FROM gold_daily_active_users ORDER BY 1, 2".into(),
            format!(
                "WITH e AS (SELECT ts, \"userId\", level FROM listen_events UNION ALL SELECT ts, \"userId\", level FROM page_view_events \
                 UNION ALL SELECT ts, \"userId\", level FROM auth_events UNION ALL SELECT ts, \"userId\", level FROM status_change_events) \
                 SELECT {DATE} AS date, level, COUNT(DISTINCT \"userId\") AS users FROM e WHERE \"userId\" IS NOT NULL GROUP BY 1, 2 ORDER BY 1, 2"
            ),
        ),
        (
            "streams_per_hour",
            "SELECT date, hour, streams FROM gold_streams_per_hour ORDER BY 1, 2".into(),
            format!("SELECT {DATE} AS date, CAST(date_part('hour', to_timestamp_millis(ts)) AS INT) AS hour, COUNT(*) AS streams FROM listen_events GROUP BY 1, 2 ORDER BY 1, 2"),
        ),
        (
            "top_songs",
            "SELECT date, rank, artist, song, plays FROM gold_top_songs ORDER BY 1, 2".into(),
            format!(
                "SELECT date, CAST(rank AS INT) AS rank, artist, song, plays FROM (SELECT date, artist, song, plays, \
                 ROW_NUMBER() OVER (PARTITION BY date ORDER BY plays DESC, artist, song) AS rank FROM \
                 (SELECT {DATE} AS date, artist, song, COUNT(*) AS plays FROM listen_events GROUP BY 1, 2, 3)) WHERE rank <= 10 ORDER BY 1, 2"
            ),
        ),
        (
            "top_artists",
            "SELECT date, rank, artist, plays FROM gold_top_artists ORDER BY 1, 2".into(),
            format!(
                "SELECT date, CAST(rank AS INT) AS rank, artist, plays FROM (SELECT date, artist, plays, \
                 ROW_NUMBER() OVER (PARTITION BY date ORDER BY plays DESC, artist) AS rank FROM \
                 (SELECT {DATE} AS date, artist, COUNT(*) AS plays FROM listen_events GROUP BY 1, 2)) WHERE rank <= 10 ORDER BY 1, 2"
            ),
        ),
        (
            "listening_by_state",
            "SELECT date, state, level, ROUND(listen_seconds, 6) AS listen_seconds, plays FROM gold_listening_by_state ORDER BY 1, 2, 3".into(),
            format!("SELECT {DATE} AS date, state, level, ROUND(SUM(duration), 6) AS listen_seconds, COUNT(*) AS plays FROM listen_events GROUP BY 1, 2, 3 ORDER BY 1, 2, 3"),
        ),
        (
            "sessions_per_day",
            "SELECT date, sessions, ROUND(mean_duration_s, 6) AS mean, ROUND(median_duration_s, 6) AS median, ROUND(songs_per_session, 6) AS songs FROM gold_sessions_per_day ORDER BY 1".into(),
            "WITH s AS (SELECT \"userId\", \"sessionId\", MIN(ts) AS first, MAX(ts) AS last, SUM(CASE WHEN page = 'NextSong' THEN 1 ELSE 0 END) AS songs \
             FROM page_view_events WHERE \"userId\" IS NOT NULL GROUP BY 1, 2) \
             SELECT CAST(to_timestamp_millis(first) AS DATE) AS date, COUNT(*) AS sessions, ROUND(AVG((last - first) / 1000.0), 6) AS mean, \
             ROUND(MEDIAN((last - first) / 1000.0), 6) AS median, ROUND(AVG(CAST(songs AS DOUBLE)), 6) AS songs FROM s GROUP BY 1 ORDER BY 1"
                .into(),
        ),
        (
            "subscriptions_per_day",
            "SELECT date, upgrades, downgrades, cancellations, registrations FROM gold_subscriptions_per_day ORDER BY 1".into(),
            format!(
                "WITH d AS (SELECT {DATE} AS date FROM listen_events UNION SELECT {DATE} FROM page_view_events UNION SELECT {DATE} FROM auth_events \
                 UNION SELECT {DATE} FROM status_change_events), \
                 c AS (SELECT {DATE} AS date, SUM(CASE WHEN level = 'free' THEN 1 ELSE 0 END) AS up, SUM(CASE WHEN level = 'paid' THEN 1 ELSE 0 END) AS down FROM status_change_events GROUP BY 1), \
                 p AS (SELECT {DATE} AS date, SUM(CASE WHEN page = 'Cancellation Confirmation' THEN 1 ELSE 0 END) AS cancel, \
                 SUM(CASE WHEN page = 'Submit Registration' THEN 1 ELSE 0 END) AS reg FROM page_view_events GROUP BY 1) \
                 SELECT d.date, COALESCE(c.up, 0) AS upgrades, COALESCE(c.down, 0) AS downgrades, COALESCE(p.cancel, 0) AS cancellations, \
                 COALESCE(p.reg, 0) AS registrations FROM d LEFT JOIN c ON d.date = c.date LEFT JOIN p ON d.date = p.date ORDER BY 1"
            ),
        ),
    ];
    for (table, gold, expected) in checks {
        let (gold, expected) = (query(&ctx, &gold).await, query(&ctx, &expected).await);
        assert!(gold.lines().count() > 4, "{table} is empty:\n{gold}");
        assert_eq!(
            gold, expected,
            "{table}: gold (left) differs from DataFusion over silver (right)"
        );
    }
}
