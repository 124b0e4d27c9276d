//! Avro in and out: plain binary datums with a schema from the pipeline file, or the Confluent
//! wire format (magic byte 0, a big-endian 4-byte schema id, the datum) with schemas fetched
//! from a Schema Registry's REST API and cached. Decoded datums become JSON lines, so one
//! declared-schema decoder (`json`) turns every format into Arrow.
use crate::source::SourceError;
use apache_avro::Schema;
use apache_avro::types::Value;
use arrow::datatypes::{DataType, Schema as ArrowSchema};
use std::collections::{BTreeMap, HashMap};
use std::io::{Read, Write};

pub struct AvroDecoder {
    inline: BTreeMap<String, Schema>,
    registry: Option<RegistryClient>,
    by_id: HashMap<u32, Schema>,
}

impl AvroDecoder {
    pub fn inline(schemas: &BTreeMap<String, String>) -> Result<Self, SourceError> {
        let mut inline = BTreeMap::new();
        for (topic, text) in schemas {
            let schema = Schema::parse_str(text)
                .map_err(|e| SourceError::Config(format!("Avro schema of topic `{topic}`: {e}")))?;
            inline.insert(topic.clone(), schema);
        }
        Ok(AvroDecoder {
            inline,
            registry: None,
            by_id: HashMap::new(),
        })
    }

    pub fn registry(url: &str) -> Self {
        AvroDecoder {
            inline: BTreeMap::new(),
            registry: Some(RegistryClient::new(url)),
            by_id: HashMap::new(),
        }
    }

    /// One message as a JSON object, or why it is not a valid datum.
    pub fn to_json(&mut self, topic: &str, payload: &[u8]) -> Result<Vec<u8>, String> {
        let (schema, mut datum) = match &self.registry {
            None => (
                self.inline
                    .get(topic)
                    .ok_or_else(|| format!("no Avro schema is given for topic `{topic}`"))?,
                payload,
            ),
            Some(registry) => {
                let (id, datum) = split_wire_format(payload)?;
                let schema = match self.by_id.entry(id) {
                    std::collections::hash_map::Entry::Occupied(known) => known.into_mut(),
                    std::collections::hash_map::Entry::Vacant(new) => {
                        new.insert(registry.schema(id)?)
                    }
                };
                (&*schema, datum)
            }
        };
        let length = datum.len();
        let value = apache_avro::reader::datum::GenericDatumReader::builder(schema)
            .build()
            .and_then(|reader| reader.read_value(&mut datum))
            .map_err(|e| format!("not an Avro datum of its schema: {e}"))?;
        if !datum.is_empty() {
            return Err(format!(
                "not an Avro datum of its schema: {} bytes left over",
                datum.len()
            ));
        }
        // apache-avro reads a union index past the end of the input as 0 (null here), so a
        // truncated datum would decode into nulls. Binary Avro is canonical for these schemas
        // (minimal varints, no blocks), so the value's own encoding must be exactly as long.
        let encoded = apache_avro::writer::datum::GenericDatumWriter::builder(schema)
            .build()
            .and_then(|writer| writer.write_value_to_vec(value.clone()))
            .map_err(|e| format!("not an Avro datum of its schema: {e}"))?;
        if encoded.len() != length {
            return Err(format!(
                "not an Avro datum of its schema: truncated ({length} bytes, the values read need {})",
                encoded.len()
            ));
        }
        let json = serde_json::Value::try_from(value)
            .map_err(|e| format!("Avro value has no JSON form: {e}"))?;
        Ok(serde_json::to_vec(&json).expect("JSON values serialise"))
    }
}

/// The schema id and the datum of a Confluent wire-format message.
pub fn split_wire_format(payload: &[u8]) -> Result<(u32, &[u8]), String> {
    match payload {
        [0, a, b, c, d, datum @ ..] => Ok((u32::from_be_bytes([*a, *b, *c, *d]), datum)),
        [magic, ..] if *magic != 0 => Err(format!(
            "not Confluent wire format: magic byte is {magic}, not 0"
        )),
        _ => Err(format!(
            "not Confluent wire format: {} bytes is shorter than its 5-byte header",
            payload.len()
        )),
    }
}

/// Frames a datum in the Confluent wire format.
pub fn wire_format(schema_id: u32, datum: &[u8]) -> Vec<u8> {
    let mut framed = Vec::with_capacity(datum.len() + 5);
    framed.push(0);
    framed.extend_from_slice(&schema_id.to_be_bytes());
    framed.extend_from_slice(datum);
    framed
}

