use arrow_schema::ArrowError;

/// An error a plugin returns; the host fails the batch and sends its rows to the dead-letter
/// output with this message as the reason.
#[derive(Debug, thiserror::Error)]
pub enum PluginError {
    #[error("column `{column}`: {problem}")]
    Column { column: String, problem: String },
    #[error("config: {0}")]
    Config(String),
    #[error("state: {0}")]
    State(String),
    #[error(transparent)]
    Arrow(#[from] ArrowError),
    #[error("{0}")]
    Other(String),
}

impl PluginError {
    pub fn other(message: impl Into<String>) -> Self {
        PluginError::Other(message.into())
    }
}
