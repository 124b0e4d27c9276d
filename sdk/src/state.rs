//! Snapshots of plugin state as JSON. Floats round-trip bit-exactly (serde_json's
//! `float_roundtrip`), so a restored plugin continues exactly where the snapshot left off.
use crate::PluginError;
use serde::Serialize;
use serde::de::DeserializeOwned;

pub fn encode<T: Serialize>(state: &T) -> Result<Vec<u8>, PluginError> {
    serde_json::to_vec(state).map_err(|e| PluginError::State(e.to_string()))
}

pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, PluginError> {
    serde_json::from_slice(bytes).map_err(|e| PluginError::State(e.to_string()))
}
