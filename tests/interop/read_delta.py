"""Reads a Sluice lake's Delta tables with an independent Delta reader (the `deltalake` package
from PyPI) and compares them with the same tables of a Parquet lake (pyarrow, hive partitions).

    python read_delta.py DELTA_LAKE PARQUET_LAKE LAYER [LAYER…]

For every table of the layers: the rows the Delta reader returns (partition columns included)
must equal the Parquet lake's as multisets. The log is checked too: every version is a JSON
commit, no file is added twice without a remove in between, and every commit of Sluice's
stream carries a `txn` of the application `sluice/<pipeline>/<instance>` with versions rising.
Prints a JSON summary; exits 1 on the first difference.
"""
import json
import os
import sys
from collections import Counter
from pathlib import Path

import pyarrow.dataset as ds
from deltalake import DeltaTable


def canonical(table):
    """Rows as sorted tuples of strings, columns by name (order and types may differ)."""
    columns = sorted(table.column_names)
    data = {c: table.column(c).to_pylist() for c in columns}
    rows = [tuple(repr(_normal(data[c][i])) for c in columns) for i in range(table.num_rows)]
    return columns, Counter(rows)


def _normal(value):
    # Partition values come back as strings from one reader and as typed values from the other.
    if value is None:
        return None
    if hasattr(value, "isoformat"):
        return value.isoformat()
    return value if isinstance(value, (int, float, bool)) else str(value)


def check_log(table_dir):
    log = sorted((table_dir / "_delta_log").glob("*.json"))
    live, txns = set(), {}
    for version, path in enumerate(log):
        assert path.name == f"{version:020}.json", f"{path}: versions are contiguous from 0"
        for line in path.read_text().splitlines():
            action = json.loads(line)
            if "add" in action:
                file = action["add"]["path"]
                assert file not in live, f"{table_dir.name}: {file} added twice"
                live.add(file)
            elif "remove" in action:
                live.discard(action["remove"]["path"])
            elif "txn" in action:
                app, v = action["txn"]["appId"], action["txn"]["version"]
                assert app.startswith("sluice/"), app
                assert v > txns.get(app, -1), f"{app}: version {v} after {txns.get(app)}"
                txns[app] = v
    return len(log), len(live), txns


def main():
    delta_lake, parquet_lake, layers = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3:]
    summary = {}
    for layer in layers:
        for table_dir in sorted(p for p in (delta_lake / layer).iterdir() if p.is_dir()):
            name = f"{layer}/{table_dir.name}"
            delta = DeltaTable(str(table_dir)).to_pyarrow_table()
            parquet = ds.dataset(parquet_lake / layer / table_dir.name, format="parquet",
                                 partitioning="hive").to_table()
            d_columns, d_rows = canonical(delta)
            p_columns, p_rows = canonical(parquet)
            if d_columns != p_columns:
                sys.exit(f"{name}: columns {d_columns} (Delta) vs {p_columns} (Parquet)")
            if d_rows != p_rows:
                only_d = sum((d_rows - p_rows).values())
                only_p = sum((p_rows - d_rows).values())
                sys.exit(f"{name}: {only_d} rows only in Delta, {only_p} only in Parquet")
            versions, files, txns = check_log(table_dir)
            summary[name] = {"rows": delta.num_rows, "versions": versions, "files": files,
                             "txn": txns}
    print(json.dumps(summary, sort_keys=True))


if __name__ == "__main__":
    try:
        main()
        status = 0
    except SystemExit as verdict:
        if isinstance(verdict.code, str):
            print(verdict.code, file=sys.stderr)
        status = verdict.code if isinstance(verdict.code, int) else 1
    sys.stdout.flush()
    sys.stderr.flush()
    # The deltalake wheel's native runtime sometimes aborts in its exit handlers ("terminate
    # called without an active exception") after the verdict is out; skip them.
    os._exit(status)
