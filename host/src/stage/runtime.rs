//! The wasmtime sandbox plugins run in: one engine per process, one store per instance, with
//! a memory limit, a fuel budget and a wall-clock deadline per call, and WASI with no
//! filesystem, network, environment or clock.
use super::limits::Limits;
use super::pieces::IpcPieces;
use arrow::record_batch::RecordBatch;
use sha2::{Digest, Sha256};
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;
use wasmtime::component::{Component, Linker, ResourceTable, TypedFunc};
use wasmtime::{Config, Engine, Store, StoreLimits, StoreLimitsBuilder, Trap};
use wasmtime_wasi::{
    HostMonotonicClock, HostWallClock, WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView,
};

mod bindings {
    wasmtime::component::bindgen!({ path: "../sdk/wit", world: "plugin" });
}

pub use bindings::exports::sluice::plugin::guest::Output as WitOutput;
use bindings::{Plugin as PluginWorld, PluginPre};

/// `process`, typed to take the input in pieces ([`IpcPieces`]); the bindings take a slice.
type ProcessPieces = TypedFunc<(IpcPieces,), (Result<Vec<WitOutput>, String>,)>;

/// The contract this host implements (`sluice:plugin@…` in `sdk/wit/plugin.wit`).
pub const CONTRACT_VERSION: &str = sluice_sdk::CONTRACT_VERSION;
const GUEST_INTERFACE: &str = "sluice:plugin/guest";
/// How often the epoch ticks; deadlines are counted in these.
const EPOCH_TICK: Duration = Duration::from_millis(5);

#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("cannot read plugin {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is a core wasm module, not a component: build the plugin for wasm32-wasip2")]
    CoreModule { path: PathBuf },
    #[error("cannot compile plugin {path}: {message}")]
    Compile { path: PathBuf, message: String },
    #[error(
        "plugin {path} was built for contract sluice:plugin@{found}; this host supports sluice:plugin@{CONTRACT_VERSION}: rebuild it against sluice-sdk {CONTRACT_VERSION}"
    )]
    ContractVersion { path: PathBuf, found: String },
    #[error(
        "{path} is not a Sluice plugin: it exports no `{GUEST_INTERFACE}` interface (exports: {exports})"
    )]
    NotAPlugin { path: PathBuf, exports: String },
    #[error("plugin {path} needs imports this sandbox does not grant: {message}")]
    Link { path: PathBuf, message: String },
    #[error("plugin `{plugin}` init failed: {message}")]
    Init { plugin: String, message: String },
    #[error("plugin `{plugin}` {call}: {reason}")]
    Call {
        plugin: String,
        call: &'static str,
        reason: String,
    },
}

/// Store data: WASI (without capabilities) and the instance's resource limits.
pub struct StoreState {
    wasi: WasiCtx,
    table: ResourceTable,
    limits: StoreLimits,
}

impl WasiView for StoreState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

/// Plugins see a clock stopped at the epoch: their output must depend on data, not on when
/// they run (replays and backfills give the same result).
struct FrozenClock;

impl HostWallClock for FrozenClock {
    fn resolution(&self) -> Duration {
        Duration::from_secs(1)
    }
    fn now(&self) -> Duration {
        Duration::ZERO
    }
}

impl HostMonotonicClock for FrozenClock {
    fn resolution(&self) -> u64 {
        1_000_000_000
    }
    fn now(&self) -> u64 {
        0
    }
}

/// The process-wide engine, with fuel metering and epoch interruption on, and a thread that
/// advances the epoch.
pub fn engine() -> &'static Engine {
    static ENGINE: OnceLock<Engine> = OnceLock::new();
    ENGINE.get_or_init(|| {
        let mut config = Config::new();
        config.wasm_component_model(true);
        config.consume_fuel(true);
        config.epoch_interruption(true);
        // `SLUICE_WASM_PROFILER=perfmap` names plugin functions in `perf report` (build the
        // plugin with its name section: `CARGO_PROFILE_PLUGIN_STRIP=false`).
        if std::env::var("SLUICE_WASM_PROFILER").as_deref() == Ok("perfmap") {
            config.profiler(wasmtime::ProfilingStrategy::PerfMap);
        }
        let engine = Engine::new(&config).expect("the fixed wasmtime configuration is valid");
        let ticker = engine.weak();
        std::thread::Builder::new()
            .name("sluice-epoch".into())
            .spawn(move || {
                while let Some(engine) = ticker.upgrade() {
                    engine.increment_epoch();
                    drop(engine);
                    std::thread::sleep(EPOCH_TICK);
                }
            })
            .expect("spawning the epoch thread");
        engine
    })
}

