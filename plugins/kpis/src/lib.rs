//! `kpis`: the gold tables of the Streamify reports, per UTC day.
//!
//! Input: the event topics (`listen_events`, `page_view_events`, `auth_events`,
//! `status_change_events`, named by the host in each batch's `sluice.topic` metadata) and the
//! `sessions` of the sessionize stage. A day's rows are emitted once, when the watermark has
//! passed the end of the day by `close_after_ms` (long enough for that day's sessions to have
//! closed and arrived), or at the end of input. Each (table, date) is therefore written exactly
//! once per run, restarts included (the open days are the plugin's state), so downstream
//! consumers never merge partial rows. Input for a day already emitted is rejected as `late`.
//!
//! Tables (named outputs), one row per key (declared as each output's `sluice.key` metadata):
//! * `daily_active_users` (date, level, users) — distinct users with any event, by level;
//! * `streams_per_hour` (date, hour, streams) — listen events per hour of day;
//! * `top_songs` (date, rank, artist, song, plays), `top_artists` (date, rank, artist, plays);
//! * `listening_by_state` (date, state, level, listen_seconds, plays);
//! * `sessions_per_day` (date, sessions, mean_duration_s, median_duration_s, songs_per_session);
//! * `subscriptions_per_day` (date, upgrades, downgrades, cancellations, registrations).
use foldhash::fast::FixedState;
use serde::{Deserialize, Serialize};
use sluice_sdk::arrow_array::UInt32Array;
use sluice_sdk::arrow_array::builder::{
    Date32Builder, Float64Builder, Int32Builder, Int64Builder, StringBuilder,
};
use sluice_sdk::arrow_array::types::{Float64Type, Int64Type, TimestampMillisecondType};
use sluice_sdk::arrow_array::{PrimitiveArray, StringArray};
use sluice_sdk::arrow_select::take::take_record_batch;
use sluice_sdk::prelude::*;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

const DAY_MS: i64 = 86_400_000;
const SEP: char = '\u{1f}';

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KpisConfig {
    /// How many songs and artists per day the top tables hold.
    pub top_n: usize,
    /// How long after midnight (event time) a day stays open for late sessions and events.
    pub close_after_ms: i64,
}

impl Default for KpisConfig {
    fn default() -> Self {
        KpisConfig {
            top_n: 10,
            close_after_ms: 12 * 60 * 60 * 1000,
        }
    }
}

/// Everything counted for one day; the maps are keyed by strings joined with U+001F so the
/// state serialises as plain JSON.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
struct Day {
    /// Hashed, as `listening`: a row looks each up, and in B-trees of a day's users or of
    /// state-and-level keys that took a dozen comparisons (2.6 % of the 100k gold job's
    /// instructions, more on days with more users).
    users_by_level: BTreeMap<String, HashSet<i64, FixedState>>,
    streams_by_hour: BTreeMap<i32, i64>,
    /// Hashed: it holds every song played that day, and only its top entries are emitted.
    plays_by_song: HashMap<String, i64, FixedState>,
    /// Emitted in key order.
    listening: HashMap<String, (f64, i64), FixedState>,
    sessions: Vec<(f64, i64)>,
    upgrades: i64,
    downgrades: i64,
    cancellations: i64,
    registrations: i64,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct State {
    days: BTreeMap<i64, Day>,
    /// Days before this one have been emitted.
    closed_before: Option<i64>,
    watermark: Option<i64>,
}

pub struct Kpis {
    config: KpisConfig,
    state: State,
}

/// The columns of one batch that the counts read, looked up once per batch.
struct Columns<'a> {
    topic: Topic,
    user: Option<&'a PrimitiveArray<Int64Type>>,
    level: Option<&'a StringArray>,
    artist: Option<&'a StringArray>,
    song: Option<&'a StringArray>,
    state: Option<&'a StringArray>,
    page: Option<&'a StringArray>,
    duration: Option<&'a PrimitiveArray<Float64Type>>,
    /// `duration_s` and `songs` of a `sessions` batch.
    sessions: Option<(
        &'a PrimitiveArray<Float64Type>,
        &'a PrimitiveArray<Int64Type>,
    )>,
}

#[derive(Clone, Copy, PartialEq)]
enum Topic {
    Sessions,
    Listens,
    StatusChanges,
    PageViews,
    Other,
}

/// Epoch ms of each row: `ts` for events, `session_start` for sessions.
fn times(batch: &RecordBatch) -> Result<Vec<Option<i64>>, PluginError> {
    if let Some(start) = batch.column_by_name("session_start") {
        return Ok(start
            .as_primitive::<TimestampMillisecondType>()
            .iter()
            .collect());
    }
    Ok(batch.i64_column("ts")?.iter().collect())
}

