"""Every gold table equals the same table computed independently with DuckDB SQL over the
silver layer (kpi_sql.py, which the benchmark runs in DuckDB and Spark too): the KPIs row by
row, the sessions by their totals. Counts compare exactly; float sums and means are rounded
to 6 decimals on both sides."""
import os
import pathlib
import subprocess

import duckdb
import pytest

from kpi_sql import COMPARED, KPIS, SESSIONS, compared, kpi_query

ROOT = pathlib.Path(__file__).resolve().parents[2]
SLUICE = os.environ.get("SLUICE_BIN", str(ROOT / "target/debug/sluice"))
PLUGINS = pathlib.Path(os.environ.get("SLUICE_PLUGIN_DIR", ROOT / "target/plugins")).resolve()
TOPICS = ["listen_events", "page_view_events", "auth_events", "status_change_events"]


# The generator interleaves the topics as a stream does; `sluice gen` files hold one topic
# each, covering the same days, and are read one after another.
@pytest.fixture(scope="module", params=["generator", "files"])
def db(tmp_path_factory, request):
    tmp = tmp_path_factory.mktemp("kpis")
    if request.param == "generator":
        source = "generator: {events: 150000, users: 300}"
    else:
        subprocess.run([SLUICE, "gen", "--events", "150000", "--users", "300", "--to", str(tmp / "input")],
                       check=True, capture_output=True)
        source = f"files: {{paths: [\"{tmp}/input/*.jsonl\"]}}"
    pipeline = tmp / "p.yaml"
    pipeline.write_text(f"""name: kpis
source:
  {source}
batch_rows: 4096
lake:
  uri: file://{tmp}/lake
  commit_rows: 50000
bronze: {{}}
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
    if request.param == "files":
        # Rebuilt from bronze, the files' gold is what the stream wrote: the checks below
        # read the backfill's silver and gold.
        result = subprocess.run([SLUICE, "backfill", str(pipeline), "--from", "bronze"], cwd=ROOT,
                                capture_output=True, text=True)
        assert result.returncode == 0, result.stderr
    con = duckdb.connect()
    lake = tmp / "lake"
    for topic in TOPICS:
        con.sql(f"CREATE VIEW {topic} AS SELECT * FROM read_parquet('{lake}/silver/{topic}/**/*.parquet')")
    con.sql(f"CREATE VIEW sessions AS {SESSIONS}")
    for table in COMPARED:
        con.sql(f"CREATE VIEW gold_{table} AS SELECT * FROM read_parquet('{lake}/gold/{table}/**/*.parquet')")
    for table in KPIS:
        con.sql(f"CREATE VIEW sql_{table} AS {kpi_query(table, 'duckdb')}")
    con.sql("CREATE VIEW sql_sessions AS SELECT * FROM sessions")
    return con


def test_the_run_covers_several_days(db):
    assert db.sql("SELECT COUNT(*) FROM gold_subscriptions_per_day").fetchone()[0] >= 2


@pytest.mark.parametrize("table", list(COMPARED))
def test_gold_equals_duckdb_over_silver(db, table):
    gold = [tuple(row) for row in db.sql(compared(table, f"gold_{table}")).fetchall()]
    expected = [tuple(row) for row in db.sql(compared(table, f"sql_{table}")).fetchall()]
    assert gold[0][0] > 0 if table == "sessions" else len(gold) >= 2, f"{table} is empty"
    assert gold == expected, f"{table}: gold (left) differs from DuckDB over silver (right)"