/// The Avro record schema of a declared (Arrow) schema: every field a union with null.
pub fn avro_schema(name: &str, schema: &ArrowSchema) -> String {
    let fields: Vec<serde_json::Value> = schema
        .fields()
        .iter()
        .map(|field| {
            let ty = match field.data_type() {
                DataType::Int32 => "int",
                DataType::Int64 | DataType::Timestamp(..) => "long",
                DataType::Float64 => "double",
                DataType::Boolean => "boolean",
                _ => "string",
            };
            serde_json::json!({"name": field.name(), "type": ["null", ty], "default": null})
        })
        .collect();
    serde_json::json!({"type": "record", "name": name, "namespace": "sluice.eventsim", "fields": fields})
        .to_string()
}

/// Encodes a JSON object as a datum of a record schema made by `avro_schema`.
pub fn encode_json(schema: &Schema, json: &[u8]) -> Result<Vec<u8>, String> {
    let object: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(json).map_err(|e| format!("not a JSON object: {e}"))?;
    let Schema::Record(record) = schema else {
        return Err("not a record schema".into());
    };
    let mut fields = Vec::with_capacity(record.fields.len());
    for field in &record.fields {
        let branch = match &field.schema {
            Schema::Union(union) => union.variants().get(1).cloned(),
            other => Some(other.clone()),
        };
        let value = match (object.get(&field.name), branch) {
            (None | Some(serde_json::Value::Null), _) => Value::Union(0, Box::new(Value::Null)),
            (Some(json), Some(branch)) => {
                let inner = match (branch, json) {
                    (Schema::Int, v) => v.as_i64().map(|n| Value::Int(n as i32)),
                    (Schema::Long, v) => v.as_i64().map(Value::Long),
                    (Schema::Double, v) => v.as_f64().map(Value::Double),
                    (Schema::Boolean, v) => v.as_bool().map(Value::Boolean),
                    (Schema::String, serde_json::Value::String(s)) => {
                        Some(Value::String(s.clone()))
                    }
                    (Schema::String, v) => Some(Value::String(v.to_string())),
                    _ => None,
                };
                let inner =
                    inner.ok_or_else(|| format!("field `{}`: {json} does not fit", field.name))?;
                Value::Union(1, Box::new(inner))
            }
            (Some(_), None) => return Err(format!("field `{}` has no type", field.name)),
        };
        fields.push((field.name.clone(), value));
    }
    apache_avro::writer::datum::GenericDatumWriter::builder(schema)
        .build()
        .and_then(|writer| writer.write_value_to_vec(Value::Record(fields)))
        .map_err(|e| e.to_string())
}

/// A Confluent-compatible Schema Registry over plain HTTP/1.1 (what registries serve on a
/// private network): `GET /schemas/ids/{id}` and `POST /subjects/{subject}/versions`.
pub struct RegistryClient {
    host: String,
    base: String,
}

impl RegistryClient {
    pub fn new(url: &str) -> Self {
        let rest = url.strip_prefix("http://").unwrap_or(url);
        let (host, base) = match rest.split_once('/') {
            Some((host, base)) => (host.to_string(), format!("/{}", base.trim_end_matches('/'))),
            None => (rest.to_string(), String::new()),
        };
        let base = if base == "/" { String::new() } else { base };
        RegistryClient { host, base }
    }

    pub fn schema(&self, id: u32) -> Result<Schema, String> {
        let body = self.request("GET", &format!("/schemas/ids/{id}"), None)?;
        let text = body["schema"]
            .as_str()
            .ok_or_else(|| format!("schema registry: id {id}: no `schema` in {body}"))?;
        Schema::parse_str(text).map_err(|e| format!("schema registry: id {id}: {e}"))
    }

    /// Registers `schema` under `subject` (idempotent); its id.
    pub fn register(&self, subject: &str, schema: &str) -> Result<u32, String> {
        let request = serde_json::json!({ "schema": schema }).to_string();
        let body = self.request(
            "POST",
            &format!("/subjects/{subject}/versions"),
            Some(&request),
        )?;
        body["id"]
            .as_u64()
            .map(|id| id as u32)
            .ok_or_else(|| format!("schema registry: registering {subject}: no `id` in {body}"))
    }

