//! A running pipeline as operators see and steer it: its status (for the admin API, the status
//! page and readiness) and its control requests — plugin hot-swaps and rollbacks — which the
//! pipeline thread applies between two batches.
//!
//! A hot-swap is checked here, off the hot path, on the caller's thread: the module is compiled
//! (contract version, imports), instantiated with the stage's config (`init`), and given an
//! empty batch of the schema the stage saw last (a dry run). Only a module that passes is sent
//! to the pipeline thread, which commits what the old version wrote, moves the state over
//! (`snapshot` → `restore`) in every lane, and only then replaces the old instances.
use crate::stage::{Limits, PluginModule, PluginVersion, WasmStage};
use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use serde::Serialize;
use std::collections::{BTreeMap, VecDeque};
use std::path::Path;
use std::sync::{Mutex, MutexGuard, mpsc};
use std::time::{Duration, Instant, SystemTime};

/// How many recent errors the status keeps.
const RECENT_ERRORS: usize = 20;
/// The window live rates are measured over.
const RATE_WINDOW: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum SwapError {
    #[error("pipeline `{pipeline}` has no stage `{stage}`")]
    UnknownStage { pipeline: String, stage: String },
    #[error("stage `{stage}`: the new plugin was refused and the running one kept: {reason}")]
    Refused { stage: String, reason: String },
    #[error("stage `{stage}` has no earlier plugin version to roll back to")]
    NoPrevious { stage: String },
    #[error("pipeline `{0}` is not running")]
    NotRunning(String),
    #[error(
        "stage `{stage}`: the swap is checked and queued, but the pipeline has not reached a batch boundary in {seconds} s; it applies when it does (see the status)"
    )]
    Queued { stage: String, seconds: u64 },
}

impl SwapError {
    pub fn refused(stage: &str, reason: impl ToString) -> Self {
        SwapError::Refused {
            stage: stage.to_string(),
            reason: reason.to_string(),
        }
    }
}

/// A checked module, ready to be swapped in.
pub struct Candidate {
    pub module: PluginModule,
    pub version: PluginVersion,
}

pub enum ControlRequest {
    Swap(Box<Candidate>),
    Rollback,
}

