//! An EventSim-compatible event generator: users with free/paid levels, sessions separated by
//! more than 30 minutes of inactivity, logins, registrations, song plays from a catalogue,
//! upgrades, downgrades and cancellations, in US cities. Deterministic for a seed: the same
//! config always yields the same records in the same order, so a resumed run regenerates and
//! skips what was already committed.
//!
//! `sessionId` is filled exactly as EventSim does (a new id per session), so it is ground
//! truth for sessionization tests. A small, configurable fraction of records is made dirty
//! (missing userId, negative duration, impossible timestamp, duplicate) for the clean stage.
use super::{RawBatch, Source, SourceError};
use serde::Deserialize;
use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::io::Write;

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GeneratorConfig {
    /// Records to produce, across all four topics.
    pub events: u64,
    pub seed: u64,
    pub users: u32,
    /// Simulation start, epoch ms (default 2026-11-01T00:00:00Z).
    pub start_ms: i64,
    /// Fraction of records made invalid or duplicated.
    pub dirty_rate: f64,
    /// As a pipeline source: records per second, for a steady live load (0: as fast as the
    /// pipeline takes them).
    pub rate: u64,
}

impl Default for GeneratorConfig {
    fn default() -> Self {
        GeneratorConfig {
            events: 100_000,
            seed: 42,
            users: 1000,
            start_ms: 1_793_491_200_000,
            dirty_rate: 0.002,
            rate: 0,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Topic {
    Listen,
    PageView,
    Auth,
    StatusChange,
}

impl Topic {
    pub const ALL: [Topic; 4] = [
        Topic::Listen,
        Topic::PageView,
        Topic::Auth,
        Topic::StatusChange,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Topic::Listen => "listen_events",
            Topic::PageView => "page_view_events",
            Topic::Auth => "auth_events",
            Topic::StatusChange => "status_change_events",
        }
    }

    pub fn index(self) -> usize {
        self as usize
    }
}

/// SplitMix64: small, fast and identical on every platform.
#[derive(Debug, Clone)]
struct Rng(u64);

impl Rng {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }
    fn chance(&mut self, p: f64) -> bool {
        self.unit() < p
    }
    fn between(&mut self, lo: i64, hi: i64) -> i64 {
        lo + (self.next_u64() % (hi - lo + 1) as u64) as i64
    }
}

const CITIES: &[(&str, &str, &str, f64, f64)] = &[
    ("New York", "NY", "10001", 40.7128, -74.0060),
    ("Los Angeles", "CA", "90001", 34.0522, -118.2437),
    ("Chicago", "IL", "60601", 41.8781, -87.6298),
    ("Houston", "TX", "77001", 29.7604, -95.3698),
    ("Phoenix", "AZ", "85001", 33.4484, -112.0740),
    ("Philadelphia", "PA", "19019", 39.9526, -75.1652),
    ("San Antonio", "TX", "78201", 29.4241, -98.4936),
    ("San Diego", "CA", "92101", 32.7157, -117.1611),
    ("Dallas", "TX", "75201", 32.7767, -96.7970),
    ("San Jose", "CA", "95101", 37.3382, -121.8863),
    ("Austin", "TX", "73301", 30.2672, -97.7431),
    ("Jacksonville", "FL", "32099", 30.3322, -81.6557),
    ("Columbus", "OH", "43004", 39.9612, -82.9988),
    ("Charlotte", "NC", "28201", 35.2271, -80.8431),
    ("Indianapolis", "IN", "46201", 39.7684, -86.1581),
    ("Seattle", "WA", "98101", 47.6062, -122.3321),
    ("Denver", "CO", "80201", 39.7392, -104.9903),
    ("Boston", "MA", "02108", 42.3601, -71.0589),
    ("Nashville", "TN", "37201", 36.1627, -86.7816),
    ("Detroit", "MI", "48201", 42.3314, -83.0458),
    ("Portland", "OR", "97201", 45.5152, -122.6784),
    ("Las Vegas", "NV", "89101", 36.1699, -115.1398),
    ("Atlanta", "GA", "30301", 33.7490, -84.3880),
    ("Miami", "FL", "33101", 25.7617, -80.1918),
    ("Minneapolis", "MN", "55401", 44.9778, -93.2650),
    ("New Orleans", "LA", "70112", 29.9511, -90.0715),
    ("Salt Lake City", "UT", "84101", 40.7608, -111.8910),
    ("Kansas City", "MO", "64101", 39.0997, -94.5786),
];

const FIRST_NAMES_F: &[&str] = &[
    "Emma", "Olivia", "Ava", "Sophia", "Mia", "Amelia", "Harper", "Ella", "Chloe", "Grace", "Lily",
    "Zoe", "Nora", "Riley", "Aria",
];
const FIRST_NAMES_M: &[&str] = &[
    "Liam", "Noah", "Elijah", "James", "Lucas", "Mason", "Ethan", "Logan", "Jacob", "Owen",
    "Caleb", "Wyatt", "Henry", "Leo", "Isaac",
];
const LAST_NAMES: &[&str] = &[
    "Smith", "Johnson", "Williams", "Brown", "Jones", "Garcia", "Miller", "Davis", "Martinez",
    "Lopez", "Wilson", "Anderson", "Thomas", "Moore", "Jackson", "Martin", "Lee", "Thompson",
    "White", "Harris",
];
const USER_AGENTS: &[&str] = &[
    "Mozilla/5.0 (Windows NT 6.1; WOW64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/36.0.1985.143 Safari/537.36",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_9_4) AppleWebKit/537.77.4 (KHTML, like Gecko) Version/7.0.5 Safari/537.77.4",
    "Mozilla/5.0 (Windows NT 6.1; WOW64; rv:31.0) Gecko/20100101 Firefox/31.0",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 7_1_2 like Mac OS X) AppleWebKit/537.51.2 (KHTML, like Gecko) Version/7.0 Mobile/11D257 Safari/9537.53",
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/36.0.1985.125 Safari/537.36",
];
const ARTIST_WORDS: (&[&str], &[&str]) = (
    &[
        "Velvet", "Neon", "Silver", "Electric", "Midnight", "Golden", "Crimson", "Lonely", "Wild",
        "Paper", "Broken", "Northern", "Black", "Blue", "Young", "Quiet", "Glass", "Iron", "Lucky",
        "Little",
    ],
    &[
        "Foxes",
        "Rivers",
        "Kings",
        "Echoes",
        "Hearts",
        "Lights",
        "Pilots",
        "Ghosts",
        "Wolves",
        "Tigers",
        "Saints",
        "Strangers",
        "Machines",
        "Sparrows",
        "Brothers",
    ],
);
const SONG_WORDS: (&[&str], &[&str]) = (
    &[
        "Summer", "Falling", "Burning", "Electric", "Endless", "Hollow", "Shining", "Silent",
        "Dancing", "Secret", "Faded", "Restless", "Sweet", "Cold", "Open", "Last",
    ],
    &[
        "Love", "Roads", "Skies", "Nights", "Dreams", "Fire", "Rain", "Hearts", "Light", "Stars",
        "Waves", "Home", "Eyes", "Lines", "Youth", "Gold",
    ],
);
const SONGS_PER_ARTIST: usize = 8;