impl<'a> Columns<'a> {
    fn of(batch: &'a RecordBatch, topic: &str) -> Result<Self, PluginError> {
        let topic = match topic {
            "sessions" => Topic::Sessions,
            "listen_events" => Topic::Listens,
            "status_change_events" => Topic::StatusChanges,
            "page_view_events" => Topic::PageViews,
            _ => Topic::Other,
        };
        let sessions = match topic {
            Topic::Sessions => Some((batch.f64_column("duration_s")?, batch.i64_column("songs")?)),
            _ => None,
        };
        Ok(Columns {
            topic,
            user: batch
                .column_by_name("userId")
                .map(|c| c.as_primitive::<Int64Type>()),
            level: batch.optional_string_column("level"),
            artist: batch.optional_string_column("artist"),
            song: batch.optional_string_column("song"),
            state: batch.optional_string_column("state"),
            page: batch.optional_string_column("page"),
            duration: batch
                .column_by_name("duration")
                .map(|d| d.as_primitive::<Float64Type>()),
            sessions,
        })
    }
}

/// A day's maps, looked up by a borrowed key: a key is allocated only when it is new, not
/// once per row.
trait KeyedCounts<V> {
    fn slot(&mut self, key: &str) -> &mut V;
}

macro_rules! keyed_counts {
    ($($map:ty),*) => {$(
        impl<V: Default> KeyedCounts<V> for $map {
            fn slot(&mut self, key: &str) -> &mut V {
                if !self.contains_key(key) {
                    self.insert(key.to_string(), V::default());
                }
                self.get_mut(key).expect("inserted above")
            }
        }
    )*};
}

keyed_counts!(BTreeMap<String, V>, HashMap<String, V, FixedState>);

impl Kpis {
    /// Counts one row into its day; `key` is scratch space for the joined map keys.
    fn count(&mut self, columns: &Columns<'_>, row: usize, ms: i64, key: &mut String) {
        let day = self.state.days.entry(ms.div_euclid(DAY_MS)).or_default();
        if let Some((duration, songs)) = columns.sessions {
            day.sessions.push((duration.value(row), songs.value(row)));
            return;
        }
        let level = string_at(columns.level, row).unwrap_or_default();
        if let Some(user) = columns.user.filter(|u| u.is_valid(row)) {
            day.users_by_level.slot(level).insert(user.value(row));
        }
        match columns.topic {
            Topic::Listens => {
                let hour = (ms.rem_euclid(DAY_MS) / 3_600_000) as i32;
                *day.streams_by_hour.entry(hour).or_default() += 1;
                key.clear();
                key.push_str(string_at(columns.artist, row).unwrap_or_default());
                key.push(SEP);
                key.push_str(string_at(columns.song, row).unwrap_or_default());
                *day.plays_by_song.slot(key) += 1;
                let duration = columns
                    .duration
                    .filter(|d| d.is_valid(row))
                    .map_or(0.0, |d| d.value(row));
                key.clear();
                key.push_str(string_at(columns.state, row).unwrap_or_default());
                key.push(SEP);
                key.push_str(level);
                let entry = day.listening.slot(key);
                entry.0 += duration;
                entry.1 += 1;
            }
            // `level` is the level before the change.
            Topic::StatusChanges => match level {
                "free" => day.upgrades += 1,
                "paid" => day.downgrades += 1,
                _ => {}
            },
            Topic::PageViews => match string_at(columns.page, row) {
                Some("Cancellation Confirmation") => day.cancellations += 1,
                Some("Submit Registration") => day.registrations += 1,
                _ => {}
            },
            Topic::Sessions | Topic::Other => {}
        }
    }

    fn emit(&self, days: &BTreeMap<i64, Day>, out: &mut Outputs) -> Result<(), PluginError> {
        let mut tables = Tables::default();
        for (&day, counts) in days {
            tables.add(day as i32, counts, self.config.top_n);
        }
        tables.finish(out)
    }
}

/// Builders for every gold table.
#[derive(Default)]
struct Tables {
    dau: (Date32Builder, StringBuilder, Int64Builder),
    streams: (Date32Builder, Int32Builder, Int64Builder),
    top_songs: (
        Date32Builder,
        Int32Builder,
        StringBuilder,
        StringBuilder,
        Int64Builder,
    ),
    top_artists: (Date32Builder, Int32Builder, StringBuilder, Int64Builder),
    listening: (
        Date32Builder,
        StringBuilder,
        StringBuilder,
        Float64Builder,
        Int64Builder,
    ),
    sessions: (
        Date32Builder,
        Int64Builder,
        Float64Builder,
        Float64Builder,
        Float64Builder,
    ),
    subscriptions: (
        Date32Builder,
        Int64Builder,
        Int64Builder,
        Int64Builder,
        Int64Builder,
    ),
}

