//! The Sluice host: reads events, decodes them to Arrow, runs them through sandboxed wasm
//! plugins and writes a medallion lake. Modules follow the data flow:
//! `source` → `decode` → `stage` → `sink`, wired by `pipeline` from `config`.
pub mod admin;
pub mod config;
pub mod decode;
pub mod failpoint;
pub mod jobs;
pub mod live;
pub mod metrics;
pub mod pipeline;
pub mod plugin_kit;
pub mod query;
pub mod report;
pub mod sink;
pub mod source;
pub mod stage;
pub mod testing;
