#!/usr/bin/env python3
"""Sluice, DuckDB and Apache Spark (pyspark, local mode) on the same job, on this machine, in
one run: read EventSim JSON lines (four topics), write them as zstd Parquet partitioned by date
(bronze), apply the `clean` plugin's rules and write the result the same way (silver).

Each engine runs as a child process, measured with wait4 (wall time, user+system CPU, peak
RSS). The outputs are counted afterwards with DuckDB from the Parquet files each engine wrote,
and must agree. Results: a table on stdout, `compare.csv`, `compare-<events>.png` and `machine.txt` in
the output folder. Run through bench/compare.sh, which prepares the binaries and the virtualenv.
"""
import argparse
import csv
import datetime
import json
import os
import pathlib
import platform
import shutil
import subprocess
import statistics
import sys
import time

TOPICS = ["listen_events", "page_view_events", "auth_events", "status_change_events"]

# EventSim's fields per topic, as Sluice's built-in schema declares them (host/src/decode/schema.rs).
LOCATION = [("city", "string"), ("zip", "string"), ("state", "string"), ("userAgent", "string"),
            ("lon", "double"), ("lat", "double")]
USER = [("userId", "bigint"), ("lastName", "string"), ("firstName", "string"), ("gender", "string"),
        ("registration", "bigint")]
SONG = [("artist", "string"), ("song", "string"), ("duration", "double")]
SESSION = [("ts", "bigint"), ("sessionId", "bigint"), ("auth", "string"), ("level", "string"),
           ("itemInSession", "int")]
FIELDS = {
    "listen_events": SONG + SESSION + LOCATION + USER,
    "page_view_events": [("ts", "bigint"), ("sessionId", "bigint"), ("page", "string"), ("auth", "string"),
                         ("method", "string"), ("status", "int"), ("level", "string"),
                         ("itemInSession", "int")] + LOCATION + USER + SONG,
    "auth_events": [("ts", "bigint"), ("sessionId", "bigint"), ("level", "string"), ("itemInSession", "int")]
                   + LOCATION + USER + [("success", "boolean")],
    "status_change_events": SESSION + LOCATION + USER,
}

# The clean plugin's defaults (plugins/clean/src/lib.rs).
MIN_TS, MAX_TS = 946_684_800_000, 4_102_444_800_000
USER_REQUIRED_FOR = ["Logged In", "Cancelled"]
LOWER, UPPER = ["level"], ["state", "gender"]


# ---------------------------------------------------------------------------------------------
# The engines. Each is called in a child process: `compare.py --engine NAME INPUT OUTPUT`.

def run_duckdb(input_dir, out):
    import duckdb
    duck_types = {"string": "VARCHAR", "bigint": "BIGINT", "double": "DOUBLE", "int": "INTEGER",
                  "boolean": "BOOLEAN"}
    con = duckdb.connect()
    con.sql("SET threads = 2")
    for layer in ["bronze", "silver"]:
        pathlib.Path(out, layer).mkdir(parents=True, exist_ok=True)
    for topic in TOPICS:
        fields = FIELDS[topic]
        columns = "{" + ", ".join(f"'{n}': '{duck_types[t]}'" for n, t in fields) + "}"
        con.sql(f"""CREATE TABLE raw AS SELECT * FROM read_json('{input_dir}/{topic}.jsonl',
                    format = 'newline_delimited', columns = {columns})""")
        con.sql(f"""COPY (SELECT *, CAST(epoch_ms(ts) AS DATE) AS date FROM raw)
                    TO '{out}/bronze/{topic}' (FORMAT parquet, COMPRESSION zstd, PARTITION_BY (date))""")
        normalised = []
        for name, kind in fields:
            if kind != "string":
                normalised.append(f'"{name}"')
            elif name in LOWER:
                normalised.append(f'lower(trim("{name}")) AS "{name}"')
            elif name in UPPER:
                normalised.append(f'upper(trim("{name}")) AS "{name}"')
            else:
                normalised.append(f'trim("{name}") AS "{name}"')
        names = [n for n, _ in fields]
        checks = [f"ts IS NOT NULL AND ts BETWEEN {MIN_TS} AND {MAX_TS}"]
        if "userId" in names and "auth" in names:
            required = ", ".join(f"'{a}'" for a in USER_REQUIRED_FOR)
            checks.append(f'NOT ("userId" IS NULL AND coalesce(auth IN ({required}), false))')
        if "duration" in names:
            checks.append("coalesce(duration >= 0, true)")
        con.sql(f"""COPY (SELECT *, epoch_ms(ts) AS event_time, CAST(epoch_ms(ts) AS DATE) AS date FROM
                        (SELECT DISTINCT {", ".join(normalised)} FROM raw WHERE {" AND ".join(checks)}))
                    TO '{out}/silver/{topic}' (FORMAT parquet, COMPRESSION zstd, PARTITION_BY (date))""")
        con.sql("DROP TABLE raw")


