#!/usr/bin/env python3
"""Sluice, DuckDB and Apache Spark (pyspark, local mode) on the same jobs, on this machine, in
one run. Job `silver`: read EventSim JSON lines (four topics), write them as zstd Parquet
partitioned by date (bronze), apply the `clean` plugin's rules and write the result the same
way (silver). Job `clean`: the same without bronze (JSON -> clean -> zstd Parquet, the
pipeline the per-core target of issue 8 names). Job `gold`: the same as `silver`, then the
gold layer from silver: per-user sessions (the `sessionize` plugin) and the seven KPI tables
(the `kpis` plugin; DuckDB and Spark run the SQL of tests/interop/kpi_sql.py).

Each engine runs as a child process, measured with wait4 (wall time, user+system CPU, peak
RSS). The outputs are read afterwards with DuckDB from the Parquet files each engine wrote:
row counts per layer and topic, and every gold table's values, must agree. Results: a table
per job on stdout, `compare.csv`, `compare-<events>.png` and `machine.txt` in the output
folder. Run through bench/compare.sh, which prepares the binaries and the virtualenv.
"""
import argparse
import csv
import datetime
import itertools
import json
import os
import pathlib
import platform
import shutil
import subprocess
import statistics
import sys
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "tests/interop"))
from kpi_sql import COMPARED, KPIS, SESSIONS, compared, kpi_query  # noqa: E402

JOBS = ["clean", "silver", "gold"]
# The lake layers each job writes from the input; gold's tables are compared value by value.
LAYERS = {"clean": ["silver"], "silver": ["bronze", "silver"], "gold": ["bronze", "silver"]}
TOPICS = ["listen_events", "page_view_events", "auth_events", "status_change_events"]


def writes_bronze(job):
    return "bronze" in LAYERS[job]


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

def run_duckdb(input_dir, out, job):
    import duckdb
    duck_types = {"string": "VARCHAR", "bigint": "BIGINT", "double": "DOUBLE", "int": "INTEGER",
                  "boolean": "BOOLEAN"}
    con = duckdb.connect()
    con.sql("SET threads = 2")
    bronze = writes_bronze(job)
    # Read once into a table when two layers come from it; a view streams it into one.
    relation = "TABLE" if bronze else "VIEW"
    for layer in LAYERS[job]:
        pathlib.Path(out, layer).mkdir(parents=True, exist_ok=True)
    for topic in TOPICS:
        fields = FIELDS[topic]
        columns = "{" + ", ".join(f"'{n}': '{duck_types[t]}'" for n, t in fields) + "}"
        con.sql(f"""CREATE {relation} raw AS SELECT * FROM read_json('{input_dir}/{topic}.jsonl',
                    format = 'newline_delimited', columns = {columns})""")
        if bronze:
            con.sql(f"""COPY (SELECT *, CAST(epoch_ms(ts) AS DATE) AS date FROM raw)
                        TO '{out}/bronze/{topic}' (FORMAT parquet, COMPRESSION zstd, COMPRESSION_LEVEL {ZSTD_LEVEL}, PARTITION_BY (date))""")
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
                    TO '{out}/silver/{topic}' (FORMAT parquet, COMPRESSION zstd, COMPRESSION_LEVEL {ZSTD_LEVEL}, PARTITION_BY (date))""")
        con.sql(f"DROP {relation} raw")
    if job == "gold":
        pathlib.Path(out, "gold").mkdir(parents=True, exist_ok=True)
        for topic in TOPICS:
            con.sql(f"CREATE VIEW {topic} AS SELECT * FROM read_parquet('{out}/silver/{topic}/**/*.parquet')")
        con.sql(f"CREATE TABLE sessions AS {SESSIONS}")
        tables = {"sessions": "SELECT * FROM sessions", **{t: kpi_query(t, "duckdb") for t in KPIS}}
        for table, sql in tables.items():
            pathlib.Path(out, "gold", table).mkdir()
            con.sql(f"COPY ({sql}) TO '{out}/gold/{table}/data.parquet' (FORMAT parquet, COMPRESSION zstd, COMPRESSION_LEVEL {ZSTD_LEVEL})")


def run_spark(input_dir, out, job):
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
             .config("spark.hadoop.parquet.compression.codec.zstd.level", str(ZSTD_LEVEL))
             .config("spark.driver.memory", "2g")
             .getOrCreate())
    spark.sparkContext.setLogLevel("ERROR")
    for topic in TOPICS:
        fields = FIELDS[topic]
        schema = T.StructType([T.StructField(n, spark_types[t], True) for n, t in fields])
        raw = spark.read.schema(schema).json(f"{input_dir}/{topic}.jsonl")
        date = F.to_date(F.timestamp_millis(F.col("ts")))
        if writes_bronze(job):
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
    if job == "gold":
        for topic in TOPICS:
            spark.read.parquet(f"{out}/silver/{topic}").createOrReplaceTempView(topic)
        sessions = spark.sql(SESSIONS).cache()
        sessions.createOrReplaceTempView("sessions")
        sessions.coalesce(1).write.parquet(f"{out}/gold/sessions")
        for table in KPIS:
            spark.sql(kpi_query(table, "spark")).coalesce(1).write.parquet(f"{out}/gold/{table}")
    gateway = spark.sparkContext._gateway
    spark.stop()
    # Reap the JVM, so that its CPU time and memory count in this process's wait4 figures.
    gateway.shutdown()
    if getattr(gateway, "proc", None) is not None:
        gateway.proc.stdin.close()
        gateway.proc.wait()


# Every engine writes zstd at this level: Sluice's default (dictionary and RLE encoding leave
# zstd little to find, level 3 made Sluice's lake 0.4 % smaller for 6 % more CPU); DuckDB and
# Spark default to 3.
ZSTD_LEVEL = 1

SLUICE_PIPELINE = """name: bench
source:
  files: {{paths: ["{input}/*.jsonl"]}}
