//! The smallest useful plugin: a stateless filter that keeps paid users' events.
use sluice_sdk::prelude::*;

pub fn paid_only(batch: RecordBatch) -> Result<RecordBatch, PluginError> {
    let level = batch.string_column("level")?;
    let paid: BooleanArray = level.iter().map(|l| Some(l == Some("paid"))).collect();
    Ok(filter_record_batch(&batch, &paid)?)
}

sluice_sdk::export_transform!(paid_only);

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_sdk::harness::{Harness, batch_from_json, pretty};
    use std::sync::Arc;

    #[test]
    fn keeps_only_paid_rows() {
        let schema = Arc::new(Schema::new(vec![
            Field::new("userId", DataType::Int64, true),
            Field::new("level", DataType::Utf8, true),
        ]));
        let batch = batch_from_json(
            schema,
            &[
                r#"{"userId":1,"level":"paid"}"#,
                r#"{"userId":2,"level":"free"}"#,
                r#"{"userId":3}"#,
            ],
        )
        .unwrap();
        let out = Harness::<SluiceTransform>::new("")
            .unwrap()
            .process(&batch)
            .unwrap();
        assert_eq!(
            pretty(&out.output("out")),
            "+--------+-------+\n| userId | level |\n+--------+-------+\n| 1      | paid  |\n+--------+-------+"
        );
    }
}
