"""The gold layer in SQL: the sessionize and kpis plugins' tables computed over silver, written
once for DuckDB and Spark SQL. Used by the interop test (gold equals this SQL over Sluice's
silver) and by the benchmark (DuckDB and Spark run this SQL as their gold job).

Every query reads views named after the silver topics (`listen_events`, `page_view_events`,
`auth_events`, `status_change_events`); the KPI queries read a `sessions` view too, made from
`SESSIONS`. Identifiers are unquoted and case-insensitive in both engines; `{ms}` is the
engine's epoch-milliseconds-to-timestamp function.
"""

DIALECTS = {"duckdb": "epoch_ms", "spark": "timestamp_millis"}

GAP_MS = 30 * 60 * 1000  # the sessionize plugin's default inactivity gap

# Per-user sessions of page views: a new session starts after more than GAP_MS without events.
SESSIONS = f"""WITH e AS (SELECT userId, ts, page, duration FROM page_view_events WHERE userId IS NOT NULL),
    g AS (SELECT *, CASE WHEN ts - LAG(ts) OVER (PARTITION BY userId ORDER BY ts) <= {GAP_MS} THEN 0 ELSE 1 END AS starts FROM e),
    n AS (SELECT *, SUM(starts) OVER (PARTITION BY userId ORDER BY ts ROWS UNBOUNDED PRECEDING) AS session FROM g)
    SELECT userId, MIN(ts) AS session_start, MAX(ts) AS session_end,
        CAST(MAX(ts) - MIN(ts) AS DOUBLE) / 1000 AS duration_s, COUNT(*) AS events,
        SUM(CASE WHEN page = 'NextSong' THEN 1 ELSE 0 END) AS songs,
        SUM(CASE WHEN page = 'NextSong' THEN COALESCE(duration, 0) ELSE 0 END) AS listen_seconds
    FROM n GROUP BY userId, session"""

_KPIS = {
    "daily_active_users": """WITH e AS (SELECT ts, userId, level FROM listen_events UNION ALL SELECT ts, userId, level FROM page_view_events
        UNION ALL SELECT ts, userId, level FROM auth_events UNION ALL SELECT ts, userId, level FROM status_change_events)
        SELECT {date} AS date, level, COUNT(DISTINCT userId) AS users FROM e WHERE userId IS NOT NULL GROUP BY 1, 2""",
    "streams_per_hour": "SELECT {date} AS date, hour({ms}(ts)) AS hour, COUNT(*) AS streams FROM listen_events GROUP BY 1, 2",
    "top_songs": """SELECT date, rank, artist, song, plays FROM (SELECT date, artist, song, plays,
        ROW_NUMBER() OVER (PARTITION BY date ORDER BY plays DESC, artist, song) AS rank FROM
        (SELECT {date} AS date, artist, song, COUNT(*) AS plays FROM listen_events GROUP BY 1, 2, 3) t) r WHERE rank <= 10""",
    "top_artists": """SELECT date, rank, artist, plays FROM (SELECT date, artist, plays,
        ROW_NUMBER() OVER (PARTITION BY date ORDER BY plays DESC, artist) AS rank FROM
        (SELECT {date} AS date, artist, COUNT(*) AS plays FROM listen_events GROUP BY 1, 2) t) r WHERE rank <= 10""",
    "listening_by_state": """SELECT {date} AS date, state, level, SUM(duration) AS listen_seconds, COUNT(*) AS plays
        FROM listen_events GROUP BY 1, 2, 3""",
    "sessions_per_day": """SELECT CAST({ms}(session_start) AS DATE) AS date, COUNT(*) AS sessions,
        AVG(duration_s) AS mean_duration_s, MEDIAN(duration_s) AS median_duration_s,
        AVG(CAST(songs AS DOUBLE)) AS songs_per_session FROM sessions GROUP BY 1""",
    "subscriptions_per_day": """WITH d AS (SELECT {date} AS date FROM listen_events UNION SELECT {date} FROM page_view_events
        UNION SELECT {date} FROM auth_events UNION SELECT {date} FROM status_change_events),
        c AS (SELECT {date} AS date, SUM(CASE WHEN level = 'free' THEN 1 ELSE 0 END) AS up,
            SUM(CASE WHEN level = 'paid' THEN 1 ELSE 0 END) AS down FROM status_change_events GROUP BY 1),
        p AS (SELECT {date} AS date, SUM(CASE WHEN page = 'Cancellation Confirmation' THEN 1 ELSE 0 END) AS cancel,
            SUM(CASE WHEN page = 'Submit Registration' THEN 1 ELSE 0 END) AS reg FROM page_view_events GROUP BY 1)
        SELECT d.date, COALESCE(c.up, 0) AS upgrades, COALESCE(c.down, 0) AS downgrades,
            COALESCE(p.cancel, 0) AS cancellations, COALESCE(p.reg, 0) AS registrations
        FROM d LEFT JOIN c ON d.date = c.date LEFT JOIN p ON d.date = p.date""",
}

KPIS = list(_KPIS)

# How two engines' gold tables are compared: these columns, floats rounded to 6 decimals, all
# rows in order. `sessions` compares by totals (its text columns depend on tie order).
COMPARED = {
    "daily_active_users": "date, level, users",
    "streams_per_hour": "date, hour, streams",
    "top_songs": "date, rank, artist, song, plays",
    "top_artists": "date, rank, artist, plays",
    "listening_by_state": "date, state, level, ROUND(listen_seconds, 6), plays",
    "sessions_per_day": "date, sessions, ROUND(mean_duration_s, 6), ROUND(median_duration_s, 6), ROUND(songs_per_session, 6)",
    "subscriptions_per_day": "date, upgrades, downgrades, cancellations, registrations",
    "sessions": "COUNT(*), SUM(events), SUM(songs), ROUND(SUM(listen_seconds), 3), ROUND(SUM(duration_s), 3)",
}


def kpi_query(table, engine):
    """The SQL of one KPI table in `engine`'s dialect ("duckdb" or "spark")."""
    ms = DIALECTS[engine]
    return _KPIS[table].format(ms=ms, date=f"CAST({ms}(ts) AS DATE)")


def compared(table, source):
    """The query that reduces `source` (a table or view of `table`'s rows) to what is compared."""
    columns = COMPARED[table]
    order = "" if table == "sessions" else " ORDER BY ALL"
    return f"SELECT {columns} FROM {source}{order}"