struct Song {
    artist: String,
    title: String,
    duration: f64,
}

fn catalogue(rng: &mut Rng) -> Vec<Song> {
    let mut songs = Vec::new();
    for a in ARTIST_WORDS.0 {
        for b in ARTIST_WORDS.1 {
            let artist = format!("{a} {b}");
            for _ in 0..SONGS_PER_ARTIST {
                let title = format!(
                    "{} {}",
                    SONG_WORDS.0[rng.below(SONG_WORDS.0.len())],
                    SONG_WORDS.1[rng.below(SONG_WORDS.1.len())]
                );
                let duration = (120.0 + rng.unit() * 300.0) * 1e5;
                songs.push(Song {
                    artist: artist.clone(),
                    title,
                    duration: duration.round() / 1e5,
                });
            }
        }
    }
    // Shuffle so popularity (by index) is not grouped by artist.
    for i in (1..songs.len()).rev() {
        let j = rng.below(i + 1);
        songs.swap(i, j);
    }
    songs
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Level {
    Free,
    Paid,
}

impl Level {
    fn as_str(self) -> &'static str {
        match self {
            Level::Free => "free",
            Level::Paid => "paid",
        }
    }
}

struct User {
    id: i64,
    first: &'static str,
    last: &'static str,
    gender: &'static str,
    level: Level,
    registration: Option<i64>,
    city: usize,
    agent: usize,
    logged_in: bool,
    in_session: bool,
    session_id: i64,
    item: i32,
    remaining: u32,
    /// Pages this user will visit next, before choosing freely (e.g. Upgrade → Submit Upgrade).
    next_pages: VecDeque<&'static str>,
}