batch_rows: 8192
lake:
  uri: file://{out}
  commit_rows: 10000000
  zstd_level: {zstd_level}
{bronze}stages:
  - name: clean
    plugin: {plugins}/clean.wasm
    layer: silver
    partition_by: [date]
"""

SLUICE_GOLD = """  - name: sessionize
    plugin: {plugins}/sessionize.wasm
    topics: [page_view_events]
    layer: gold
    write: [sessions]
  - name: kpis
    plugin: {plugins}/kpis.wasm
    layer: gold
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


def outputs(out, job):
    """What an engine wrote: rows per layer and topic, and (job gold) each gold table's values
    as kpi_sql.compared reduces them."""
    import duckdb
    con = duckdb.connect()
    found = {}
    for layer in LAYERS[job]:
        for topic in TOPICS:
            files = f"{out}/{layer}/{topic}/**/*.parquet"
            found[f"{layer}.{topic}"] = con.sql(f"SELECT count(*) FROM read_parquet('{files}')").fetchone()[0]
    if job == "gold":
        for table in COMPARED:
            source = f"read_parquet('{out}/gold/{table}/**/*.parquet')"
            found[f"gold.{table}"] = [tuple(row) for row in con.sql(compared(table, source)).fetchall()]
    return found


def summary(key, value):
    """A row count as it is; a gold table by its number of rows (`sessions`: of sessions)."""
    if isinstance(value, int):
        return f"{value:,}"
    return f"{value[0][0]:,} sessions" if key == "gold.sessions" else f"{len(value)} rows"


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
    jobs = list(dict.fromkeys(r["job"] for r in rows))
    engines = list(dict.fromkeys(r["engine"] for r in rows))
    colours = dict(zip(engines, ["#2f6fde", "#e0a526", "#c2452d"]))
    width = 0.8 / len(engines)
    figure, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    for i, engine in enumerate(engines):
        mine = {r["job"]: r for r in rows if r["engine"] == engine}
        at = [j + (i - (len(engines) - 1) / 2) * width for j in range(len(jobs))]
        axes[0].bar(at, [mine[j]["events_per_s"] for j in jobs], width, label=engine, color=colours[engine])
        axes[1].bar(at, [mine[j]["peak_rss_mib"] for j in jobs], width, label=engine, color=colours[engine])
    labels = {"clean": "JSON -> clean\n-> silver", "silver": "JSON -> bronze\n-> silver",
              "gold": "... -> gold\n(sessions, KPIs)"}
    for axis, title in zip(axes, [f"events/s ({rows[0]['events']:,} events)", "peak RSS (MiB)"]):
        axis.set_xticks(range(len(jobs)), [labels.get(j, j) for j in jobs])
        axis.set_title(title)
        axis.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=100)