def run_spark(input_dir, out):
    from pyspark.sql import SparkSession, functions as F, types as T
    spark_types = {"string": T.StringType(), "bigint": T.LongType(), "double": T.DoubleType(),
                   "int": T.IntegerType(), "boolean": T.BooleanType()}
    spark = (SparkSession.builder.master("local[2]").appName("sluice-bench")
             .config("spark.ui.enabled", "false")
             .config("spark.ui.showConsoleProgress", "false")
             .config("spark.driver.host", "127.0.0.1")
             .config("spark.driver.bindAddress", "127.0.0.1")
             .config("spark.sql.session.timeZone", "UTC")
             .config("spark.sql.shuffle.partitions", "2")
             .config("spark.sql.parquet.compression.codec", "zstd")
             .config("spark.driver.memory", "2g")
             .getOrCreate())
    spark.sparkContext.setLogLevel("ERROR")
    for topic in TOPICS:
        fields = FIELDS[topic]
        schema = T.StructType([T.StructField(n, spark_types[t], True) for n, t in fields])
        raw = spark.read.schema(schema).json(f"{input_dir}/{topic}.jsonl")
        date = F.to_date(F.timestamp_millis(F.col("ts")))
        raw.withColumn("date", date).write.partitionBy("date").parquet(f"{out}/bronze/{topic}")
        names = [n for n, _ in fields]
        ok = F.col("ts").isNotNull() & F.col("ts").between(MIN_TS, MAX_TS)
        if "userId" in names and "auth" in names:
            ok = ok & ~(F.col("userId").isNull() & F.coalesce(F.col("auth").isin(USER_REQUIRED_FOR), F.lit(False)))
        if "duration" in names:
            ok = ok & F.coalesce(F.col("duration") >= 0, F.lit(True))
        normalised = []
        for name, kind in fields:
            column = F.col(name)
            if kind == "string":
                column = F.trim(column)
                column = F.lower(column) if name in LOWER else F.upper(column) if name in UPPER else column
            normalised.append(column.alias(name))
        silver = (raw.filter(ok).select(*normalised).dropDuplicates()
                  .withColumn("event_time", F.timestamp_millis(F.col("ts"))).withColumn("date", date))
        silver.write.partitionBy("date").parquet(f"{out}/silver/{topic}")
    gateway = spark.sparkContext._gateway
    spark.stop()
    # Reap the JVM, so that its CPU time and memory count in this process's wait4 figures.
    gateway.shutdown()
    if getattr(gateway, "proc", None) is not None:
        gateway.proc.stdin.close()
        gateway.proc.wait()


SLUICE_PIPELINE = """name: bench
source:
  files: {{paths: ["{input}/*.jsonl"]}}
batch_rows: 8192
lake:
  uri: file://{out}
  commit_rows: 10000000
bronze: {{partition_by: [date]}}
stages:
  - name: clean
    plugin: {plugins}/clean.wasm
    layer: silver
    partition_by: [date]
"""


# ---------------------------------------------------------------------------------------------
# The harness.

def measured(command, env=None):
    """Runs a command; returns wall seconds, CPU seconds (user+system, children included) and
    peak RSS in MiB."""
    started = time.perf_counter()
    child = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL)
    _, status, usage = os.wait4(child.pid, 0)
    wall = time.perf_counter() - started
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{' '.join(map(str, command))} failed ({status})")
    return wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024


def count_rows(out):
    import duckdb
    con = duckdb.connect()
    counts = {}
    for layer in ["bronze", "silver"]:
        for topic in TOPICS:
            files = f"{out}/{layer}/{topic}/**/*.parquet"
            counts[f"{layer}.{topic}"] = con.sql(f"SELECT count(*) FROM read_parquet('{files}')").fetchone()[0]
    return counts


def machine():
    cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
    memory = next((l.split()[1] for l in open("/proc/meminfo") if l.startswith("MemTotal")), "0")
    import duckdb
    try:
        import pyspark
        spark_version = pyspark.__version__
    except ImportError:
        spark_version = None
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "cpu": cpu, "cores": os.cpu_count(), "memory_gib": round(int(memory) / 2**20, 1),
        "kernel": platform.release(), "python": platform.python_version(),
        "duckdb": duckdb.__version__, "pyspark": spark_version,
        "java": subprocess.run(["java", "-version"], capture_output=True, text=True).stderr.splitlines()[0],
    }


