//! `sessionize`: per-user event-time sessions with an inactivity gap (default 30 minutes).
//!
//! Input: events with `userId` and `ts` (epoch ms), optionally `page`, `duration`, `level`,
//! `city`, `state`. Events without a user are not part of any user session and are ignored.
//! Output `sessions`: one row per closed session, emitted when the watermark passes the
//! session's last event plus the gap (so no event that could still extend it is outstanding).
//! Every other input row is passed on unchanged on `out`, so later stages see the events too.
//! Events older than the watermark are rejected with reason `late`. Input may be out of order
//! within the allowed lateness: an event can extend a session backwards or join two.
//! State: only the open sessions (bounded by active users, not by history).
use foldhash::fast::FixedState;
use serde::{Deserialize, Serialize};
use sluice_sdk::arrow_array::builder::{
    Float64Builder, Int64Builder, StringBuilder, TimestampMillisecondBuilder,
};
use sluice_sdk::prelude::*;
use std::collections::HashMap;
use std::sync::Arc;

pub const SESSIONS: &str = "sessions";

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SessionizeConfig {
    /// Inactivity that ends a session, in milliseconds.
    pub gap_ms: i64,
}

impl Default for SessionizeConfig {
    fn default() -> Self {
        SessionizeConfig {
            gap_ms: 30 * 60 * 1000,
        }
    }
}

/// A session being built: aggregates plus the attributes of its first and last event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Session {
    pub user: i64,
    pub start: i64,
    pub end: i64,
    pub events: i64,
    pub songs: i64,
    pub listen_seconds: f64,
    pub level_start: Option<String>,
    pub level_end: Option<String>,
    pub city: Option<String>,
    pub state: Option<String>,
    pub first_page: Option<String>,
    pub last_page: Option<String>,
}

impl Session {
    fn merge(&mut self, other: Session) {
        if other.start < self.start {
            self.start = other.start;
            self.level_start = other.level_start;
            self.city = other.city;
            self.state = other.state;
            self.first_page = other.first_page;
        }
        if other.end >= self.end {
            self.end = other.end;
            self.level_end = other.level_end;
            self.last_page = other.last_page;
        }
        self.events += other.events;
        self.songs += other.songs;
        self.listen_seconds += other.listen_seconds;
    }

    /// `self.merge(event.session())` with `event` as the base, as `add` merges: the event's
    /// attributes win a tie on the start, the session's a tie on the end.
    fn extend(&mut self, event: &Event<'_>) {
        if event.ts <= self.start {
            self.start = event.ts;
            assign(&mut self.level_start, event.level);
            assign(&mut self.city, event.city);
            assign(&mut self.state, event.state);
            assign(&mut self.first_page, event.page);
        }
        if event.ts > self.end {
            self.end = event.ts;
            assign(&mut self.level_end, event.level);
            assign(&mut self.last_page, event.page);
        }
        self.events += 1;
        self.songs += event.played as i64;
        self.listen_seconds += event.seconds;
    }
}

/// One input row, borrowing its strings from the batch.
struct Event<'a> {
    user: i64,
    ts: i64,
    played: bool,
    seconds: f64,
    level: Option<&'a str>,
    page: Option<&'a str>,
    city: Option<&'a str>,
    state: Option<&'a str>,
}

impl Event<'_> {
    fn session(&self) -> Session {
        let owned = |s: Option<&str>| s.map(str::to_string);
        Session {
            user: self.user,
            start: self.ts,
            end: self.ts,
            events: 1,
            songs: self.played as i64,
            listen_seconds: self.seconds,
            level_start: owned(self.level),
            level_end: owned(self.level),
            city: owned(self.city),
            state: owned(self.state),
            first_page: owned(self.page),
            last_page: owned(self.page),
        }
    }
}