fn linker() -> &'static Linker<StoreState> {
    static LINKER: OnceLock<Linker<StoreState>> = OnceLock::new();
    LINKER.get_or_init(|| {
        let mut linker = Linker::new(engine());
        wasmtime_wasi::p2::add_to_linker_sync(&mut linker)
            .expect("WASI links into an empty linker");
        linker
    })
}

/// A compiled, linked plugin from which instances are created cheaply.
#[derive(Clone)]
pub struct PluginModule {
    path: PathBuf,
    sha256: String,
    pre: PluginPre<StoreState>,
}

impl PluginModule {
    /// Reads, checks and compiles a plugin (or loads it from the compile cache).
    pub fn load(path: &Path) -> Result<Self, RuntimeError> {
        let bytes = std::fs::read(path).map_err(|source| RuntimeError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_bytes(path, &bytes)
    }

    pub fn from_bytes(path: &Path, bytes: &[u8]) -> Result<Self, RuntimeError> {
        let path = path.to_path_buf();
        if bytes.starts_with(b"\0asm\x01\0\0\0") {
            return Err(RuntimeError::CoreModule { path });
        }
        let sha256 = sha256_hex(bytes);
        let component = compile_cached(&path, bytes, &sha256)?;
        check_contract(&path, &component)?;
        let instance_pre =
            linker()
                .instantiate_pre(&component)
                .map_err(|e| RuntimeError::Link {
                    path: path.clone(),
                    message: format!("{e:#}"),
                })?;
        let pre = PluginPre::new(instance_pre).map_err(|e| RuntimeError::Link {
            path: path.clone(),
            message: format!("{e:#}"),
        })?;
        Ok(PluginModule { path, sha256, pre })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn sha256(&self) -> &str {
        &self.sha256
    }
}

/// What a component imports and exports, by name (`wasi:io/streams@0.2.6`, …).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Interfaces {
    pub imports: Vec<String>,
    pub exports: Vec<String>,
}

/// Compiles a component (or loads it from the cache) and lists its interfaces, without the
/// contract and sandbox checks [`PluginModule::from_bytes`] makes.
pub fn interfaces(path: &Path, bytes: &[u8]) -> Result<Interfaces, RuntimeError> {
    if bytes.starts_with(b"\0asm\x01\0\0\0") {
        return Err(RuntimeError::CoreModule {
            path: path.to_path_buf(),
        });
    }
    let component = compile_cached(path, bytes, &sha256_hex(bytes))?;
    let ty = component.component_type();
    let names = |items: &mut dyn Iterator<Item = String>| {
        let mut names: Vec<String> = items.collect();
        names.sort();
        names
    };
    Ok(Interfaces {
        imports: names(&mut ty.imports(engine()).map(|(name, _)| name.to_string())),
        exports: names(&mut ty.exports(engine()).map(|(name, _)| name.to_string())),
    })
}

/// The hex SHA-256 of a module's bytes: how versions are told apart.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Compiling takes about a second per plugin; a precompiled artifact loads in milliseconds.
/// Artifacts are keyed by the wasm's hash and the engine's compatibility hash.
fn compile_cached(path: &Path, bytes: &[u8], sha256: &str) -> Result<Component, RuntimeError> {
    let engine = engine();
    let compile_error = |e: wasmtime::Error| {
        let message = format!("{e:#}");
        if message.contains("core module") || message.contains("component parser") {
            RuntimeError::CoreModule {
                path: path.to_path_buf(),
            }
        } else {
            RuntimeError::Compile {
                path: path.to_path_buf(),
                message,
            }
        }
    };
    let Some(cache_dir) = cache_dir() else {
        return Component::new(engine, bytes).map_err(compile_error);
    };
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    engine.precompile_compatibility_hash().hash(&mut hasher);
    let artifact = cache_dir.join(format!("{}-{:016x}.cwasm", &sha256[..32], hasher.finish()));
    if artifact.exists() {
        // SAFETY: the artifact was written by `precompile_component` of an engine with the same
        // compatibility hash, into a cache directory only this program writes.
        match unsafe { Component::deserialize_file(engine, &artifact) } {
            Ok(component) => return Ok(component),
            Err(e) => {
                tracing::warn!(artifact = %artifact.display(), error = %e, "ignoring unreadable compiled plugin")
            }
        }
    }
    let compiled = engine.precompile_component(bytes).map_err(compile_error)?;
    let tmp = artifact.with_extension(format!("tmp{}", std::process::id()));
    if std::fs::create_dir_all(&cache_dir)
        .and_then(|_| std::fs::write(&tmp, &compiled))
        .and_then(|_| std::fs::rename(&tmp, &artifact))
        .is_err()
    {
        tracing::warn!(dir = %cache_dir.display(), "cannot cache compiled plugin");
    }
    // SAFETY: `compiled` was just produced by `precompile_component` of this engine.
    unsafe { Component::deserialize(engine, &compiled) }.map_err(compile_error)
}

/// `$SLUICE_CACHE/wasm`, by default `~/.cache/sluice/wasm` (the scripts' cache root).
fn cache_dir() -> Option<PathBuf> {
    let root = std::env::var_os("SLUICE_CACHE")
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".cache/sluice"))
        })?;
    Some(root.join("wasm"))
}