/// One generated record before it is written as JSON.
struct Record<'a> {
    topic: Topic,
    ts: i64,
    user: &'a User,
    page: &'static str,
    auth: &'static str,
    level: Level,
    song: Option<&'a Song>,
    success: Option<bool>,
    dirty: Dirt,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Dirt {
    None,
    NoUserId,
    NegativeDuration,
    FutureTs,
}

pub struct EventGenerator {
    config: GeneratorConfig,
    rng: Rng,
    songs: Vec<Song>,
    users: Vec<User>,
    schedule: BinaryHeap<Reverse<(i64, usize)>>,
    next_session_id: i64,
    next_user_id: i64,
    /// Serialised records waiting to be handed out, with their topic.
    ready: VecDeque<(Topic, Vec<u8>)>,
    spare: Vec<Vec<u8>>,
    emitted: u64,
}

const MINUTE: i64 = 60_000;
const SESSION_GAP: i64 = 30 * MINUTE;

impl EventGenerator {
    pub fn new(config: &GeneratorConfig) -> Self {
        let mut rng = Rng(config.seed ^ 0x5EED_5EED_5EED_5EED);
        let songs = catalogue(&mut rng);
        let mut users = Vec::with_capacity(config.users as usize);
        let mut schedule = BinaryHeap::new();
        for i in 0..config.users as usize {
            let registered = rng.chance(0.9);
            let registration =
                registered.then(|| config.start_ms - rng.between(MINUTE, 365 * 24 * 60 * MINUTE));
            users.push(new_user(&mut rng, 1000 + i as i64, registration));
            schedule.push(Reverse((
                config.start_ms + rng.between(0, 6 * 60 * MINUTE),
                i,
            )));
        }
        let next_user_id = 1000 + users.len() as i64;
        EventGenerator {
            config: config.clone(),
            rng,
            songs,
            users,
            schedule,
            next_session_id: 1,
            next_user_id,
            ready: VecDeque::new(),
            spare: Vec::new(),
            emitted: 0,
        }
    }

    /// Records handed out so far.
    pub fn emitted(&self) -> u64 {
        self.emitted
    }

    /// The next record as one JSON line (without newline) and its topic; `None` when the
    /// configured number of records is reached.
    pub fn next_record(&mut self) -> Option<(Topic, Vec<u8>)> {
        if self.emitted >= self.config.events {
            return None;
        }
        while self.ready.is_empty() {
            if !self.step() {
                return None;
            }
        }
        self.emitted += 1;
        self.ready.pop_front()
    }

    /// Gives a record buffer back for reuse.
    pub fn recycle(&mut self, mut buffer: Vec<u8>) {
        buffer.clear();
        self.spare.push(buffer);
    }