    fn request(
        &self,
        method: &str,
        path: &str,
        body: Option<&str>,
    ) -> Result<serde_json::Value, String> {
        let fail = |e: std::io::Error| format!("schema registry {}: {e}", self.host);
        let mut stream = std::net::TcpStream::connect(&self.host).map_err(fail)?;
        stream
            .set_read_timeout(Some(std::time::Duration::from_secs(30)))
            .map_err(fail)?;
        let body = body.unwrap_or("");
        write!(
            stream,
            "{method} {}{path} HTTP/1.1\r\nHost: {}\r\nAccept: application/vnd.schemaregistry.v1+json, application/json\r\nContent-Type: application/vnd.schemaregistry.v1+json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            self.base,
            self.host,
            body.len()
        )
        .map_err(fail)?;
        let mut response = Vec::new();
        stream.read_to_end(&mut response).map_err(fail)?;
        let text = String::from_utf8_lossy(&response);
        let (head, content) = text
            .split_once("\r\n\r\n")
            .ok_or_else(|| format!("schema registry {}: malformed response", self.host))?;
        let status = head.split_whitespace().nth(1).unwrap_or("");
        let content = if head
            .to_ascii_lowercase()
            .contains("transfer-encoding: chunked")
        {
            dechunk(content)
        } else {
            content.to_string()
        };
        if status != "200" {
            return Err(format!(
                "schema registry {}: {method} {path}: HTTP {status}: {content}",
                self.host
            ));
        }
        serde_json::from_str(&content)
            .map_err(|e| format!("schema registry {}: {path}: {e}", self.host))
    }
}

fn dechunk(mut content: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = content.split_once("\r\n") {
        let Ok(size) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if size == 0 || rest.len() < size {
            break;
        }
        out.push_str(&rest[..size]);
        content = rest[size..].trim_start_matches("\r\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn listen_schema() -> Schema {
        let arrow = crate::decode::schema::eventsim("listen_events").unwrap();
        Schema::parse_str(&avro_schema("listen_events", &arrow)).unwrap()
    }

    #[test]
    fn generated_json_round_trips_through_avro() {
        let schema = listen_schema();
        let json = br#"{"artist":"A","song":"S","duration":201.5,"ts":1700000000000,"sessionId":7,"auth":"Logged In","level":"paid","itemInSession":3,"city":"Tampa","zip":"33601","state":"FL","userAgent":"x","lon":-82.4,"lat":27.9,"userId":1001,"lastName":"L","firstName":"F","gender":"M","registration":1690000000000}"#;
        let datum = encode_json(&schema, json).unwrap();
        let mut decoder = AvroDecoder::inline(&BTreeMap::from([(
            "listen_events".to_string(),
            avro_schema(
                "listen_events",
                &crate::decode::schema::eventsim("listen_events").unwrap(),
            ),
        )]))
        .unwrap();
        let back: serde_json::Value =
            serde_json::from_slice(&decoder.to_json("listen_events", &datum).unwrap()).unwrap();
        let original: serde_json::Value = serde_json::from_slice(json).unwrap();
        assert_eq!(back, original);
    }

    #[test]
    fn wire_format_errors_name_the_problem() {
        assert_eq!(
            split_wire_format(&wire_format(7, b"xy")).unwrap(),
            (7, &b"xy"[..])
        );
        assert!(
            split_wire_format(b"{\"a\":1}")
                .unwrap_err()
                .contains("magic byte is 123")
        );
        assert!(split_wire_format(&[0, 1]).unwrap_err().contains("shorter"));
    }

    #[test]
    fn a_truncated_datum_is_rejected_with_a_reason() {
        let schema = listen_schema();
        let json = br#"{"artist":"A","song":"S","ts":1,"userId":5}"#;
        let datum = encode_json(&schema, json).unwrap();
        let mut decoder = AvroDecoder {
            inline: BTreeMap::from([("listen_events".to_string(), schema)]),
            registry: None,
            by_id: HashMap::new(),
        };
        for cut in [1, 3, 6] {
            let result = decoder.to_json("listen_events", &datum[..cut]);
            assert!(result.is_err(), "{cut} bytes decoded: {result:?}");
        }
        let error = decoder
            .to_json("listen_events", b"\x02garbage")
            .unwrap_err();
        assert!(error.contains("not an Avro datum"), "{error}");
    }
}
