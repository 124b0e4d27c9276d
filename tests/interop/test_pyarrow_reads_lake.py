"""An independent reader (pyarrow) reads the lake the `sluice` binary wrote, hive partitions
and all, and finds exactly the events `sluice gen` produces for the same seed."""
import json
import os
import pathlib
import subprocess

import pyarrow.compute as pc
import pyarrow.dataset as ds
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
SLUICE = os.environ.get("SLUICE_BIN", str(ROOT / "target/debug/sluice"))
TOPICS = ["listen_events", "page_view_events", "auth_events", "status_change_events"]
EVENTS = 20_000


def sluice(*args, **env):
    result = subprocess.run([SLUICE, *args], cwd=ROOT, env={**os.environ, **env}, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    return result.stdout


@pytest.fixture(scope="module")
def lake(tmp_path_factory):
    lake = tmp_path_factory.mktemp("lake")
    sluice("run", "--quiet", "pipelines/quickstart.yaml", SLUICE_LAKE=f"file://{lake}", SLUICE_EVENTS=str(EVENTS), SLUICE_SEED="42")
    return lake


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    out = tmp_path_factory.mktemp("gen")
    sluice("gen", "--events", str(EVENTS), "--seed", "42", "--users", "1000", "--out", str(out))
    return {t: [json.loads(line) for line in (out / f"{t}.jsonl").read_text().splitlines()] for t in TOPICS}


def table(lake, layer, topic):
    return ds.dataset(lake / layer / topic, format="parquet", partitioning="hive").to_table()


def test_bronze_holds_exactly_the_generated_events(lake, generated):
    for topic in TOPICS:
        bronze = table(lake, "bronze", topic)
        expected = generated[topic]
        assert bronze.num_rows == len(expected), topic
        assert pc.sum(bronze["ts"]).as_py() == sum(e["ts"] for e in expected), topic
        assert pc.sum(bronze["sessionId"]).as_py() == sum(e["sessionId"] for e in expected), topic
        assert sorted(bronze["userId"].drop_null().to_pylist()) == sorted(e["userId"] for e in expected if "userId" in e), topic
        # Hive partitions are columns to the reader.
        assert {"date", "hour"} <= set(bronze.column_names), bronze.column_names
    songs = table(lake, "bronze", "listen_events")["song"].to_pylist()
    assert sorted(songs) == sorted(e["song"] for e in generated["listen_events"])


def test_silver_and_rejects_add_up_to_bronze(lake):
    offsets = []
    for topic in TOPICS:
        bronze = table(lake, "bronze", topic)
        silver = table(lake, "silver", topic)
        rejects_dir = lake / "_rejects" / topic
        rejects = ds.dataset(rejects_dir, format="parquet", partitioning="hive").to_table().num_rows if rejects_dir.exists() else 0
        assert silver.num_rows + rejects == bronze.num_rows, topic
        assert str(silver.schema.field("event_time").type) == "timestamp[ms, tz=UTC]"
        offsets += bronze["_offset"].to_pylist()
    assert sorted(offsets) == list(range(EVENTS))