    /// Advances the user whose next event is earliest; false if every user has churned.
    fn step(&mut self) -> bool {
        let Some(Reverse((ts, u))) = self.schedule.pop() else {
            return false;
        };
        let rng = &mut self.rng;
        let user = &mut self.users[u];
        if !user.in_session {
            user.in_session = true;
            user.session_id = self.next_session_id;
            self.next_session_id += 1;
            user.item = 0;
            user.remaining = 3 + rng.below(60) as u32;
            user.logged_in = user.registration.is_some() && rng.chance(0.85);
            user.next_pages.clear();
        }
        let page = match user.next_pages.pop_front() {
            Some(page) => page,
            None if user.registration.is_none() => {
                user.next_pages.extend(["Register", "Submit Registration"]);
                "Home"
            }
            None if !user.logged_in => {
                if rng.chance(0.5) {
                    "Home"
                } else {
                    "Login"
                }
            }
            None => choose_page(rng, user.level),
        };
        match page {
            "Upgrade" if rng.chance(0.5) => user.next_pages.push_back("Submit Upgrade"),
            "Downgrade" if rng.chance(0.5) => user.next_pages.push_back("Submit Downgrade"),
            "Settings" if rng.chance(0.5) => user.next_pages.push_back("Save Settings"),
            "Cancel" => user.next_pages.push_back("Cancellation Confirmation"),
            _ => {}
        }
        let song_index =
            (page == "NextSong").then(|| (self.songs.len() as f64 * rng.unit().powf(2.5)) as usize);
        let success = match page {
            "Login" => Some(rng.chance(0.95)),
            "Submit Registration" => Some(true),
            _ => None,
        };
        let auth = if page == "Cancellation Confirmation" {
            "Cancelled"
        } else if user.logged_in {
            "Logged In"
        } else if user.registration.is_none() {
            "Guest"
        } else {
            "Logged Out"
        };
        let level = user.level;
        let mut records: Vec<Topic> = vec![Topic::PageView];
        match page {
            "NextSong" => records.push(Topic::Listen),
            "Login" | "Submit Registration" => records.push(Topic::Auth),
            "Submit Upgrade" | "Submit Downgrade" => records.push(Topic::StatusChange),
            _ => {}
        }
        let user = &self.users[u];
        for topic in records {
            let mut dirty = Dirt::None;
            let mut copies = 1;
            if self.rng.chance(self.config.dirty_rate) {
                match self.rng.below(4) {
                    0 if auth == "Logged In" => dirty = Dirt::NoUserId,
                    1 if topic == Topic::Listen => dirty = Dirt::NegativeDuration,
                    0..=2 => dirty = Dirt::FutureTs,
                    // An exact duplicate, as an at-least-once producer would send.
                    _ => copies = 2,
                }
            }
            let song = song_index.map(|i| &self.songs[i]);
            let record = Record {
                topic,
                ts,
                user,
                page,
                auth,
                level,
                song,
                success,
                dirty,
            };
            for _ in 0..copies {
                let mut buffer = self.spare.pop().unwrap_or_default();
                write_json(&mut buffer, &record);
                self.ready.push_back((topic, buffer));
            }
        }

        // The user's state after the page, and when they act next.
        let user = &mut self.users[u];
        user.item += 1;
        match page {
            "Login" if success == Some(true) => user.logged_in = true,
            "Submit Registration" => {
                user.registration = Some(ts);
                user.logged_in = true;
            }
            "Submit Upgrade" => user.level = Level::Paid,
            "Submit Downgrade" => user.level = Level::Free,
            "Cancellation Confirmation" => {
                // Churned for good. A newcomer takes the slot, as EventSim keeps users arriving:
                // activity stays steady over long runs, and registrations keep happening.
                self.users[u] = new_user(&mut self.rng, self.next_user_id, None);
                self.next_user_id += 1;
                let arrival = ts + SESSION_GAP + self.rng.between(MINUTE, 24 * 60 * MINUTE);
                self.schedule.push(Reverse((arrival, u)));
                return true;
            }
            _ => {}
        }
        user.remaining = user.remaining.saturating_sub(1);
        let next = if page == "Logout" || user.remaining == 0 {
            user.in_session = false;
            user.logged_in = false;
            // Strictly more than EventSim's 30-minute gap, so sessions are unambiguous.
            ts + SESSION_GAP + self.rng.between(MINUTE, 12 * 60 * MINUTE)
        } else if let Some(i) = song_index {
            ts + (self.songs[i].duration * 1000.0) as i64
        } else {
            ts + self.rng.between(2_000, 90_000)
        };
        self.schedule.push(Reverse((next, u)));
        true
    }
}