/// A request to the pipeline thread; it answers on `reply`.
pub struct Control {
    pub stage: String,
    pub request: ControlRequest,
    pub reply: mpsc::Sender<Result<PluginVersion, SwapError>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RunState {
    Starting,
    Running,
    Stopping,
    Finished,
    Failed,
}

#[derive(Debug, Clone, Serialize)]
pub struct RecentError {
    /// Unix time, milliseconds.
    pub at_ms: u64,
    pub message: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct CommitStatus {
    pub epoch: u64,
    pub at_ms: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct StageStatus {
    pub name: String,
    pub plugin: PluginVersion,
    /// Versions a rollback returns to, the latest last.
    pub previous: Vec<PluginVersion>,
    /// Whether the plugin file is watched for new versions.
    pub watch: bool,
    pub records_in: u64,
    pub records_out: u64,
    pub rejected: u64,
    pub failures: u64,
    pub swaps: u64,
    /// The outcome of the last swap or rollback.
    pub last_swap: Option<String>,
    #[serde(skip)]
    pub config_json: String,
    #[serde(skip)]
    pub limits: Limits,
    /// The topic and schema of the last batch the stage processed: a new version's dry run.
    #[serde(skip)]
    pub last_input: Option<(String, SchemaRef)>,
}

#[derive(Debug, Clone, Serialize)]
pub struct PipelineStatus {
    pub name: String,
    pub instance: String,
    pub state: RunState,
    pub source: String,
    /// Unix time the run started, milliseconds.
    pub started_ms: u64,
    /// Source records consumed by this run.
    pub records: u64,
    /// Source records per second over the last ten seconds.
    pub rate: f64,
    /// Rows written this run, per layer.
    pub layers: BTreeMap<String, u64>,
    pub rejected: u64,
    pub last_commit: Option<CommitStatus>,
    pub stages: Vec<StageStatus>,
    /// The latest errors, newest last.
    pub errors: VecDeque<RecentError>,
    #[serde(skip)]
    samples: VecDeque<(Instant, u64)>,
}

impl PipelineStatus {
    pub fn stage_mut(&mut self, name: &str) -> Option<&mut StageStatus> {
        self.stages.iter_mut().find(|s| s.name == name)
    }

    /// Counts consumed records and keeps the rate current.
    pub fn add_records(&mut self, records: u64) {
        self.records += records;
        let now = Instant::now();
        while self
            .samples
            .front()
            .is_some_and(|(at, _)| now.duration_since(*at) > RATE_WINDOW)
        {
            self.samples.pop_front();
        }
        if self
            .samples
            .back()
            .is_none_or(|(at, _)| now.duration_since(*at) >= Duration::from_millis(200))
        {
            self.samples.push_back((now, self.records));
        }
        self.rate = self.current_rate(now);
    }

    fn current_rate(&self, now: Instant) -> f64 {
        match self.samples.front() {
            Some((at, records)) if now.duration_since(*at) > Duration::from_millis(500) => {
                (self.records - records) as f64 / now.duration_since(*at).as_secs_f64()
            }
            _ => 0.0,
        }
    }

    pub fn error(&mut self, message: impl Into<String>) {
        if self.errors.len() == RECENT_ERRORS {
            self.errors.pop_front();
        }
        self.errors.push_back(RecentError {
            at_ms: unix_ms(SystemTime::now()),
            message: message.into(),
        });
    }
}

pub fn unix_ms(at: SystemTime) -> u64 {
    at.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// The handle shared by a pipeline, its admin endpoints and its plugin watchers.
pub struct Live {
    pub pipeline: String,
    status: Mutex<PipelineStatus>,
    control: Mutex<Option<mpsc::Sender<Control>>>,
    /// How long a swap request waits for the pipeline to reach a batch boundary.
    pub swap_wait: Duration,
}

impl Live {
    pub fn new(pipeline: &str, instance: &str, source: &str) -> Self {
        Live {
            pipeline: pipeline.to_string(),
            status: Mutex::new(PipelineStatus {
                name: pipeline.to_string(),
                instance: instance.to_string(),
                state: RunState::Starting,
                source: source.to_string(),
                started_ms: unix_ms(SystemTime::now()),
                records: 0,
                rate: 0.0,
                layers: BTreeMap::new(),
                rejected: 0,
                last_commit: None,
                stages: Vec::new(),
                errors: VecDeque::new(),
                samples: VecDeque::new(),
            }),
            control: Mutex::new(None),
            swap_wait: Duration::from_secs(60),
        }
    }

    pub fn status(&self) -> MutexGuard<'_, PipelineStatus> {
        self.status.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A copy of the status, with the rate as of now (it decays while nothing arrives).
    pub fn snapshot(&self) -> PipelineStatus {
        let mut status = self.status().clone();
        status.rate = status.current_rate(Instant::now());
        status
    }

    /// Called by the pipeline when it runs: control requests arrive on the returned receiver.
    pub fn attach(&self) -> mpsc::Receiver<Control> {
        let (sender, receiver) = mpsc::channel();
        *self.control.lock().unwrap_or_else(|e| e.into_inner()) = Some(sender);
        receiver
    }

    /// Called by the pipeline when it ends.
    pub fn detach(&self, state: RunState, error: Option<String>) {
        *self.control.lock().unwrap_or_else(|e| e.into_inner()) = None;
        let mut status = self.status();
        status.state = state;
        if let Some(error) = error {
            status.error(error);
        }
    }

    /// Checks a new module for `stage` off the hot path, then has the pipeline swap it in.
    pub fn swap(
        &self,
        stage: &str,
        bytes: &[u8],
        origin: &str,
    ) -> Result<PluginVersion, SwapError> {
        let result = self
            .check(stage, bytes, origin)
            .and_then(|candidate| self.request(stage, ControlRequest::Swap(Box::new(candidate))));
        self.record(stage, "swap", &result);
        result
    }

    /// Has the pipeline go back to the stage's previous plugin version.
    pub fn rollback(&self, stage: &str) -> Result<PluginVersion, SwapError> {
        let result = self.request(stage, ControlRequest::Rollback);
        self.record(stage, "rollback", &result);
        result
    }

    /// Compiles, initialises and dry-runs a module as `stage` would run it.
    pub fn check(&self, stage: &str, bytes: &[u8], origin: &str) -> Result<Candidate, SwapError> {
        let (config_json, limits, last_input, running) = {
            let status = self.status();
            let found = status
                .stages
                .iter()
                .find(|s| s.name == stage)
                .ok_or_else(|| SwapError::UnknownStage {
                    pipeline: self.pipeline.clone(),
                    stage: stage.to_string(),
                })?;
            (
                found.config_json.clone(),
                found.limits.clone(),
                found.last_input.clone(),
                found.plugin.clone(),
            )
        };
        let refused = |reason: String| SwapError::refused(stage, reason);
        let module = PluginModule::from_bytes(Path::new(origin), bytes)
            .map_err(|e| refused(e.to_string()))?;
        let mut trial = WasmStage::new(stage, &module, limits, &config_json, None)
            .map_err(|e| refused(e.to_string()))?;
        let version = PluginVersion::of(&module, trial.info(), origin);
        if running.stateful && !version.stateful {
            return Err(refused(format!(
                "{} keeps state and {} does not: its state would be lost",
                running.label(),
                version.label()
            )));
        }
        if let Some((topic, schema)) = last_input {
            trial
                .process(&topic, &RecordBatch::new_empty(schema))
                .map_err(|e| {
                    refused(format!("dry run on the stage's input schema: {}", e.reason))
                })?;
        }
        Ok(Candidate { module, version })
    }

    fn request(&self, stage: &str, request: ControlRequest) -> Result<PluginVersion, SwapError> {
        let (reply, answer) = mpsc::channel();
        let sent = self
            .control
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .is_some_and(|control| {
                control
                    .send(Control {
                        stage: stage.to_string(),
                        request,
                        reply,
                    })
                    .is_ok()
            });
        if !sent {
            return Err(SwapError::NotRunning(self.pipeline.clone()));
        }
        match answer.recv_timeout(self.swap_wait) {
            Ok(result) => result,
            Err(mpsc::RecvTimeoutError::Timeout) => Err(SwapError::Queued {
                stage: stage.to_string(),
                seconds: self.swap_wait.as_secs(),
            }),
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                Err(SwapError::NotRunning(self.pipeline.clone()))
            }
        }
    }

    fn record(&self, stage: &str, what: &str, result: &Result<PluginVersion, SwapError>) {
        let outcome = match result {
            Ok(version) => {
                tracing::info!(pipeline = %self.pipeline, stage, plugin = %version.stamp(), "{what}: now running");
                format!("{what} to {} succeeded", version.stamp())
            }
            Err(SwapError::Queued { .. }) => format!("{what} queued"),
            Err(error) => {
                tracing::warn!(pipeline = %self.pipeline, stage, %error, "{what} refused");
                error.to_string()
            }
        };
        let refused = result.is_err() && !matches!(result, Err(SwapError::Queued { .. }));
        if refused {
            crate::metrics::PLUGIN_RELOADS
                .with_label_values(&[self.pipeline.as_str(), stage, "refused"])
                .inc();
        }
        let mut status = self.status();
        if refused {
            status.error(outcome.clone());
        }
        if let Some(found) = status.stage_mut(stage) {
            found.last_swap = Some(outcome);
        }
    }

    /// Watches a stage's plugin file and swaps in each new version (`watch: true`). The file
    /// is taken once it has stopped changing for one poll; write it elsewhere and rename it
    /// over the old one to be safe. Runs until the pipeline ends.
    pub fn watch(self: &std::sync::Arc<Self>, stage: &str, path: &Path, every: Duration) {
        let live = self.clone();
        let stage = stage.to_string();
        let path = path.to_path_buf();
        let spawned = std::thread::Builder::new()
            .name(format!("sluice-watch-{stage}"))
            .spawn(move || {
                let fingerprint = |path: &Path| {
                    std::fs::metadata(path)
                        .ok()
                        .map(|m| (m.len(), m.modified().ok()))
                };
                let mut seen = fingerprint(&path);
                let mut changed = None;
                loop {
                    std::thread::sleep(every);
                    if live
                        .control
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .is_none()
                        && live.status().state != RunState::Starting
                    {
                        return;
                    }
                    let now = fingerprint(&path);
                    if now == seen {
                        continue;
                    }
                    // Take the file only once two polls see the same size and time.
                    if changed != now {
                        changed = now;
                        continue;
                    }
                    seen = now;
                    let Ok(bytes) = std::fs::read(&path) else {
                        continue;
                    };
                    let running = live
                        .status()
                        .stage_mut(&stage)
                        .map(|s| s.plugin.sha256.clone());
                    if running.as_deref()
                        == Some(crate::stage::runtime::sha256_hex(&bytes).as_str())
                    {
                        continue;
                    }
                    let origin = path.display().to_string();
                    let _ = live.swap(&stage, &bytes, &origin);
                }
            });
        if let Err(error) = spawned {
            tracing::warn!(%error, "cannot watch the plugin file");
        }
    }
}