/// Refuses components built for another contract version, with a message that says so.
fn check_contract(path: &Path, component: &Component) -> Result<(), RuntimeError> {
    let engine = engine();
    let ty = component.component_type();
    let exports: Vec<String> = ty
        .exports(engine)
        .map(|(name, _)| name.to_string())
        .collect();
    let wanted = format!("{GUEST_INTERFACE}@{CONTRACT_VERSION}");
    if exports.contains(&wanted) {
        return Ok(());
    }
    if let Some(found) = exports
        .iter()
        .find_map(|e| e.strip_prefix(&format!("{GUEST_INTERFACE}@")))
    {
        return Err(RuntimeError::ContractVersion {
            path: path.to_path_buf(),
            found: found.to_string(),
        });
    }
    Err(RuntimeError::NotAPlugin {
        path: path.to_path_buf(),
        exports: if exports.is_empty() {
            "none".into()
        } else {
            exports.join(", ")
        },
    })
}

/// What `init` told the host.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct PluginInfo {
    pub name: String,
    pub version: String,
    pub inputs: Vec<String>,
    pub stateful: bool,
}

/// One live plugin instance in its own store.
pub struct PluginInstance {
    module: PluginModule,
    limits: Limits,
    config_json: String,
    store: Store<StoreState>,
    world: PluginWorld,
    process: ProcessPieces,
    info: PluginInfo,
    /// Fuel the last call used.
    last_fuel: u64,
    /// A stateful plugin's way back after a trap (see [`Recovery`]).
    recovery: Recovery,
    /// Batch buffers to encode the next batches into: those [`Recovery`] let go of (only an
    /// instance that keeps one encodes batches into buffers of its own). Kept batches are memory the allocator cannot reuse, and
    /// fresh memory costs a page fault per 4 KiB (the gold benchmark's faults went from 114K to
    /// 183K when `kpis` and `sessionize` kept theirs and gave them back to the allocator).
    spare: Vec<Vec<u8>>,
}

/// What rebuilds a stateful plugin's state when a trap takes its instance: the state it was
/// last snapshotted or restored to, and every call that has changed it since. The fresh
/// instance gets the state, then the calls again, their outputs dropped (the first time's
/// were kept); a plugin sees no clock or randomness, so it ends where the lost one was before
/// the batch that trapped. Without this a trap in `sessionize` lost every open session, and
/// one in `kpis` every open day's counts.
#[derive(Default)]
struct Recovery {
    /// `None`: the state `init` gave.
    state: Option<Vec<u8>>,
    calls: Vec<Replayed>,
    /// Of the batches in `calls`: past [`PluginInstance::replay_budget`], the instance is
    /// snapshotted.
    bytes: usize,
}

enum Replayed {
    Process(Vec<u8>),
    Watermark(i64),
}

impl Recovery {
    fn from(state: Vec<u8>) -> Self {
        Recovery {
            state: Some(state),
            calls: vec![],
            bytes: 0,
        }
    }
}

