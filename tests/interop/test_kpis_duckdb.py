"""Every gold KPI table equals the same KPI computed independently with DuckDB SQL over the
silver layer (sessions: from EventSim's `sessionId` in silver, not from the gold sessions).
Counts compare exactly; float sums and means are rounded to 6 decimals on both sides."""
import os
import pathlib
import subprocess

import duckdb
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
SLUICE = os.environ.get("SLUICE_BIN", str(ROOT / "target/debug/sluice"))
PLUGINS = pathlib.Path(os.environ.get("SLUICE_PLUGIN_DIR", ROOT / "target/plugins")).resolve()
TOPICS = ["listen_events", "page_view_events", "auth_events", "status_change_events"]
KPIS = ["daily_active_users", "streams_per_hour", "top_songs", "top_artists",
        "listening_by_state", "sessions_per_day", "subscriptions_per_day"]
DATE = "CAST(epoch_ms(ts) AS DATE)"


@pytest.fixture(scope="module")
def db(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("kpis")
    pipeline = tmp / "p.yaml"
    pipeline.write_text(f"""name: kpis
source:
  generator: {{events: 150000, users: 300}}
batch_rows: 4096
lake:
  uri: file://{tmp}/lake
  commit_rows: 50000
stages:
  - name: clean
    plugin: {PLUGINS}/clean.wasm
    layer: silver
  - name: sessionize
    plugin: {PLUGINS}/sessionize.wasm
    topics: [page_view_events]
    layer: gold
    write: [sessions]
  - name: kpis
    plugin: {PLUGINS}/kpis.wasm
    layer: gold
""")
    result = subprocess.run([SLUICE, "run", "--quiet", str(pipeline)], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    con = duckdb.connect()
    lake = tmp / "lake"
    for topic in TOPICS:
        con.sql(f"CREATE VIEW {topic} AS SELECT * FROM read_parquet('{lake}/silver/{topic}/**/*.parquet')")
    for table in KPIS:
        con.sql(f"CREATE VIEW gold_{table} AS SELECT * FROM read_parquet('{lake}/gold/{table}/**/*.parquet')")
    return con


CHECKS = {
    "daily_active_users": (
        "SELECT date, level, users FROM gold_daily_active_users ORDER BY 1, 2",
        f"""WITH e AS (SELECT ts, "userId", level FROM listen_events UNION ALL SELECT ts, "userId", level FROM page_view_events
            UNION ALL SELECT ts, "userId", level FROM auth_events UNION ALL SELECT ts, "userId", level FROM status_change_events)
            SELECT {DATE} AS date, level, COUNT(DISTINCT "userId") AS users FROM e WHERE "userId" IS NOT NULL GROUP BY 1, 2 ORDER BY 1, 2""",
    ),
    "streams_per_hour": (
        "SELECT date, hour, streams FROM gold_streams_per_hour ORDER BY 1, 2",
        f"SELECT {DATE} AS date, hour(epoch_ms(ts)) AS hour, COUNT(*) AS streams FROM listen_events GROUP BY 1, 2 ORDER BY 1, 2",
    ),
    "top_songs": (
        "SELECT date, rank, artist, song, plays FROM gold_top_songs ORDER BY 1, 2",
        f"""SELECT date, rank, artist, song, plays FROM (SELECT date, artist, song, plays,
            ROW_NUMBER() OVER (PARTITION BY date ORDER BY plays DESC, artist, song) AS rank FROM
            (SELECT {DATE} AS date, artist, song, COUNT(*) AS plays FROM listen_events GROUP BY 1, 2, 3)) WHERE rank <= 10 ORDER BY 1, 2""",
    ),
    "top_artists": (
        "SELECT date, rank, artist, plays FROM gold_top_artists ORDER BY 1, 2",
        f"""SELECT date, rank, artist, plays FROM (SELECT date, artist, plays,
            ROW_NUMBER() OVER (PARTITION BY date ORDER BY plays DESC, artist) AS rank FROM
            (SELECT {DATE} AS date, artist, COUNT(*) AS plays FROM listen_events GROUP BY 1, 2)) WHERE rank <= 10 ORDER BY 1, 2""",
    ),
    "listening_by_state": (
        "SELECT date, state, level, ROUND(listen_seconds, 6), plays FROM gold_listening_by_state ORDER BY 1, 2, 3",
        f"SELECT {DATE} AS date, state, level, ROUND(SUM(duration), 6), COUNT(*) FROM listen_events GROUP BY 1, 2, 3 ORDER BY 1, 2, 3",
    ),
    "sessions_per_day": (
        "SELECT date, sessions, ROUND(mean_duration_s, 6), ROUND(median_duration_s, 6), ROUND(songs_per_session, 6) FROM gold_sessions_per_day ORDER BY 1",
        """WITH s AS (SELECT "userId", "sessionId", MIN(ts) AS first, MAX(ts) AS last, SUM(CASE WHEN page = 'NextSong' THEN 1 ELSE 0 END) AS songs
            FROM page_view_events WHERE "userId" IS NOT NULL GROUP BY 1, 2)
            SELECT CAST(epoch_ms(first) AS DATE) AS date, COUNT(*), ROUND(AVG((last - first) / 1000.0), 6),
            ROUND(MEDIAN((last - first) / 1000.0), 6), ROUND(AVG(CAST(songs AS DOUBLE)), 6) FROM s GROUP BY 1 ORDER BY 1""",
    ),
    "subscriptions_per_day": (
        "SELECT date, upgrades, downgrades, cancellations, registrations FROM gold_subscriptions_per_day ORDER BY 1",
        f"""WITH d AS (SELECT {DATE} AS date FROM listen_events UNION SELECT {DATE} FROM page_view_events UNION SELECT {DATE} FROM auth_events
            UNION SELECT {DATE} FROM status_change_events),
            c AS (SELECT {DATE} AS date, SUM(CASE WHEN level = 'free' THEN 1 ELSE 0 END) AS up, SUM(CASE WHEN level = 'paid' THEN 1 ELSE 0 END) AS down FROM status_change_events GROUP BY 1),
            p AS (SELECT {DATE} AS date, SUM(CASE WHEN page = 'Cancellation Confirmation' THEN 1 ELSE 0 END) AS cancel,
            SUM(CASE WHEN page = 'Submit Registration' THEN 1 ELSE 0 END) AS reg FROM page_view_events GROUP BY 1)
            SELECT d.date, COALESCE(c.up, 0), COALESCE(c.down, 0), COALESCE(p.cancel, 0), COALESCE(p.reg, 0)
            FROM d LEFT JOIN c ON d.date = c.date LEFT JOIN p ON d.date = p.date ORDER BY 1""",
    ),
}


def test_the_run_covers_several_days(db):
    assert db.sql("SELECT COUNT(*) FROM gold_subscriptions_per_day").fetchone()[0] >= 2


@pytest.mark.parametrize("table", KPIS)
def test_gold_kpi_equals_duckdb_over_silver(db, table):
    gold_sql, expected_sql = CHECKS[table]
    gold = [tuple(row) for row in db.sql(gold_sql).fetchall()]
    expected = [tuple(row) for row in db.sql(expected_sql).fetchall()]
    assert len(gold) >= 2, f"{table} is empty"
    assert gold == expected, f"{table}: gold (left) differs from DuckDB over silver (right)"