/// The first `n` of `(key, plays)` by plays descending, then key ascending.
fn top<K: Ord + Clone>(counts: impl Iterator<Item = (K, i64)>, n: usize) -> Vec<(K, i64)> {
    let mut all: Vec<(K, i64)> = counts.collect();
    all.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    all.truncate(n);
    all
}

impl Tables {
    fn add(&mut self, date: i32, day: &Day, top_n: usize) {
        for (level, users) in &day.users_by_level {
            self.dau.0.append_value(date);
            self.dau.1.append_value(level);
            self.dau.2.append_value(users.len() as i64);
        }
        for (hour, streams) in &day.streams_by_hour {
            self.streams.0.append_value(date);
            self.streams.1.append_value(*hour);
            self.streams.2.append_value(*streams);
        }
        for (rank, (song, plays)) in top(
            day.plays_by_song.iter().map(|(k, v)| (k.clone(), *v)),
            top_n,
        )
        .into_iter()
        .enumerate()
        {
            let (artist, title) = song.split_once(SEP).unwrap_or((&song, ""));
            self.top_songs.0.append_value(date);
            self.top_songs.1.append_value(rank as i32 + 1);
            self.top_songs.2.append_value(artist);
            self.top_songs.3.append_value(title);
            self.top_songs.4.append_value(plays);
        }
        let mut by_artist: BTreeMap<&str, i64> = BTreeMap::new();
        for (song, plays) in &day.plays_by_song {
            *by_artist
                .entry(song.split_once(SEP).map_or(song.as_str(), |(a, _)| a))
                .or_default() += plays;
        }
        for (rank, (artist, plays)) in top(by_artist.into_iter(), top_n).into_iter().enumerate() {
            self.top_artists.0.append_value(date);
            self.top_artists.1.append_value(rank as i32 + 1);
            self.top_artists.2.append_value(artist);
            self.top_artists.3.append_value(plays);
        }
        let mut listening: Vec<_> = day.listening.iter().collect();
        listening.sort_unstable_by(|a, b| a.0.cmp(b.0));
        for (place, (seconds, plays)) in listening {
            let (state, level) = place.split_once(SEP).unwrap_or((place, ""));
            self.listening.0.append_value(date);
            self.listening.1.append_value(state);
            self.listening.2.append_value(level);
            self.listening.3.append_value(*seconds);
            self.listening.4.append_value(*plays);
        }
        if !day.sessions.is_empty() {
            let mut durations: Vec<f64> = day.sessions.iter().map(|s| s.0).collect();
            durations.sort_by(f64::total_cmp);
            let n = durations.len();
            let median = if n % 2 == 1 {
                durations[n / 2]
            } else {
                (durations[n / 2 - 1] + durations[n / 2]) / 2.0
            };
            self.sessions.0.append_value(date);
            self.sessions.1.append_value(n as i64);
            self.sessions
                .2
                .append_value(durations.iter().sum::<f64>() / n as f64);
            self.sessions.3.append_value(median);
            self.sessions
                .4
                .append_value(day.sessions.iter().map(|s| s.1).sum::<i64>() as f64 / n as f64);
        }
        self.subscriptions.0.append_value(date);
        self.subscriptions.1.append_value(day.upgrades);
        self.subscriptions.2.append_value(day.downgrades);
        self.subscriptions.3.append_value(day.cancellations);
        self.subscriptions.4.append_value(day.registrations);
    }