/// See [`PluginInstance::replay_budget`].
const STATE_MULTIPLE: usize = 4;

/// How a call into the guest failed.
enum Failed {
    /// The plugin returned an error: the instance is fine.
    Returned(String),
    /// A trap (panic, limit, bad code): the instance is poisoned.
    Trapped(String),
}

impl PluginInstance {
    /// Instantiates the module and runs `init` with the stage config (JSON).
    pub fn new(
        module: &PluginModule,
        limits: Limits,
        config_json: &str,
    ) -> Result<Self, RuntimeError> {
        let name = module.path.display().to_string();
        let (store, world, process) =
            instantiate(module, &limits).map_err(|e| RuntimeError::Init {
                plugin: name.clone(),
                message: e,
            })?;
        let mut instance = PluginInstance {
            module: module.clone(),
            limits,
            config_json: config_json.to_string(),
            store,
            world,
            process,
            info: PluginInfo {
                name,
                version: String::new(),
                inputs: vec![],
                stateful: false,
            },
            last_fuel: 0,
            recovery: Recovery::default(),
            spare: vec![],
        };
        instance.arm();
        let result = instance
            .world
            .sluice_plugin_guest()
            .call_init(&mut instance.store, config_json);
        let info = match result {
            Ok(Ok(info)) => info,
            Ok(Err(message)) => {
                return Err(RuntimeError::Init {
                    plugin: instance.info.name,
                    message,
                });
            }
            Err(trap) => {
                return Err(RuntimeError::Init {
                    plugin: instance.info.name.clone(),
                    message: instance.describe(&trap),
                });
            }
        };
        instance.info = PluginInfo {
            name: info.name,
            version: info.version,
            inputs: info.inputs,
            stateful: info.stateful,
        };
        Ok(instance)
    }

    pub fn info(&self) -> &PluginInfo {
        &self.info
    }

    pub fn module(&self) -> &PluginModule {
        &self.module
    }

    /// Fuel (about one unit per wasm instruction) the last call used.
    pub fn last_fuel(&self) -> u64 {
        self.last_fuel
    }

    /// Gives the next call a fresh fuel budget and deadline.
    fn arm(&mut self) {
        self.store
            .set_fuel(self.limits.fuel)
            .expect("fuel metering is enabled on the engine");
        let ticks = self
            .limits
            .timeout
            .as_millis()
            .div_ceil(EPOCH_TICK.as_millis())
            .max(1) as u64;
        self.store.set_epoch_deadline(ticks);
    }

    /// Turns a trap into a reason a person can act on.
    fn describe(&self, error: &wasmtime::Error) -> String {
        match error.downcast_ref::<Trap>() {
            Some(Trap::OutOfFuel) => format!(
                "CPU limit exceeded: used all {} fuel of the batch budget",
                self.limits.fuel
            ),
            Some(Trap::Interrupt) => format!(
                "time limit exceeded: still running after {:?}",
                self.limits.timeout
            ),
            Some(trap) => format!("trapped: {trap}"),
            None => {
                let message = format!("{error:#}");
                if message.contains("growing memory") || message.contains("memory.grow") {
                    format!(
                        "memory limit exceeded: more than {} MiB",
                        self.limits.memory_mb
                    )
                } else {
                    message
                        .lines()
                        .next()
                        .unwrap_or("unknown error")
                        .to_string()
                }
            }
        }
    }

