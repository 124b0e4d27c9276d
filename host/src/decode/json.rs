//! JSON lines → Arrow with the declared schema. Flat schemas (all the YAML can declare) go
//! through `flat_json`, one pass that refuses bad records one by one. Others (nested types, as
//! `plugin test` may infer) go through arrow-json: the whole batch in one pass, and only when
//! that fails line by line to separate the bad records.
use super::flat_json::FlatJsonDecoder;
use super::schema::Schemas;
use super::{DeadLetter, OFFSET_COLUMN, ORIGIN_COLUMN};
use crate::source::RawBatch;
use arrow::array::{ArrayRef, Int64Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use arrow::error::ArrowError;
use arrow_json_reader::ReaderBuilder;
use std::collections::HashMap;
use std::sync::Arc;

use arrow::json as arrow_json_reader;

/// A decoded batch (declared columns plus `_origin` and `_offset`) and the records that did
/// not decode.
#[derive(Debug)]
pub struct Decoded {
    pub batch: Option<RecordBatch>,
    pub dead: Vec<DeadLetter>,
}

pub struct JsonDecoder {
    schemas: Schemas,
    /// Declared schema plus metadata columns, per topic.
    output: HashMap<String, SchemaRef>,
    /// The specialised decoder of each topic whose schema is flat.
    flat: HashMap<String, FlatJsonDecoder>,
}

impl JsonDecoder {
    pub fn new(schemas: Schemas) -> Self {
        let output = schemas
            .topics()
            .map(|topic| {
                let declared = schemas.get(topic).expect("listed topic");
                let mut fields: Vec<Arc<Field>> = declared.fields().iter().cloned().collect();
                fields.push(Arc::new(Field::new(ORIGIN_COLUMN, DataType::Utf8, false)));
                fields.push(Arc::new(Field::new(OFFSET_COLUMN, DataType::Int64, false)));
                (topic.to_string(), Arc::new(Schema::new(fields)))
            })
            .collect();
        let flat = schemas
            .topics()
            .filter_map(|topic| {
                let schema = schemas.get(topic).expect("listed topic").clone();
                Some((topic.to_string(), FlatJsonDecoder::new(schema)?))
            })
            .collect();
        JsonDecoder {
            schemas,
            output,
            flat,
        }
    }

    /// A decoder that uses arrow-json for every topic (the reference the benchmark and tests
    /// compare the specialised decoder with).
    pub fn arrow_json_only(schemas: Schemas) -> Self {
        let mut decoder = Self::new(schemas);
        decoder.flat.clear();
        decoder
    }

    pub fn decode(&mut self, raw: &RawBatch) -> Decoded {
        let dead_letter = |i: usize, reason: String| DeadLetter {
            topic: raw.topic.clone(),
            stage: "decode".into(),
            plugin: None,
            reason,
            origin: raw.origin.clone(),
            offset: Some(raw.offsets[i]),
            raw: String::from_utf8_lossy(raw.record(i)).into_owned(),
            bytes: None,
        };
        let Some(schema) = self.schemas.get(&raw.topic) else {
            let reason = format!("no schema is declared for topic `{}`", raw.topic);
            return Decoded {
                batch: None,
                dead: (0..raw.len())
                    .map(|i| dead_letter(i, reason.clone()))
                    .collect(),
            };
        };
        if raw.is_empty() {
            return Decoded {
                batch: None,
                dead: vec![],
            };
        }
        if let Some(flat) = self.flat.get_mut(&raw.topic) {
            // Records are split at newlines, which no multi-byte character contains: when the
            // whole batch is UTF-8, so is each record.
            let utf8 = simdutf8::basic::from_utf8(&raw.data).is_ok();
            let (columns, decoded, failed) =
                flat.decode((0..raw.len()).map(|i| raw.record(i)), utf8);
            let dead = failed
                .into_iter()
                .map(|(i, error)| {
                    let mut letter = dead_letter(i, error.to_string());
                    if std::str::from_utf8(raw.record(i)).is_err() {
                        letter.bytes = Some(raw.record(i).to_vec());
                    }
                    letter
                })
                .collect();
            let batch = (!decoded.is_empty()).then(|| {
                let offsets = decoded.iter().map(|&i| raw.offsets[i]).collect();
                let batch = RecordBatch::try_new(schema.clone(), columns)
                    .expect("the flat decoder builds the declared columns");
                self.with_metadata(&raw.topic, batch, &raw.origin, offsets)
            });
            return Decoded { batch, dead };
        }
        if let Ok(batch) = decode_lines(schema, &raw.data, raw.len())
            && batch.num_rows() == raw.len()
        {
            let batch = self.with_metadata(&raw.topic, batch, &raw.origin, raw.offsets.clone());
            return Decoded {
                batch: Some(batch),
                dead: vec![],
            };
        }
        // Slow path: find the records that do not decode, then decode the others together.
        let mut good = Vec::with_capacity(raw.data.len());
        let mut good_offsets = Vec::with_capacity(raw.len());
        let mut dead = Vec::new();
        for i in 0..raw.len() {
            let record = raw.record(i);
            match decode_lines(schema, record, 1) {
                Ok(batch) if batch.num_rows() == 1 => {
                    good.extend_from_slice(record);
                    good.push(b'\n');
                    good_offsets.push(raw.offsets[i]);
                }
                Ok(batch) => dead.push(dead_letter(
                    i,
                    format!("expected one JSON object, found {}", batch.num_rows()),
                )),
                Err(e) => dead.push(dead_letter(i, e.to_string())),
            }
        }
        let batch = if good_offsets.is_empty() {
            None
        } else {
            match decode_lines(schema, &good, good_offsets.len()) {
                Ok(batch) => Some(self.with_metadata(&raw.topic, batch, &raw.origin, good_offsets)),
                Err(e) => unreachable!("records that decode alone decode together: {e}"),
            }
        };
        Decoded { batch, dead }
    }

    fn with_metadata(
        &self,
        topic: &str,
        batch: RecordBatch,
        origin: &str,
        offsets: Vec<i64>,
    ) -> RecordBatch {
        let rows = batch.num_rows();
        let mut columns: Vec<ArrayRef> = batch.columns().to_vec();
        columns.push(Arc::new(StringArray::from_iter_values(
            std::iter::repeat_n(origin, rows),
        )));
        columns.push(Arc::new(Int64Array::from(offsets)));
        RecordBatch::try_new(self.output[topic].clone(), columns)
            .expect("metadata columns match the output schema")
    }
}

fn decode_lines(schema: &SchemaRef, data: &[u8], rows: usize) -> Result<RecordBatch, ArrowError> {
    let mut decoder = ReaderBuilder::new(schema.clone())
        .with_batch_size(rows + 1)
        .build_decoder()?;
    let mut rest = data;
    while !rest.is_empty() {
        let read = decoder.decode(rest)?;
        if read == 0 {
            break;
        }
        rest = &rest[read..];
    }
    Ok(decoder
        .flush()?
        .unwrap_or_else(|| RecordBatch::new_empty(schema.clone())))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The batch is checked for UTF-8 in one go; when that fails, record by record, so only
    /// the bad record is refused, and its bytes are kept as they were.
    #[test]
    fn one_record_that_is_not_utf8_is_refused_alone() {
        let schema = Arc::new(Schema::new(vec![Field::new("s", DataType::Utf8, true)]));
        let mut decoder = JsonDecoder::new(Schemas::one("t", schema));
        let mut raw = RawBatch::new("t", "test");
        let bad: &[u8] = b"{\"s\":\"caf\xe9\"}";
        for (offset, record) in [br#"{"s":"ok"}"#.as_slice(), bad, r#"{"s":"é"}"#.as_bytes()]
            .into_iter()
            .enumerate()
        {
            raw.push(record, offset as i64);
        }
        let decoded = decoder.decode(&raw);
        let batch = decoded.batch.unwrap();
        let strings = batch
            .column(0)
            .as_any()
            .downcast_ref::<StringArray>()
            .unwrap();
        assert_eq!((strings.value(0), strings.value(1)), ("ok", "é"));
        assert_eq!(decoded.dead.len(), 1);
        assert_eq!(decoded.dead[0].offset, Some(1));
        assert!(
            decoded.dead[0].reason.contains("not UTF-8"),
            "{:?}",
            decoded.dead[0]
        );
        assert_eq!(decoded.dead[0].bytes.as_deref(), Some(bad));
    }
}