fn new_user(rng: &mut Rng, id: i64, registration: Option<i64>) -> User {
    let female = rng.chance(0.5);
    User {
        id,
        first: if female {
            FIRST_NAMES_F[rng.below(FIRST_NAMES_F.len())]
        } else {
            FIRST_NAMES_M[rng.below(FIRST_NAMES_M.len())]
        },
        last: LAST_NAMES[rng.below(LAST_NAMES.len())],
        gender: if female { "F" } else { "M" },
        level: if rng.chance(0.25) {
            Level::Paid
        } else {
            Level::Free
        },
        registration,
        city: rng.below(CITIES.len()),
        agent: rng.below(USER_AGENTS.len()),
        logged_in: false,
        in_session: false,
        session_id: 0,
        item: 0,
        remaining: 0,
        next_pages: VecDeque::new(),
    }
}

fn choose_page(rng: &mut Rng, level: Level) -> &'static str {
    let roll = rng.unit();
    let pages: &[(f64, &'static str)] = &[
        (0.780, "NextSong"),
        (0.860, "Home"),
        (0.885, "Settings"),
        (0.900, "Help"),
        (0.908, "About"),
        (0.912, "Error"),
        (
            0.945,
            if level == Level::Free {
                "Upgrade"
            } else {
                "Downgrade"
            },
        ),
        (0.962, "Logout"),
        (0.9635, "Cancel"),
    ];
    pages
        .iter()
        .find(|(p, _)| roll < *p)
        .map_or("NextSong", |(_, page)| *page)
}

fn method_status(page: &str) -> (&'static str, i32) {
    match page {
        "Error" => ("GET", 404),
        "NextSong" => ("PUT", 200),
        "Login"
        | "Logout"
        | "Submit Registration"
        | "Submit Upgrade"
        | "Submit Downgrade"
        | "Save Settings"
        | "Cancel" => ("PUT", 307),
        _ => ("GET", 200),
    }
}

