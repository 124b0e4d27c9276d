//! Pipeline YAML: parse (typed, `deny_unknown_fields`), then validate everything at once,
//! with errors that name the file, line and key.
mod env;
mod locate;
mod model;
mod validate;

pub use model::*;
pub use validate::{ConfigError, ConfigErrors, LoadedPipeline, load};