def append_csv(path, rows):
    """Appends `rows` to the CSV at `path`, rewriting it first when its columns are older ones
    (rows from before the gold job were all job `silver`)."""
    fields = list(rows[0].keys())
    old = []
    if path.exists():
        with open(path, newline="") as f:
            reader = csv.DictReader(f)
            if reader.fieldnames != fields:
                old = [{"job": "silver", "speed_vs_first": row.get("speed_vs_sluice"), **row} for row in reader]
    if old:
        with open(path, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=fields, extrasaction="ignore")
            writer.writeheader()
            writer.writerows(old)
    fresh = not path.exists()
    with open(path, "a", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        if fresh:
            writer.writeheader()
        writer.writerows(rows)


def sluice_pipeline(job, input_dir, out, plugins):
    """The pipeline YAML of `job` for Sluice."""
    text = SLUICE_PIPELINE + (SLUICE_GOLD if job == "gold" else "")
    bronze = "bronze: {partition_by: [date]}\n" if writes_bronze(job) else ""
    return text.format(input=input_dir, out=out, plugins=plugins, zstd_level=ZSTD_LEVEL, bronze=bronze)


def warm_up_sluice(args, work):
    """One untimed run of the whole chain over a few events: a plugin built since the last run
    is compiled to native code then, as a deployment does once, and not in the first timed run
    (it took that run from 3.3 s to 6.1 s)."""
    sample = work / "warm-up-input"
    sample.mkdir(parents=True, exist_ok=True)
    for topic in (work / "input").iterdir():
        with topic.open() as lines, (sample / topic.name).open("w") as head:
            head.writelines(itertools.islice(lines, 1000))
    pipeline = work / "sluice-warm-up.yaml"
    out = work / "warm-up-lake"
    pipeline.write_text(sluice_pipeline("gold", sample, out, args.plugins))
    started = time.perf_counter()
    subprocess.run([args.sluice, "run", "--quiet", str(pipeline)], check=True, stdout=subprocess.DEVNULL)
    print(f"warm-up: Sluice's plugins loaded (and compiled, when new) in {time.perf_counter() - started:.1f} s, untimed")
    shutil.rmtree(out, ignore_errors=True)
    shutil.rmtree(sample, ignore_errors=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--engine", nargs=3, metavar=("JOB", "INPUT", "OUTPUT"), help=argparse.SUPPRESS)
    parser.add_argument("--run", choices=["duckdb", "spark"], help=argparse.SUPPRESS)
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--engines", default="sluice,duckdb,spark")
    parser.add_argument("--jobs", default=",".join(JOBS), help="any of clean, silver, gold, comma-separated")
    parser.add_argument("--repeat", type=int, default=3, help="runs per engine; figures are medians")
    parser.add_argument("--sluice", required=False, help="the sluice binary")
    parser.add_argument("--plugins", required=False, help="folder with clean.wasm, sessionize.wasm, kpis.wasm")
    parser.add_argument("--out", default="bench/results", help="where the CSV, chart and machine go")
    parser.add_argument("--work", help="scratch folder (default: a fresh one under /tmp)")
    args = parser.parse_args()
    if args.run:
        {"duckdb": run_duckdb, "spark": run_spark}[args.run](args.engine[1], args.engine[2], args.engine[0])
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
    jobs = args.jobs.split(",")
    if "sluice" in engines:
        warm_up_sluice(args, work)
    runs = {(job, engine): [] for job in jobs for engine in engines}
    found = {}
    # Engines take turns, run after run, so that a noisy neighbour hits all of them alike;
    # each figure is the median of the runs.
    for attempt in range(1, args.repeat + 1):
        for job in jobs:
            for engine in engines:
                out = work / engine
                if engine == "sluice":
                    pipeline = work / f"sluice-{job}.yaml"
                    pipeline.write_text(sluice_pipeline(job, input_dir, out, args.plugins))
                    command = [args.sluice, "run", "--quiet", str(pipeline)]
                else:
                    command = [sys.executable, __file__, "--run", engine, "--engine", job, str(input_dir), str(out)]
                # Spark binds to loopback only, like every server this project starts.
                wall, cpu, rss = measured(command, env={**os.environ, "SPARK_LOCAL_IP": "127.0.0.1"})
                wrote = outputs(out, job)
                if found.setdefault((job, engine), wrote) != wrote:
                    raise SystemExit(f"{engine} wrote other outputs for job {job} in run {attempt}")
                runs[(job, engine)].append((wall, cpu, rss))
                print(f"{job:>6} {engine:>7} run {attempt}: {wall:7.2f} s wall, {args.events / wall:>10,.0f} events/s, "
                      f"{cpu:7.2f} s CPU, {rss:6.0f} MiB peak RSS")
                shutil.rmtree(out, ignore_errors=True)
    rows = []
    agree = True
    for job in jobs:
        job_rows = []
        for engine in engines:
            wall, cpu, rss = (statistics.median(run[i] for run in runs[(job, engine)]) for i in range(3))
            job_rows.append({"job": job, "engine": engine, "events": args.events, "runs": args.repeat,
                             "wall_s": round(wall, 2), "events_per_s": round(args.events / wall),
                             "events_per_s_per_core": round(args.events / wall / os.cpu_count()),
                             "cpu_s": round(cpu, 2), "events_per_cpu_s": round(args.events / cpu) if cpu else 0,
                             "peak_rss_mib": round(rss)})
        base = job_rows[0]
        for row in job_rows:
            row["speed_vs_first"] = round(row["events_per_s"] / base["events_per_s"], 3)
        reference = found[(job, base["engine"])]
        print(f"\njob {job}: what each engine wrote (rows per layer and topic; gold tables compared value by value)")
        print(f"  {'':<34}" + "".join(f"{e:>22}" for e in engines))
        for key in reference:
            marks = "".join(f"{summary(key, found[(job, e)][key]) + ('' if found[(job, e)][key] == reference[key] else ' DIFFERS'):>22}"
                            for e in engines)
            print(f"  {key:<34}{marks}")
        job_agrees = all(found[(job, e)] == reference for e in engines)
        agree = agree and job_agrees
        print(f"\njob {job}, medians of {args.repeat} run(s):")
        print(f"\n| engine | wall s | events/s | events/s per core | CPU s | peak RSS MiB | speed vs {base['engine']} |")
        print("|---|---|---|---|---|---|---|")
        for r in job_rows:
            print(f"| {r['engine']} | {r['wall_s']} | {r['events_per_s']:,} | {r['events_per_s_per_core']:,} | {r['cpu_s']} | {r['peak_rss_mib']} | {r['speed_vs_first']} |")
        for row in job_rows:
            row["outputs_agree"] = job_agrees
        rows += job_rows
    stamp = machine()
    (results / "machine.txt").write_text(json.dumps(stamp, indent=2) + "\n")
    append_csv(results / "compare.csv", [{"date": stamp["date"], "cores": stamp["cores"], **r} for r in rows])
    size = f"{args.events // 1_000_000}M" if args.events % 1_000_000 == 0 else str(args.events)
    chart(rows, results / f"compare-{size}.png")
    print(f"\nresults in {results}/ (compare.csv, compare-{size}.png, machine.txt)")
    if not agree:
        raise SystemExit("the engines' outputs do not agree (see DIFFERS above)")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