    fn finish(mut self, out: &mut Outputs) -> Result<(), PluginError> {
        // `key`: the columns that identify a row (for sinks that upsert, e.g. ClickHouse).
        fn table(key: &[&str], columns: Vec<(&str, ArrayRef)>) -> Result<RecordBatch, PluginError> {
            let fields: Vec<Field> = columns
                .iter()
                .map(|(name, array)| Field::new(*name, array.data_type().clone(), false))
                .collect();
            Ok(RecordBatch::try_new(
                Arc::new(with_key(Schema::new(fields), key)),
                columns.into_iter().map(|(_, a)| a).collect(),
            )?)
        }
        let date = |b: &mut Date32Builder| Arc::new(b.finish()) as ArrayRef;
        let t = &mut self;
        out.emit(
            "daily_active_users",
            table(
                &["date", "level"],
                vec![
                    ("date", date(&mut t.dau.0)),
                    ("level", Arc::new(t.dau.1.finish())),
                    ("users", Arc::new(t.dau.2.finish())),
                ],
            )?,
        );
        out.emit(
            "streams_per_hour",
            table(
                &["date", "hour"],
                vec![
                    ("date", date(&mut t.streams.0)),
                    ("hour", Arc::new(t.streams.1.finish())),
                    ("streams", Arc::new(t.streams.2.finish())),
                ],
            )?,
        );
        out.emit(
            "top_songs",
            table(
                &["date", "rank"],
                vec![
                    ("date", date(&mut t.top_songs.0)),
                    ("rank", Arc::new(t.top_songs.1.finish())),
                    ("artist", Arc::new(t.top_songs.2.finish())),
                    ("song", Arc::new(t.top_songs.3.finish())),
                    ("plays", Arc::new(t.top_songs.4.finish())),
                ],
            )?,
        );
        out.emit(
            "top_artists",
            table(
                &["date", "rank"],
                vec![
                    ("date", date(&mut t.top_artists.0)),
                    ("rank", Arc::new(t.top_artists.1.finish())),
                    ("artist", Arc::new(t.top_artists.2.finish())),
                    ("plays", Arc::new(t.top_artists.3.finish())),
                ],
            )?,
        );
        out.emit(
            "listening_by_state",
            table(
                &["date", "state", "level"],
                vec![
                    ("date", date(&mut t.listening.0)),
                    ("state", Arc::new(t.listening.1.finish())),
                    ("level", Arc::new(t.listening.2.finish())),
                    ("listen_seconds", Arc::new(t.listening.3.finish())),
                    ("plays", Arc::new(t.listening.4.finish())),
                ],
            )?,
        );
        out.emit(
            "sessions_per_day",
            table(
                &["date"],
                vec![
                    ("date", date(&mut t.sessions.0)),
                    ("sessions", Arc::new(t.sessions.1.finish())),
                    ("mean_duration_s", Arc::new(t.sessions.2.finish())),
                    ("median_duration_s", Arc::new(t.sessions.3.finish())),
                    ("songs_per_session", Arc::new(t.sessions.4.finish())),
                ],
            )?,
        );
        out.emit(
            "subscriptions_per_day",
            table(
                &["date"],
                vec![
                    ("date", date(&mut t.subscriptions.0)),
                    ("upgrades", Arc::new(t.subscriptions.1.finish())),
                    ("downgrades", Arc::new(t.subscriptions.2.finish())),
                    ("cancellations", Arc::new(t.subscriptions.3.finish())),
                    ("registrations", Arc::new(t.subscriptions.4.finish())),
                ],
            )?,
        );
        Ok(())
    }
}

impl Plugin for Kpis {
    fn init(config: &Config) -> Result<Self, PluginError> {
        let config: KpisConfig = config.parse()?;
        if config.top_n == 0 || config.close_after_ms < 0 {
            return Err(PluginError::Config(
                "top_n must be positive and close_after_ms not negative".into(),
            ));
        }
        Ok(Kpis {
            config,
            state: State::default(),
        })
    }

    fn stateful(&self) -> bool {
        true
    }

    fn process(&mut self, batch: RecordBatch, out: &mut Outputs) -> Result<(), PluginError> {
        let columns = Columns::of(&batch, topic_of(&batch).unwrap_or_default())?;
        let times = times(&batch)?;
        let mut late: Vec<u32> = Vec::new();
        let mut key = String::new();
        for (row, ms) in times.into_iter().enumerate() {
            let Some(ms) = ms else { continue };
            if self
                .state
                .closed_before
                .is_some_and(|c| ms.div_euclid(DAY_MS) < c)
            {
                late.push(row as u32);
                continue;
            }
            self.count(&columns, row, ms, &mut key);
        }
        if !late.is_empty() {
            let reasons = vec!["late".to_string(); late.len()];
            out.reject(
                take_record_batch(&batch, &UInt32Array::from(late))?,
                reasons,
            )?;
        }
        Ok(())
    }

    fn on_watermark(&mut self, event_time_ms: i64, out: &mut Outputs) -> Result<(), PluginError> {
        if self.state.watermark.is_some_and(|w| w >= event_time_ms) {
            return Ok(());
        }
        self.state.watermark = Some(event_time_ms);
        // Day d closes once the watermark is past its end plus the delay.
        let open_from = if event_time_ms == i64::MAX {
            i64::MAX
        } else {
            (event_time_ms - self.config.close_after_ms).div_euclid(DAY_MS)
        };
        let still_open = match open_from {
            i64::MAX => BTreeMap::new(),
            from => self.state.days.split_off(&from),
        };
        let closed = std::mem::replace(&mut self.state.days, still_open);
        if open_from != i64::MAX {
            self.state.closed_before = Some(
                self.state
                    .closed_before
                    .map_or(open_from, |c| c.max(open_from)),
            );
        }
        if closed.is_empty() {
            Ok(())
        } else {
            self.emit(&closed, out)
        }
    }

    fn snapshot(&self) -> Result<Vec<u8>, PluginError> {
        sluice_sdk::state::encode(&self.state)
    }

    fn restore(&mut self, state: &[u8]) -> Result<(), PluginError> {
        self.state = sluice_sdk::state::decode(state)?;
        Ok(())
    }
}

sluice_sdk::export_plugin!(Kpis);
