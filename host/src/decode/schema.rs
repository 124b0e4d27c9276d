//! Declared schemas: the built-in EventSim topics and schemas given in the pipeline YAML.
use crate::config::{FieldConfig, FieldType, SchemasConfig};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use std::collections::BTreeMap;
use std::sync::Arc;

#[derive(Debug, Clone, PartialEq)]
pub struct SchemaError {
    /// Key under `schemas.` the problem is at.
    pub key: String,
    pub message: String,
}

/// Topic → declared Arrow schema (data columns only; the host adds `_origin`/`_offset`).
#[derive(Debug, Clone, Default)]
pub struct Schemas {
    topics: BTreeMap<String, SchemaRef>,
}

pub const EVENTSIM_TOPICS: [&str; 4] = [
    "listen_events",
    "page_view_events",
    "auth_events",
    "status_change_events",
];

impl Schemas {
    pub fn from_config(config: &SchemasConfig) -> Result<Self, SchemaError> {
        let mut topics = BTreeMap::new();
        match config.builtin.as_deref() {
            None => {}
            Some("eventsim") => {
                for topic in EVENTSIM_TOPICS {
                    topics.insert(topic.to_string(), eventsim(topic).expect("built-in topic"));
                }
            }
            Some(other) => {
                return Err(SchemaError {
                    key: "builtin".into(),
                    message: format!("unknown built-in schema set `{other}` (known: eventsim)"),
                });
            }
        }
        for (topic, fields) in &config.topics {
            if fields.is_empty() {
                return Err(SchemaError {
                    key: format!("topics.{topic}"),
                    message: "declares no fields".into(),
                });
            }
            topics.insert(
                topic.clone(),
                Arc::new(Schema::new(fields.iter().map(field).collect::<Vec<_>>())),
            );
        }
        Ok(Schemas { topics })
    }

    /// One topic with a schema from elsewhere (inferred from a sample file, say).
    pub fn one(topic: &str, schema: SchemaRef) -> Self {
        Schemas {
            topics: BTreeMap::from([(topic.to_string(), schema)]),
        }
    }

    pub fn get(&self, topic: &str) -> Option<&SchemaRef> {
        self.topics.get(topic)
    }

    pub fn topics(&self) -> impl Iterator<Item = &str> {
        self.topics.keys().map(String::as_str)
    }
}

fn field(config: &FieldConfig) -> Field {
    let data_type = match config.data_type {
        FieldType::String => DataType::Utf8,
        FieldType::Int32 => DataType::Int32,
        FieldType::Int64 => DataType::Int64,
        FieldType::Float64 => DataType::Float64,
        FieldType::Boolean => DataType::Boolean,
        FieldType::TimestampMs => DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into())),
    };
    Field::new(&config.name, data_type, config.nullable)
}

/// EventSim's four topics. Everything is nullable: bronze keeps records as raw as possible and
/// the clean stage decides what is acceptable.
pub fn eventsim(topic: &str) -> Option<SchemaRef> {
    use DataType::{Boolean, Float64, Int32, Int64, Utf8};
    let location: &[(&str, DataType)] = &[
        ("city", Utf8),
        ("zip", Utf8),
        ("state", Utf8),
        ("userAgent", Utf8),
        ("lon", Float64),
        ("lat", Float64),
    ];
    let user: &[(&str, DataType)] = &[
        ("userId", Int64),
        ("lastName", Utf8),
        ("firstName", Utf8),
        ("gender", Utf8),
        ("registration", Int64),
    ];
    let song: &[(&str, DataType)] = &[("artist", Utf8), ("song", Utf8), ("duration", Float64)];
    let session = [
        ("ts", Int64),
        ("sessionId", Int64),
        ("auth", Utf8),
        ("level", Utf8),
        ("itemInSession", Int32),
    ];
    let mut fields: Vec<(&str, DataType)> = Vec::new();
    match topic {
        "listen_events" => {
            fields.extend_from_slice(song);
            fields.extend_from_slice(&session);
            fields.extend_from_slice(location);
            fields.extend_from_slice(user);
        }
        "page_view_events" => {
            fields.extend([
                ("ts", Int64),
                ("sessionId", Int64),
                ("page", Utf8),
                ("auth", Utf8),
                ("method", Utf8),
                ("status", Int32),
                ("level", Utf8),
                ("itemInSession", Int32),
            ]);
            fields.extend_from_slice(location);
            fields.extend_from_slice(user);
            fields.extend_from_slice(song);
        }
        "auth_events" => {
            fields.extend([
                ("ts", Int64),
                ("sessionId", Int64),
                ("level", Utf8),
                ("itemInSession", Int32),
            ]);
            fields.extend_from_slice(location);
            fields.extend_from_slice(user);
            fields.push(("success", Boolean));
        }
        "status_change_events" => {
            fields.extend_from_slice(&session);
            fields.extend_from_slice(location);
            fields.extend_from_slice(user);
        }
        _ => return None,
    }
    Some(Arc::new(Schema::new(
        fields
            .into_iter()
            .map(|(name, ty)| Field::new(name, ty, true))
            .collect::<Vec<_>>(),
    )))
}
