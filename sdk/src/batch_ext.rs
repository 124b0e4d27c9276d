use crate::PluginError;
use arrow_array::cast::AsArray;
use arrow_array::types::{Float64Type, Int32Type, Int64Type};
use arrow_array::{
    Array, ArrayRef, Float64Array, Int32Array, Int64Array, RecordBatch, StringArray,
};
use arrow_schema::DataType;

/// Typed column access with errors that name the column.
pub trait BatchExt {
    fn column_named(&self, name: &str) -> Result<&ArrayRef, PluginError>;
    fn string_column(&self, name: &str) -> Result<&StringArray, PluginError>;
    fn i64_column(&self, name: &str) -> Result<&Int64Array, PluginError>;
    fn i32_column(&self, name: &str) -> Result<&Int32Array, PluginError>;
    fn f64_column(&self, name: &str) -> Result<&Float64Array, PluginError>;
    /// The column as strings when the batch has it as `Utf8`; `None` otherwise, for columns a
    /// plugin reads only where a topic carries them.
    fn optional_string_column(&self, name: &str) -> Option<&StringArray>;
}

/// Row `row` of an optional string column: `None` for a missing column or a null.
pub fn string_at(column: Option<&StringArray>, row: usize) -> Option<&str> {
    column.filter(|c| c.is_valid(row)).map(|c| c.value(row))
}

fn expect<'a>(
    name: &str,
    array: &'a ArrayRef,
    want: &DataType,
) -> Result<&'a ArrayRef, PluginError> {
    if array.data_type() == want {
        Ok(array)
    } else {
        Err(PluginError::Column {
            column: name.to_string(),
            problem: format!("expected {want}, found {}", array.data_type()),
        })
    }
}

impl BatchExt for RecordBatch {
    fn column_named(&self, name: &str) -> Result<&ArrayRef, PluginError> {
        self.column_by_name(name)
            .ok_or_else(|| PluginError::Column {
                column: name.to_string(),
                problem: "missing from the input batch".to_string(),
            })
    }

    fn string_column(&self, name: &str) -> Result<&StringArray, PluginError> {
        Ok(expect(name, self.column_named(name)?, &DataType::Utf8)?.as_string::<i32>())
    }

    fn i64_column(&self, name: &str) -> Result<&Int64Array, PluginError> {
        Ok(expect(name, self.column_named(name)?, &DataType::Int64)?.as_primitive::<Int64Type>())
    }

    fn i32_column(&self, name: &str) -> Result<&Int32Array, PluginError> {
        Ok(expect(name, self.column_named(name)?, &DataType::Int32)?.as_primitive::<Int32Type>())
    }

    fn f64_column(&self, name: &str) -> Result<&Float64Array, PluginError> {
        Ok(expect(name, self.column_named(name)?, &DataType::Float64)?
            .as_primitive::<Float64Type>())
    }

    fn optional_string_column(&self, name: &str) -> Option<&StringArray> {
        self.column_by_name(name)
            .filter(|c| c.data_type() == &DataType::Utf8)
            .map(|c| c.as_string::<i32>())
    }
}