/// Overwrites `to` with `from`, reusing its allocation.
fn assign(to: &mut Option<String>, from: Option<&str>) {
    match (to.as_mut(), from) {
        (Some(to), Some(from)) => {
            to.clear();
            to.push_str(from);
        }
        (_, from) => *to = from.map(str::to_string),
    }
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct State {
    /// Open sessions per user, sorted by start and more than a gap apart. Hashed: every
    /// event looks its user up (closed sessions are sorted when they are emitted).
    open: HashMap<i64, Vec<Session>, FixedState>,
    watermark: Option<i64>,
}

pub struct Sessionize {
    config: SessionizeConfig,
    state: State,
}

impl Sessionize {
    /// Adds one event, merging every open session of the user it falls within a gap of.
    fn add(&mut self, event: Event<'_>) {
        let gap = self.config.gap_ms;
        let sessions = self.state.open.entry(event.user).or_default();
        let touches = |s: &Session| event.ts <= s.end + gap && s.start <= event.ts + gap;
        // Nearly every event extends the one session of its user it touches: update that in
        // place, without building (and allocating the strings of) a session for the event.
        // Open sessions are more than a gap apart, so a session extended by an event that
        // touched only it cannot reach another one.
        let mut touching = sessions.iter().enumerate().filter(|(_, s)| touches(s));
        if let (Some((at, _)), None) = (touching.next(), touching.next()) {
            sessions[at].extend(&event);
            return;
        }
        let mut merged = event.session();
        sessions.retain(|s| {
            let touches = merged.start <= s.end + gap && s.start <= merged.end + gap;
            if touches {
                merged.merge(s.clone());
            }
            !touches
        });
        let at = sessions.partition_point(|s| s.start < merged.start);
        sessions.insert(at, merged);
    }

    /// Removes and returns the sessions no event at or after `watermark` can extend.
    fn close(&mut self, watermark: i64) -> Vec<Session> {
        let gap = self.config.gap_ms;
        let mut closed = Vec::new();
        self.state.open.retain(|_, sessions| {
            sessions.retain(|s| {
                let done = watermark == i64::MAX || s.end.saturating_add(gap) < watermark;
                if done {
                    closed.push(s.clone());
                }
                !done
            });
            !sessions.is_empty()
        });
        closed.sort_by_key(|s| (s.start, s.user));
        closed
    }

    pub fn open_sessions(&self) -> usize {
        self.state.open.values().map(Vec::len).sum()
    }
}

pub fn sessions_batch(sessions: &[Session]) -> Result<RecordBatch, PluginError> {
    let n = sessions.len();
    let mut user = Int64Builder::with_capacity(n);
    let mut start = TimestampMillisecondBuilder::with_capacity(n).with_timezone("UTC");
    let mut end = TimestampMillisecondBuilder::with_capacity(n).with_timezone("UTC");
    let mut duration = Float64Builder::with_capacity(n);
    let (mut events, mut songs) = (
        Int64Builder::with_capacity(n),
        Int64Builder::with_capacity(n),
    );
    let mut listen = Float64Builder::with_capacity(n);
    let mut texts: Vec<StringBuilder> = (0..6)
        .map(|_| StringBuilder::with_capacity(n, n * 8))
        .collect();
    for s in sessions {
        user.append_value(s.user);
        start.append_value(s.start);
        end.append_value(s.end);
        duration.append_value((s.end - s.start) as f64 / 1000.0);
        events.append_value(s.events);
        songs.append_value(s.songs);
        listen.append_value(s.listen_seconds);
        for (builder, text) in texts.iter_mut().zip([
            &s.level_start,
            &s.level_end,
            &s.city,
            &s.state,
            &s.first_page,
            &s.last_page,
        ]) {
            builder.append_option(text.as_deref());
        }
    }
    let utc = DataType::Timestamp(
        sluice_sdk::arrow_schema::TimeUnit::Millisecond,
        Some("UTC".into()),
    );
    let mut fields = vec![
        Field::new("userId", DataType::Int64, false),
        Field::new("session_start", utc.clone(), false),
        Field::new("session_end", utc, false),
        Field::new("duration_s", DataType::Float64, false),
        Field::new("events", DataType::Int64, false),
        Field::new("songs", DataType::Int64, false),
        Field::new("listen_seconds", DataType::Float64, false),
    ];
    let mut columns: Vec<ArrayRef> = vec![
        Arc::new(user.finish()),
        Arc::new(start.finish()),
        Arc::new(end.finish()),
        Arc::new(duration.finish()),
        Arc::new(events.finish()),
        Arc::new(songs.finish()),
        Arc::new(listen.finish()),
    ];
    for (name, mut builder) in [
        "level_start",
        "level_end",
        "city",
        "state",
        "first_page",
        "last_page",
    ]
    .into_iter()
    .zip(texts)
    {
        fields.push(Field::new(name, DataType::Utf8, true));
        columns.push(Arc::new(builder.finish()));
    }
    // A user's session is identified by its start (for sinks that upsert, e.g. ClickHouse).
    Ok(RecordBatch::try_new(
        Arc::new(with_key(Schema::new(fields), &["userId", "session_start"])),
        columns,
    )?)
}

impl Plugin for Sessionize {
    fn init(config: &Config) -> Result<Self, PluginError> {
        let config: SessionizeConfig = config.parse()?;
        if config.gap_ms <= 0 {
            return Err(PluginError::Config("gap_ms must be positive".into()));
        }
        Ok(Sessionize {
            config,
            state: State::default(),
        })
    }

    fn inputs(&self) -> Vec<String> {
        vec!["userId".into(), "ts".into()]
    }

    fn stateful(&self) -> bool {
        true
    }

    fn process(&mut self, batch: RecordBatch, out: &mut Outputs) -> Result<(), PluginError> {
        let users = batch.i64_column("userId")?;
        let ts = batch.i64_column("ts")?;
        let (page, level, city, state) = (
            batch.optional_string_column("page"),
            batch.optional_string_column("level"),
            batch.optional_string_column("city"),
            batch.optional_string_column("state"),
        );
        let song = batch.optional_string_column("song");
        let duration = batch
            .column_by_name("duration")
            .filter(|c| c.data_type() == &DataType::Float64)
            .map(|c| c.as_primitive::<sluice_sdk::arrow_array::types::Float64Type>());
        let mut late: Vec<u32> = Vec::new();
        for row in 0..batch.num_rows() {
            if users.is_null(row) || ts.is_null(row) {
                continue;
            }
            let t = ts.value(row);
            if self.state.watermark.is_some_and(|w| t < w) {
                late.push(row as u32);
                continue;
            }
            // A song is played on `NextSong` pages (page_view_events) or by any listen event.
            let played = match page {
                Some(p) => p.is_valid(row) && p.value(row) == "NextSong",
                None => song.is_some_and(|s| s.is_valid(row)),
            };
            let seconds = duration
                .filter(|d| played && d.is_valid(row))
                .map_or(0.0, |d| d.value(row));
            self.add(Event {
                user: users.value(row),
                ts: t,
                played,
                seconds,
                level: string_at(level, row),
                page: string_at(page, row),
                city: string_at(city, row),
                state: string_at(state, row),
            });
        }
        // Events flow on (to a KPI stage, say): the stage only adds sessions. Late ones are
        // rejected instead, so each input row goes exactly one way.
        if late.is_empty() {
            out.out(batch.clone());
        } else {
            let keep: BooleanArray = {
                let mut keep = vec![true; batch.num_rows()];
                late.iter().for_each(|&r| keep[r as usize] = false);
                keep.into_iter().map(Some).collect()
            };
            out.out(filter_record_batch(&batch, &keep)?);
        }
        if !late.is_empty() {
            let reasons = vec!["late".to_string(); late.len()];
            let rows = sluice_sdk::arrow_select::take::take_record_batch(
                &batch,
                &sluice_sdk::arrow_array::UInt32Array::from(late),
            )?;
            out.reject(rows, reasons)?;
        }
        Ok(())
    }

    fn on_watermark(&mut self, event_time_ms: i64, out: &mut Outputs) -> Result<(), PluginError> {
        if self.state.watermark.is_some_and(|w| w >= event_time_ms) {
            return Ok(());
        }
        self.state.watermark = Some(event_time_ms);
        let closed = self.close(event_time_ms);
        if !closed.is_empty() {
            out.emit(SESSIONS, sessions_batch(&closed)?);
        }
        Ok(())
    }

    fn snapshot(&self) -> Result<Vec<u8>, PluginError> {
        sluice_sdk::state::encode(&self.state)
    }

    fn restore(&mut self, state: &[u8]) -> Result<(), PluginError> {
        self.state = sluice_sdk::state::decode(state)?;
        Ok(())
    }
}

sluice_sdk::export_plugin!(Sessionize);