    /// One call into the guest, with a fresh budget.
    fn invoke<T>(
        &mut self,
        f: impl FnOnce(&PluginWorld, &mut Store<StoreState>) -> wasmtime::Result<Result<T, String>>,
    ) -> Result<T, Failed> {
        self.arm();
        let result = f(&self.world, &mut self.store);
        self.last_fuel = self
            .limits
            .fuel
            .saturating_sub(self.store.get_fuel().unwrap_or(0));
        match result {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(reason)) => Err(Failed::Returned(reason)),
            Err(trap) => Err(Failed::Trapped(self.describe(&trap))),
        }
    }

    /// Calls into the guest; a trap poisons the instance, so it is replaced by a fresh one
    /// (same module, limits and config, and a stateful plugin's state) before the error is
    /// returned.
    fn call<T>(
        &mut self,
        call: &'static str,
        f: impl FnOnce(&PluginWorld, &mut Store<StoreState>) -> wasmtime::Result<Result<T, String>>,
    ) -> Result<T, RuntimeError> {
        self.call_and_tell(call, f).map_err(|(error, _)| error)
    }

    /// [`Self::call`], and on an error whether the call trapped.
    fn call_and_tell<T>(
        &mut self,
        call: &'static str,
        f: impl FnOnce(&PluginWorld, &mut Store<StoreState>) -> wasmtime::Result<Result<T, String>>,
    ) -> Result<T, (RuntimeError, bool)> {
        let failed = |plugin: &PluginInfo, reason| RuntimeError::Call {
            plugin: plugin.name.clone(),
            call,
            reason,
        };
        match self.invoke(f) {
            Ok(value) => Ok(value),
            Err(Failed::Returned(reason)) => Err((failed(&self.info, reason), false)),
            Err(Failed::Trapped(reason)) => {
                let error = failed(&self.info, reason);
                self.recreate().map_err(|e| (e, true))?;
                Err((error, true))
            }
        }
    }

    /// Keeps `replayed` for [`Recovery`] unless its call trapped.
    fn remembered<T>(
        &mut self,
        result: Result<T, (RuntimeError, bool)>,
        replayed: Replayed,
    ) -> Result<T, RuntimeError> {
        match result {
            Err((error, true)) => {
                self.recycle(replayed);
                Err(error)
            }
            result => {
                self.remember(replayed);
                result.map_err(|(error, _)| error)
            }
        }
    }

    /// A buffer to encode the next batch into ([`Self::spare`]).
    fn batch_buffer(&mut self) -> Vec<u8> {
        self.spare.pop().unwrap_or_default()
    }

    /// Keeps a call's batch buffer for the next batches, as long as the spare buffers stay
    /// within the replay budget (one buffer at least): with the kept calls, a stateful
    /// instance then holds about the budget plus a batch.
    fn recycle(&mut self, replayed: Replayed) {
        let Replayed::Process(buffer) = replayed else {
            return;
        };
        let held: usize = self.spare.iter().map(Vec::capacity).sum();
        let room = self.replay_budget().max(buffer.capacity());
        if held + buffer.capacity() <= room {
            self.spare.push(buffer);
        }
    }

    /// Resets [`Recovery`] to `state`, keeping the buffers of the calls it lets go of.
    fn recover_from(&mut self, state: Vec<u8>) {
        let old = std::mem::replace(&mut self.recovery, Recovery::from(state));
        for call in old.calls {
            self.recycle(call);
        }
    }

    /// A fresh instance in place of a trapped one, with the state the trapped one had before
    /// the call that trapped, rebuilt from [`Recovery`]. If the rebuild fails too, the fresh
    /// instance starts from `init`'s state, and the loss is logged.
    fn recreate(&mut self) -> Result<(), RuntimeError> {
        let recovery = std::mem::take(&mut self.recovery);
        let spare = std::mem::take(&mut self.spare);
        let fresh = PluginInstance::new(&self.module, self.limits.clone(), &self.config_json)?;
        *self = fresh;
        self.spare = spare;
        if !self.info.stateful {
            return Ok(());
        }
        if self.limits.replay_mb == 0 {
            tracing::error!(plugin = %self.info.name, "a stateful instance trapped and starts again from its initial state: the state it had is lost (`limits.replay_mb` keeps what rebuilds it)");
            return Ok(());
        }
        match self.replay(&recovery) {
            Ok(()) => {
                tracing::info!(plugin = %self.info.name, calls = recovery.calls.len(), "state rebuilt after a trap");
                self.recovery = recovery;
            }
            Err(reason) => {
                tracing::error!(plugin = %self.info.name, %reason, "could not rebuild the state of a trapped instance: it starts again from its initial state");
                *self = PluginInstance::new(&self.module, self.limits.clone(), &self.config_json)?;
            }
        }
        Ok(())
    }

    /// Restores `recovery`'s state and makes its calls again, outputs dropped.
    fn replay(&mut self, recovery: &Recovery) -> Result<(), String> {
        let failed = |failed| match failed {
            Failed::Returned(reason) | Failed::Trapped(reason) => reason,
        };
        if let Some(state) = &recovery.state {
            self.invoke(|world, store| world.sluice_plugin_guest().call_restore(store, state))
                .map_err(failed)?;
        }
        for call in &recovery.calls {
            // A call that returned an error the first time returns it again: what it did to
            // the state before is what counts.
            let result = match call {
                Replayed::Process(batch) => self
                    .invoke(|world, store| world.sluice_plugin_guest().call_process(store, batch)),
                Replayed::Watermark(time) => self.invoke(|world, store| {
                    world.sluice_plugin_guest().call_on_watermark(store, *time)
                }),
            };
            if let Err(Failed::Trapped(reason)) = result {
                return Err(reason);
            }
        }
        Ok(())
    }

    /// Whether this instance keeps a [`Recovery`]: a stateful plugin with `limits.replay_mb`.
    fn keeps_recovery(&self) -> bool {
        self.info.stateful && self.limits.replay_mb > 0
    }

    /// The batch bytes [`Recovery`] keeps before a snapshot replaces them: `limits.replay_mb`,
    /// or [`STATE_MULTIPLE`] times the last snapshot if that is more. A snapshot costs about
    /// what processing its size in input does; with a fixed budget, a state that grows with
    /// the input made the snapshots' total cost grow with its square (the gold benchmark's
    /// sessions, open to the end of its input: 5 MB, 27 ms a snapshot, one per 16 MiB).
    fn replay_budget(&self) -> usize {
        let state = self.recovery.state.as_ref().map_or(0, Vec::len);
        ((self.limits.replay_mb << 20) as usize).max(STATE_MULTIPLE * state)
    }

    /// Keeps a call that did not trap for [`Recovery`]; past [`Self::replay_budget`] of
    /// batches, a snapshot replaces them.
    fn remember(&mut self, call: Replayed) {
        if !self.keeps_recovery() {
            self.recycle(call);
            return;
        }
        if let Replayed::Process(batch) = &call {
            self.recovery.bytes += batch.len();
        }
        self.recovery.calls.push(call);
        if self.recovery.bytes > self.replay_budget() {
            // `last_fuel` reports the call, not this snapshot.
            let fuel = self.last_fuel;
            if let Err(error) = self.snapshot() {
                tracing::warn!(plugin = %self.info.name, %error, "snapshot for trap recovery failed");
            }
            self.last_fuel = fuel;
        }
    }

    /// Runs one batch through the plugin, as Arrow IPC written straight into the guest's
    /// memory; for an instance that keeps a [`Recovery`], encoded into bytes it keeps first.
    pub fn process(&mut self, batch: &RecordBatch) -> Result<Vec<WitOutput>, RuntimeError> {
        let plugin = self.info.name.clone();
        let not_encoded = |e: arrow::error::ArrowError| RuntimeError::Call {
            plugin,
            call: "process",
            reason: format!("cannot encode batch: {e}"),
        };
        if !self.keeps_recovery() {
            let pieces = IpcPieces(sluice_sdk::ipc::encode_pieces(batch).map_err(not_encoded)?);
            let process = self.process;
            return self.call("process", |_, store| {
                process.call(store, (pieces,)).map(|(result,)| result)
            });
        }
        let mut bytes = self.batch_buffer();
        sluice_sdk::ipc::encode_into(batch, &mut bytes).map_err(not_encoded)?;
        let result = self.call_and_tell("process", |world, store| {
            world.sluice_plugin_guest().call_process(store, &bytes)
        });
        self.remembered(result, Replayed::Process(bytes))
    }

    pub fn on_watermark(&mut self, event_time_ms: i64) -> Result<Vec<WitOutput>, RuntimeError> {
        let result = self.call_and_tell("on-watermark", |world, store| {
            world
                .sluice_plugin_guest()
                .call_on_watermark(store, event_time_ms)
        });
        self.remembered(result, Replayed::Watermark(event_time_ms))
    }

    pub fn snapshot(&mut self) -> Result<Vec<u8>, RuntimeError> {
        let state = self.call("snapshot", |world, store| {
            world.sluice_plugin_guest().call_snapshot(store)
        })?;
        if self.keeps_recovery() {
            self.recover_from(state.clone());
        }
        Ok(state)
    }

    pub fn restore(&mut self, state: &[u8]) -> Result<(), RuntimeError> {
        self.call("restore", |world, store| {
            world.sluice_plugin_guest().call_restore(store, state)
        })?;
        if self.keeps_recovery() {
            self.recover_from(state.to_vec());
        }
        Ok(())
    }
}