def chart(rows, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    engines = [r["engine"] for r in rows]
    figure, axes = plt.subplots(1, 2, figsize=(10, 4))
    axes[0].bar(engines, [r["events_per_s"] for r in rows], color=["#2f6fde", "#e0a526", "#c2452d"][:len(rows)])
    axes[0].set_title(f"events/s ({rows[0]['events']:,} events, JSON -> bronze -> silver)")
    axes[1].bar(engines, [r["peak_rss_mib"] for r in rows], color="#7a7f87")
    axes[1].set_title("peak RSS (MiB)")
    figure.tight_layout()
    figure.savefig(path, dpi=100)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--engine", nargs=2, metavar=("INPUT", "OUTPUT"), help=argparse.SUPPRESS)
    parser.add_argument("--run", choices=["duckdb", "spark"], help=argparse.SUPPRESS)
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--engines", default="sluice,duckdb,spark")
    parser.add_argument("--repeat", type=int, default=3, help="runs per engine; figures are medians")
    parser.add_argument("--sluice", required=False, help="the sluice binary")
    parser.add_argument("--plugins", required=False, help="folder with clean.wasm")
    parser.add_argument("--out", default="bench/results", help="where the CSV, chart and machine go")
    parser.add_argument("--work", help="scratch folder (default: a fresh one under /tmp)")
    args = parser.parse_args()
    if args.run:
        {"duckdb": run_duckdb, "spark": run_spark}[args.run](*args.engine)
        return

    import tempfile
    work = pathlib.Path(args.work or tempfile.mkdtemp(prefix="sluice-compare-"))
    results = pathlib.Path(args.out)
    results.mkdir(parents=True, exist_ok=True)
    input_dir = work / "input"
    shutil.rmtree(work, ignore_errors=True)
    started = time.perf_counter()
    subprocess.run([args.sluice, "gen", "--events", str(args.events), "--out", str(input_dir)],
                   check=True, stdout=subprocess.DEVNULL)
    print(f"generated {args.events:,} events as JSON lines in {time.perf_counter() - started:.1f} s "
          f"({sum(f.stat().st_size for f in input_dir.iterdir()) / 2**20:.0f} MiB)")
    engines = args.engines.split(",")
    runs = {engine: [] for engine in engines}
    counts = {}
    # Engines take turns, run after run, so that a noisy neighbour hits all of them alike;
    # each figure is the median of the runs.
    for attempt in range(1, args.repeat + 1):
        for engine in engines:
            out = work / engine
            if engine == "sluice":
                command = [args.sluice, "run", "--quiet", str(work / "sluice-bench.yaml")]
                (work / "sluice-bench.yaml").write_text(
                    SLUICE_PIPELINE.format(input=input_dir, out=out, plugins=args.plugins))
            else:
                command = [sys.executable, __file__, "--run", engine, "--engine", str(input_dir), str(out)]
            # Spark binds to loopback only, like every server this project starts.
            wall, cpu, rss = measured(command, env={**os.environ, "SPARK_LOCAL_IP": "127.0.0.1"})
            found = count_rows(out)
            if counts.setdefault(engine, found) != found:
                raise SystemExit(f"{engine} wrote other row counts in run {attempt}: {found} vs {counts[engine]}")
            runs[engine].append((wall, cpu, rss))
            print(f"{engine:>7} run {attempt}: {wall:7.2f} s wall, {args.events / wall:>10,.0f} events/s, "
                  f"{cpu:7.2f} s CPU, {rss:6.0f} MiB peak RSS")
            shutil.rmtree(out, ignore_errors=True)
    rows = []
    for engine in engines:
        wall, cpu, rss = (statistics.median(run[i] for run in runs[engine]) for i in range(3))
        rows.append({"engine": engine, "events": args.events, "runs": args.repeat, "wall_s": round(wall, 2),
                     "events_per_s": round(args.events / wall), "events_per_s_per_core": round(args.events / wall / os.cpu_count()),
                     "cpu_s": round(cpu, 2), "events_per_cpu_s": round(args.events / cpu) if cpu else 0,
                     "peak_rss_mib": round(rss)})
    base = rows[0]
    for row in rows:
        row[f"speed_vs_{base['engine']}"] = round(row["events_per_s"] / base["events_per_s"], 3)
    reference = counts[base["engine"]]
    agree = all(c == reference for c in counts.values())
    print("\nrows per layer and topic:")
    for key in reference:
        print(f"  {key:<32}" + "".join(f"{counts[e][key]:>12,}" for e in counts))
    print(f"\nmedians of {args.repeat} run(s):")
    print("\n| engine | wall s | events/s | events/s per core | CPU s | peak RSS MiB | speed vs " + base["engine"] + " |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['engine']} | {r['wall_s']} | {r['events_per_s']:,} | {r['events_per_s_per_core']:,} | {r['cpu_s']} | {r['peak_rss_mib']} | {r[f'speed_vs_' + base['engine']]} |")
    stamp = machine()
    (results / "machine.txt").write_text(json.dumps(stamp, indent=2) + "\n")
    fresh = not (results / "compare.csv").exists()
    with open(results / "compare.csv", "a", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["date", "cores"] + list(rows[0].keys()) + ["outputs_agree"], extrasaction="ignore")
        if fresh:
            writer.writeheader()
        for r in rows:
            writer.writerow({"date": stamp["date"], "cores": stamp["cores"], **r, "outputs_agree": agree})
    size = f"{args.events // 1_000_000}M" if args.events % 1_000_000 == 0 else str(args.events)
    chart(rows, results / f"compare-{size}.png")
    print(f"\nresults in {results}/ (compare.csv, compare-{size}.png, machine.txt)")
    if not agree:
        raise SystemExit("the engines' outputs do not agree (see the row counts above)")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