fn write_str(out: &mut Vec<u8>, value: &str) {
    out.push(b'"');
    for c in value.chars() {
        match c {
            '"' => out.extend_from_slice(b"\\\""),
            '\\' => out.extend_from_slice(b"\\\\"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => {
                let mut utf8 = [0; 4];
                out.extend_from_slice(c.encode_utf8(&mut utf8).as_bytes());
            }
        }
    }
    out.push(b'"');
}

fn field_str(out: &mut Vec<u8>, name: &str, value: &str) {
    let _ = write!(out, ",\"{name}\":");
    write_str(out, value);
}

/// Writes a record as EventSim does: one flat JSON object, user fields only when logged in.
fn write_json(out: &mut Vec<u8>, r: &Record) {
    let ts = if r.dirty == Dirt::FutureTs {
        7_258_118_400_000
    } else {
        r.ts
    };
    let (city, state, zip, lat, lon) = CITIES[r.user.city];
    let _ = write!(out, "{{\"ts\":{ts},\"sessionId\":{}", r.user.session_id);
    if r.topic != Topic::Auth {
        field_str(out, "auth", r.auth);
    }
    if r.topic == Topic::PageView {
        field_str(out, "page", r.page);
        let (method, status) = method_status(r.page);
        field_str(out, "method", method);
        let _ = write!(out, ",\"status\":{status}");
    }
    field_str(out, "level", r.level.as_str());
    let _ = write!(out, ",\"itemInSession\":{}", r.user.item);
    field_str(out, "city", city);
    field_str(out, "zip", zip);
    field_str(out, "state", state);
    field_str(out, "userAgent", USER_AGENTS[r.user.agent]);
    let _ = write!(out, ",\"lon\":{lon},\"lat\":{lat}");
    if r.auth == "Logged In" || r.auth == "Cancelled" {
        if r.dirty != Dirt::NoUserId {
            let _ = write!(out, ",\"userId\":{}", r.user.id);
        }
        field_str(out, "lastName", r.user.last);
        field_str(out, "firstName", r.user.first);
        field_str(out, "gender", r.user.gender);
        if let Some(registration) = r.user.registration {
            let _ = write!(out, ",\"registration\":{registration}");
        }
    }
    if let (Some(song), Topic::Listen | Topic::PageView) = (r.song, r.topic) {
        field_str(out, "artist", &song.artist);
        field_str(out, "song", &song.title);
        let duration = if r.dirty == Dirt::NegativeDuration {
            -song.duration
        } else {
            song.duration
        };
        let _ = write!(out, ",\"duration\":{duration}");
    }
    if let Some(success) = r.success.filter(|_| r.topic == Topic::Auth) {
        let _ = write!(out, ",\"success\":{success}");
    }
    out.push(b'}');
}

/// The generator as a pipeline source: each round generates records until one topic has
/// `batch_rows` of them and hands them out as one batch per topic; the round's last batch carries the position (records
/// emitted), so a resumed run regenerates and skips exactly those.
pub struct GeneratorSource {
    generator: EventGenerator,
    batch_rows: usize,
    pending: VecDeque<RawBatch>,
    rate: u64,
    /// When this run's first record was generated, and how many had been emitted before.
    paced_from: Option<(std::time::Instant, u64)>,
}

impl GeneratorSource {
    pub fn new(
        config: &GeneratorConfig,
        batch_rows: usize,
        resume: Option<&serde_json::Value>,
    ) -> Result<Self, SourceError> {
        let mut generator = EventGenerator::new(config);
        if let Some(position) = resume {
            let skip = position.as_u64().ok_or_else(|| SourceError::BadPosition {
                position: position.to_string(),
                reason: "expected a record count".into(),
            })?;
            while generator.emitted() < skip {
                match generator.next_record() {
                    Some((_, buffer)) => generator.recycle(buffer),
                    None => break,
                }
            }
        }
        Ok(GeneratorSource {
            generator,
            batch_rows,
            pending: VecDeque::new(),
            rate: config.rate,
            paced_from: None,
        })
    }
}

impl Source for GeneratorSource {
    fn next_batch(&mut self) -> Result<Option<RawBatch>, SourceError> {
        if self.pending.is_empty() {
            self.pace();
            let mut batches: Vec<RawBatch> = Topic::ALL
                .iter()
                .map(|t| RawBatch::new(t.name(), "generator"))
                .collect();
            // A round ends when any topic's batch is full, so no batch exceeds `batch_rows`.
            loop {
                let offset = self.generator.emitted() as i64;
                let Some((topic, record)) = self.generator.next_record() else {
                    break;
                };
                let batch = &mut batches[topic.index()];
                batch.push(&record, offset);
                self.generator.recycle(record);
                if batch.len() >= self.batch_rows {
                    break;
                }
            }
            self.pending = batches.into_iter().filter(|b| !b.is_empty()).collect();
            if let Some(last) = self.pending.back_mut() {
                last.position = Some(serde_json::Value::from(self.generator.emitted()));
            }
        }
        Ok(self.pending.pop_front())
    }
}

impl GeneratorSource {
    /// With a `rate`, waits until the records emitted so far are due.
    fn pace(&mut self) {
        if self.rate == 0 {
            return;
        }
        let emitted = self.generator.emitted();
        let (started, base) = *self
            .paced_from
            .get_or_insert_with(|| (std::time::Instant::now(), emitted));
        let due = std::time::Duration::from_secs_f64((emitted - base) as f64 / self.rate as f64);
        if let Some(wait) = due.checked_sub(started.elapsed()) {
            std::thread::sleep(wait);
        }
    }
}

/// Writes `config.events` records as JSON lines, one file per topic (`<topic>.jsonl`).
pub fn write_jsonl(config: &GeneratorConfig, dir: &std::path::Path) -> std::io::Result<[u64; 4]> {
    std::fs::create_dir_all(dir)?;
    let mut files = Vec::new();
    for topic in Topic::ALL {
        files.push(std::io::BufWriter::with_capacity(
            1 << 20,
            std::fs::File::create(dir.join(format!("{}.jsonl", topic.name())))?,
        ));
    }
    let mut counts = [0u64; 4];
    let mut generator = EventGenerator::new(config);
    while let Some((topic, record)) = generator.next_record() {
        let file = &mut files[topic.index()];
        file.write_all(&record)?;
        file.write_all(b"\n")?;
        counts[topic.index()] += 1;
        generator.recycle(record);
    }
    for mut file in files {
        file.flush()?;
    }
    Ok(counts)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn records(config: &GeneratorConfig) -> Vec<(Topic, serde_json::Value)> {
        let mut generator = EventGenerator::new(config);
        std::iter::from_fn(|| generator.next_record())
            .map(|(t, r)| (t, serde_json::from_slice(&r).unwrap()))
            .collect()
    }

    #[test]
    fn deterministic_for_a_seed_and_exact_in_count() {
        let config = GeneratorConfig {
            events: 5000,
            ..Default::default()
        };
        let a = records(&config);
        assert_eq!(a.len(), 5000);
        assert_eq!(a, records(&config));
        assert_ne!(a, records(&GeneratorConfig { seed: 7, ..config }));
    }

    #[test]
    fn sessions_are_separated_by_more_than_thirty_minutes() {
        let config = GeneratorConfig {
            events: 30_000,
            users: 50,
            dirty_rate: 0.0,
            ..Default::default()
        };
        let mut last: std::collections::HashMap<i64, (i64, i64)> = Default::default();
        let mut topics = std::collections::HashSet::new();
        for (topic, r) in records(&config) {
            topics.insert(topic.name());
            let (Some(user), ts, session) = (
                r["userId"].as_i64(),
                r["ts"].as_i64().unwrap(),
                r["sessionId"].as_i64().unwrap(),
            ) else {
                continue;
            };
            if let Some((prev_ts, prev_session)) = last.insert(user, (ts, session)) {
                assert!(ts >= prev_ts, "a user's events are in time order");
                if session == prev_session {
                    assert!(ts - prev_ts < SESSION_GAP, "gap inside a session");
                } else {
                    assert!(ts - prev_ts > SESSION_GAP, "gap between sessions");
                }
            }
        }
        assert_eq!(topics.len(), 4, "all four topics appear: {topics:?}");
    }

    #[test]
    fn churned_users_are_replaced_by_newcomers_who_register() {
        let config = GeneratorConfig {
            events: 200_000,
            users: 50,
            dirty_rate: 0.0,
            ..Default::default()
        };
        let records = records(&config);
        let pages = |page: &str| {
            records
                .iter()
                .filter(|(t, r)| *t == Topic::PageView && r["page"] == page)
                .count()
        };
        assert!(pages("Cancellation Confirmation") > 0);
        assert!(
            pages("Submit Registration") > pages("Cancellation Confirmation"),
            "newcomers register"
        );
        let newcomer = records
            .iter()
            .filter_map(|(_, r)| r["userId"].as_i64())
            .max()
            .unwrap();
        assert!(newcomer >= 1050, "user ids beyond the initial 50 appear");
        // Activity does not die out: the last tenth of the records spans no more simulated time
        // than the first tenth did, give or take.
        let ts: Vec<i64> = records
            .iter()
            .map(|(_, r)| r["ts"].as_i64().unwrap())
            .filter(|t| *t < 7_000_000_000_000)
            .collect();
        let tenth = ts.len() / 10;
        let (first, last) = (
            ts[tenth] - ts[0],
            ts[ts.len() - 1] - ts[ts.len() - 1 - tenth],
        );
        assert!(
            last < first * 3,
            "first tenth spans {first} ms, last tenth {last} ms"
        );
    }
}