fn instantiate(
    module: &PluginModule,
    limits: &Limits,
) -> Result<(Store<StoreState>, PluginWorld, ProcessPieces), String> {
    let wasi = WasiCtxBuilder::new()
        .wall_clock(FrozenClock)
        .monotonic_clock(FrozenClock)
        .build();
    let store_limits = StoreLimitsBuilder::new()
        .memory_size(limits.memory_mb.saturating_mul(1 << 20) as usize)
        .trap_on_grow_failure(true)
        .build();
    let mut store = Store::new(
        engine(),
        StoreState {
            wasi,
            table: ResourceTable::new(),
            limits: store_limits,
        },
    );
    store.limiter(|state| &mut state.limits);
    store.set_fuel(limits.fuel).map_err(|e| e.to_string())?;
    store.set_epoch_deadline(u64::MAX / 2);
    let instance = module
        .pre
        .instance_pre()
        .instantiate(&mut store)
        .map_err(|e| format!("{e:#}"))?;
    let world = PluginWorld::new(&mut store, &instance).map_err(|e| format!("{e:#}"))?;
    // `new` found the interface and checked its functions' types: so will this.
    let process = instance
        .get_export_index(
            &mut store,
            None,
            &format!("{GUEST_INTERFACE}@{CONTRACT_VERSION}"),
        )
        .and_then(|guest| instance.get_export_index(&mut store, Some(&guest), "process"))
        .ok_or("the guest interface has no `process`")?;
    let process = instance
        .get_typed_func(&mut store, process)
        .map_err(|e| format!("`process`: {e:#}"))?;
    Ok((store, world, process))
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::Int64Array;
    use arrow::datatypes::{DataType, Field, Schema};

    fn offsets(first: i64, rows: i64) -> RecordBatch {
        let schema = Schema::new(vec![Field::new("_offset", DataType::Int64, false)]);
        RecordBatch::try_new(
            std::sync::Arc::new(schema),
            vec![std::sync::Arc::new(Int64Array::from_iter_values(
                first..first + rows,
            ))],
        )
        .unwrap()
    }

    #[test]
    fn a_stateful_instance_keeps_at_most_its_replay_budget_of_input() {
        let module = PluginModule::load(&crate::testing::plugin_path("faulty")).unwrap();
        let config = r#"{"mode": "panic", "trigger_offset": -1, "stateful": true}"#;
        let limits = Limits {
            replay_mb: 16,
            ..Limits::default()
        };
        let mut instance = PluginInstance::new(&module, limits.clone(), config).unwrap();
        let rows = (limits.replay_mb << 20) as i64 / 8 / 2;
        instance.process(&offsets(0, rows)).unwrap();
        assert_eq!(instance.recovery.calls.len(), 1);
        assert!(instance.recovery.state.is_none());
        instance.on_watermark(0).unwrap();
        instance.process(&offsets(rows, rows)).unwrap();
        // Past the budget: a snapshot instead of the batches.
        assert!(instance.recovery.calls.is_empty());
        let seen = (rows * 2).to_string();
        assert_eq!(instance.recovery.state.as_deref(), Some(seen.as_bytes()));
        // Their buffers are kept for the next batches, within the budget.
        let spare: usize = instance.spare.iter().map(Vec::capacity).sum();
        assert!(spare > 0 && spare <= (limits.replay_mb << 20) as usize + 2 * 1024);
        assert!(instance.batch_buffer().capacity() > 0);

        let stateless = r#"{"mode": "panic", "trigger_offset": -1}"#;
        let mut instance = PluginInstance::new(&module, limits.clone(), stateless).unwrap();
        instance.process(&offsets(0, 10)).unwrap();
        assert!(
            instance.recovery.calls.is_empty(),
            "nothing kept for a stateless plugin"
        );

        let mut instance = PluginInstance::new(&module, Limits::default(), config).unwrap();
        instance.process(&offsets(0, 10)).unwrap();
        instance.snapshot().unwrap();
        assert!(instance.recovery.calls.is_empty() && instance.recovery.state.is_none());
    }
}
