//! `sluice query "SQL"`: SQL over the lake with DataFusion.
//!
//! Every table of every layer is registered as `<layer>.<table>` (`silver.listen_events`,
//! `gold.top_songs`; dead letters as `rejects.<topic>`), read through the lake's own object
//! store, so a local folder and HDFS work alike. Hive partition folders (`date=…/hour=…`)
//! become columns of the table, and a filter on them prunes whole folders before any file is
//! opened. Only committed files are visible: staged ones live under `_tmp/`.
//!
//! Identifiers are case-sensitive without quotes (`SELECT userId …`), as the lake's column
//! names are camelCase (EventSim's).
use crate::sink::lake::{LakeError, LakeUri, Storage};
use arrow::array::RecordBatch;
use arrow::datatypes::DataType;
use datafusion::catalog::MemorySchemaProvider;
use datafusion::datasource::file_format::parquet::ParquetFormat;
use datafusion::datasource::listing::{
    ListingOptions, ListingTable, ListingTableConfig, ListingTableUrl,
};
use datafusion::error::DataFusionError;
use datafusion::prelude::{SessionConfig, SessionContext};
use std::sync::Arc;

#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    #[error(transparent)]
    Lake(#[from] LakeError),
    /// DataFusion's message (its errors wrap their causes, and say them in their own text).
    #[error("{0}")]
    Sql(String),
    #[error("{0}")]
    Output(#[from] arrow::error::ArrowError),
    #[error("cannot write the result: {0}")]
    Io(#[from] std::io::Error),
    #[error("no lake at {0}")]
    NoLake(String),
    #[error("{message}\n  tables in the lake: {known}")]
    UnknownTable { message: String, known: String },
}

impl From<DataFusionError> for QueryError {
    fn from(error: DataFusionError) -> Self {
        QueryError::Sql(error.strip_backtrace())
    }
}

/// How a result is printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputFormat {
    /// An aligned text table.
    Table,
    Csv,
    /// One JSON array of row objects.
    Json,
    /// One JSON object per line.
    Ndjson,
}

/// A table found in the lake.
#[derive(Debug, Clone, PartialEq)]
pub struct LakeTable {
    /// The SQL schema: the layer (`rejects` for `_rejects`).
    pub layer: String,
    pub name: String,
    /// The folder under the lake root, without a trailing slash.
    pub path: String,
    /// Hive partition keys, outermost first.
    pub partitions: Vec<String>,
}

impl LakeTable {
    pub fn qualified(&self) -> String {
        format!("{}.{}", self.layer, self.name)
    }
}

/// The layer folder dead letters live in, and its name in SQL.
const REJECTS_FOLDER: &str = "_rejects";
const REJECTS_SCHEMA: &str = "rejects";

/// The URL the lake's object store is registered under in DataFusion.
const LAKE_URL: &str = "sluice://lake/";

/// Every table of every layer: folders under a layer folder. Layers are the top-level
/// folders not starting with `_` (those hold commits, state and staging), plus `_rejects`.
pub async fn discover(storage: &Storage) -> Result<Vec<LakeTable>, LakeError> {
    let mut tables = Vec::new();
    for layer_path in storage.folders("").await? {
        let folder = layer_path.trim_end_matches('/').to_string();
        let layer = if folder == REJECTS_FOLDER {
            REJECTS_SCHEMA.to_string()
        } else if folder.starts_with('_') || folder.starts_with('.') {
            continue;
        } else {
            folder.clone()
        };
        for table_path in storage.folders(&folder).await? {
            let path = table_path.trim_end_matches('/').to_string();
            let name = path.rsplit('/').next().unwrap_or(&path).to_string();
            if name.starts_with('_') || name.starts_with('.') {
                continue;
            }
            let partitions = partition_keys(storage, &path).await?;
            tables.push(LakeTable {
                layer: layer.clone(),
                name,
                path,
                partitions,
            });
        }
    }
    tables.sort_by(|a, b| (&a.layer, &a.name).cmp(&(&b.layer, &b.name)));
    Ok(tables)
}

/// The `key=value` folder levels under a table, read down its first branch (every file of a
/// table is partitioned the same way).
async fn partition_keys(storage: &Storage, table: &str) -> Result<Vec<String>, LakeError> {
    let mut keys = Vec::new();
    let mut folder = table.to_string();
    loop {
        let children = storage.folders(&folder).await?;
        let Some(child) = children
            .iter()
            .map(|c| c.trim_end_matches('/'))
            .find(|c| c.rsplit('/').next().is_some_and(|n| n.contains('=')))
        else {
            return Ok(keys);
        };
        let level = child.rsplit('/').next().expect("a non-empty path");
        let (key, _) = level.split_once('=').expect("found by its `=`");
        keys.push(key.to_string());
        folder = child.to_string();
    }
}

/// A DataFusion session with every table of the lake registered.
pub struct LakeSession {
    pub context: SessionContext,
    pub tables: Vec<LakeTable>,
}

impl LakeSession {
    pub async fn open(uri: &str) -> Result<Self, QueryError> {
        let lake = LakeUri::parse(uri)?;
        if let LakeUri::Local(path) = &lake
            && !path.is_dir()
        {
            return Err(QueryError::NoLake(uri.to_string()));
        }
        let storage = lake.open()?;
        let tables = discover(&storage).await?;
        let mut config = SessionConfig::new()
            .with_information_schema(true)
            .with_target_partitions(2);
        // The lake's columns are camelCase; unquoted identifiers keep their case.
        config.options_mut().sql_parser.enable_ident_normalization = false;
        let context = SessionContext::new_with_config(config);
        let url = url::Url::parse(LAKE_URL).expect("a valid URL");
        context.register_object_store(&url, storage.object_store());
        let catalog = context
            .catalog("datafusion")
            .expect("the default catalog exists");
        for layer in tables
            .iter()
            .map(|t| t.layer.as_str())
            .collect::<std::collections::BTreeSet<_>>()
        {
            catalog.register_schema(layer, Arc::new(MemorySchemaProvider::new()))?;
        }
        let state = context.state();
        for table in &tables {
            let url = ListingTableUrl::parse(format!("{LAKE_URL}{}/", table.path))?;
            let options = ListingOptions::new(Arc::new(ParquetFormat::default()))
                .with_file_extension(".parquet");
            let file_schema = match options.infer_schema(&state, &url).await {
                Ok(schema) => schema,
                // A table folder without files yet (an epoch in flight): nothing to query.
                Err(e) if e.to_string().contains("No files found") => continue,
                Err(e) => return Err(e.into()),
            };
            // A key the files hold as a column already (dead letters' `stage`) is that column.
            let partitions = table
                .partitions
                .iter()
                .filter(|key| file_schema.field_with_name(key).is_err())
                .map(|key| (key.clone(), DataType::Utf8))
                .collect();
            let config = ListingTableConfig::new(url)
                .with_listing_options(options.with_table_partition_cols(partitions))
                .with_schema(file_schema);
            let provider = ListingTable::try_new(config)?;
            context.register_table(
                datafusion::common::TableReference::partial(
                    table.layer.as_str(),
                    table.name.as_str(),
                ),
                Arc::new(provider),
            )?;
        }
        Ok(LakeSession { context, tables })
    }

    /// Runs one statement and returns its result.
    pub async fn sql(&self, sql: &str) -> Result<Vec<RecordBatch>, QueryError> {
        let result = async { self.context.sql(sql).await?.collect().await }.await;
        result.map_err(|e| match e.find_root() {
            DataFusionError::Plan(message) if message.starts_with("table '") => {
                QueryError::UnknownTable {
                    message: message.clone(),
                    known: if self.tables.is_empty() {
                        "none".into()
                    } else {
                        self.tables
                            .iter()
                            .map(LakeTable::qualified)
                            .collect::<Vec<_>>()
                            .join(", ")
                    },
                }
            }
            _ => QueryError::from(e),
        })
    }
}

/// Writes a result in `format`.
pub fn write_result(
    batches: &[RecordBatch],
    format: OutputFormat,
    out: &mut dyn std::io::Write,
) -> Result<(), QueryError> {
    match format {
        OutputFormat::Table => {
            writeln!(
                out,
                "{}",
                arrow::util::pretty::pretty_format_batches(batches)?
            )?;
            let rows: usize = batches.iter().map(RecordBatch::num_rows).sum();
            writeln!(out, "{rows} row{}", if rows == 1 { "" } else { "s" })?;
        }
        OutputFormat::Csv => {
            let mut writer = arrow::csv::WriterBuilder::new()
                .with_header(true)
                .build(out);
            for batch in batches {
                writer.write(batch)?;
            }
        }
        OutputFormat::Json => {
            let mut writer = arrow::json::ArrayWriter::new(&mut *out);
            for batch in batches {
                writer.write(batch)?;
            }
            writer.finish()?;
            writeln!(out)?;
        }
        OutputFormat::Ndjson => {
            let mut writer = arrow::json::LineDelimitedWriter::new(&mut *out);
            for batch in batches {
                writer.write(batch)?;
            }
            writer.finish()?;
        }
    }
    Ok(())
}
