//! The plugin author's kit behind `sluice plugin …`: scaffold a plugin crate from the SDK's
//! template, build it for `wasm32-wasip2`, inspect a built component, and run one through the
//! production runtime on a file — no broker, no lake, no pipeline.
pub mod build;
pub mod inspect;
pub mod scaffold;
pub mod trial;

use crate::stage::RuntimeError;
use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum KitError {
    #[error(
        "`{name}` is not a usable plugin name: use lower-case letters, digits, `-` and `_`, starting with a letter"
    )]
    BadName { name: String },
    #[error("{path} already exists: choose another name or folder")]
    Exists { path: PathBuf },
    #[error(
        "cannot find the Sluice SDK (sdk/Cargo.toml) at {tried}: pass --sdk PATH, the sdk/ folder of a Sluice checkout"
    )]
    NoSdk { tried: String },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("`{command}` failed: {message}")]
    Command { command: String, message: String },
    #[error("{0}")]
    Runtime(#[from] RuntimeError),
    #[error("{path}: {message}")]
    Input { path: PathBuf, message: String },
    #[error("config {path}: {message}")]
    Config { path: PathBuf, message: String },
}

fn io(path: &std::path::Path) -> impl FnOnce(std::io::Error) -> KitError + '_ {
    move |source| KitError::Io {
        path: path.to_path_buf(),
        source,
    }
}
