"""Rows per `layer/table` of a lake folder, read by pyarrow as hive-partitioned datasets.

    python count_rows.py LAKE_DIR    → JSON {"bronze/listen_events": 123, ...} on stdout

Used by host/tests/hdfs.rs on a lake copied out of HDFS: an independent reader must see the
rows Sluice wrote, partition columns included.
"""
import json
import sys
from pathlib import Path

import pyarrow.dataset as ds

lake = Path(sys.argv[1])
counts = {}
for layer in ("bronze", "silver", "gold"):
    for table in sorted(p for p in (lake / layer).iterdir() if p.is_dir()):
        rows = ds.dataset(table, format="parquet", partitioning="hive").to_table()
        counts[f"{layer}/{table.name}"] = rows.num_rows
print(json.dumps(counts))
