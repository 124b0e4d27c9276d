//! `sluice query "SQL"`: SQL over the lake with DataFusion.
//!
//! Every table of every layer is registered as `<layer>.<table>` (`silver.listen_events`,
//! `gold.top_songs`; dead letters as `rejects.<topic>`), read through the lake's own object
//! store, so a local folder and HDFS work alike. Hive partition folders (`date=…/hour=…`)
//! become columns of the table, and a filter on them prunes whole folders before any file is
//! opened. Only committed files are visible: staged ones live under `_tmp/`.
//!
//! A Delta Lake table (a layer in `lake.formats` as `delta`, or any table folder with a
//! `_delta_log/`) is read through its log: only the files its current version lists, with
//! their partition values, pruned the same way.
//!
//! Identifiers are case-sensitive without quotes (`SELECT userId …`), as the lake's column
//! names are camelCase (EventSim's).
use crate::sink::lake::{LakeError, LakeUri, Storage};
use arrow::array::RecordBatch;
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::catalog::MemorySchemaProvider;
use datafusion::catalog::Session;
use datafusion::catalog::TableProvider;
use datafusion::common::{DFSchema, ScalarValue};
use datafusion::datasource::TableType;
use datafusion::datasource::file_format::parquet::ParquetFormat;
use datafusion::datasource::listing::PartitionedFile;
use datafusion::datasource::listing::helpers::{expr_applicable_for_cols, filter_partitioned_file};
use datafusion::datasource::listing::{
    ListingOptions, ListingTable, ListingTableConfig, ListingTableUrl,
};
use datafusion::datasource::physical_plan::{FileGroup, FileScanConfigBuilder, ParquetSource};
use datafusion::datasource::source::DataSourceExec;
use datafusion::datasource::table_schema::TableSchema;
use datafusion::error::DataFusionError;
use datafusion::execution::object_store::ObjectStoreUrl;
use datafusion::logical_expr::{Expr, TableProviderFilterPushDown};
use datafusion::physical_plan::ExecutionPlan;
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
            if crate::sink::delta::is_table(&storage, &table.path).await? {
                if let Some(provider) = DeltaFiles::open(&storage, table).await? {
                    register(&context, table, Arc::new(provider))?;
                }
                continue;
            }
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
            register(&context, table, Arc::new(ListingTable::try_new(config)?))?;
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

/// Makes `provider` the table `<layer>.<name>` of `context`.
fn register(
    context: &SessionContext,
    table: &LakeTable,
    provider: Arc<dyn TableProvider>,
) -> Result<(), DataFusionError> {
    let name =
        datafusion::common::TableReference::partial(table.layer.as_str(), table.name.as_str());
    context.register_table(name, provider).map(|_| ())
}

/// A Delta table as DataFusion sees it: the files its log lists, each with its partition
/// values; a filter on partition columns keeps only the files whose values pass it.
#[derive(Debug)]
struct DeltaFiles {
    /// The files' columns, then the partition columns.
    schema: SchemaRef,
    file_schema: SchemaRef,
    partition_columns: Vec<Field>,
    files: Vec<PartitionedFile>,
}

impl DeltaFiles {
    async fn open(storage: &Storage, table: &LakeTable) -> Result<Option<Self>, QueryError> {
        let files = crate::sink::delta::active_files(storage, &table.path).await?;
        let Some((first, _, partition_values)) = files.first() else {
            return Ok(None);
        };
        let facts = match storage.parquet_facts(first).await {
            Err(LakeError::Parquet(e)) => return Err(QueryError::Sql(format!("{first}: {e}"))),
            facts => facts?,
        };
        let file_schema = Arc::new(Schema::new(facts.schema.fields().clone()));
        let mut keys: Vec<&String> = partition_values.keys().collect();
        // The keys in folder order, as the path has them.
        keys.sort_by_key(|k| first.find(&format!("/{k}=")).unwrap_or(usize::MAX));
        let partition_columns: Vec<Field> = keys
            .iter()
            .map(|k| Field::new(k.as_str(), DataType::Utf8, true))
            .collect();
        let mut fields: Vec<Field> = file_schema
            .fields()
            .iter()
            .map(|f| f.as_ref().clone())
            .collect();
        fields.extend(partition_columns.iter().cloned());
        let files = files
            .iter()
            .map(|(path, size, values)| {
                let mut file = PartitionedFile::new(path.clone(), *size);
                file.partition_values = keys
                    .iter()
                    .map(|k| ScalarValue::Utf8(values.get(*k).cloned().flatten()))
                    .collect();
                file
            })
            .collect();
        Ok(Some(DeltaFiles {
            schema: Arc::new(Schema::new(fields)),
            file_schema,
            partition_columns,
            files,
        }))
    }

    fn partition_names(&self) -> Vec<&str> {
        self.partition_columns
            .iter()
            .map(|f| f.name().as_str())
            .collect()
    }
}

#[async_trait::async_trait]
impl TableProvider for DeltaFiles {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> datafusion::error::Result<Vec<TableProviderFilterPushDown>> {
        let names = self.partition_names();
        Ok(filters
            .iter()
            .map(|f| {
                if expr_applicable_for_cols(&names, f) {
                    TableProviderFilterPushDown::Inexact
                } else {
                    TableProviderFilterPushDown::Unsupported
                }
            })
            .collect())
    }

    async fn scan(
        &self,
        _state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> datafusion::error::Result<Arc<dyn ExecutionPlan>> {
        let names = self.partition_names();
        let on_partitions: Vec<Expr> = filters
            .iter()
            .filter(|f| expr_applicable_for_cols(&names, f))
            .cloned()
            .collect();
        let partition_schema = DFSchema::try_from(Schema::new(self.partition_columns.clone()))?;
        let mut files = Vec::new();
        for file in &self.files {
            if let Some(file) =
                filter_partitioned_file(file.clone(), &on_partitions, &partition_schema)?
            {
                files.push(file);
            }
        }
        let table_schema = TableSchema::builder(self.file_schema.clone())
            .with_table_partition_cols(
                self.partition_columns
                    .iter()
                    .cloned()
                    .map(Arc::new)
                    .collect::<Vec<_>>(),
            )
            .build();
        let config = FileScanConfigBuilder::new(
            ObjectStoreUrl::parse(LAKE_URL)?,
            Arc::new(ParquetSource::new(table_schema)),
        )
        .with_file_group(FileGroup::new(files))
        .with_projection_indices(projection.cloned())?
        .with_limit(limit)
        .build();
        Ok(DataSourceExec::from_data_source(config))
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
