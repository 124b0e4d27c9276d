//! Delta Lake tables as the format of chosen layers (`lake.formats: {gold: delta}`), through
//! the `deltalake` crate on the lake's own object store (a local folder or HDFS).
//!
//! A Delta layer's files are written where they live (`<layer>/<table>/<key>=<value>/…`),
//! not staged and renamed: a Delta reader sees only what the table's log lists, so the ACID
//! commit of the log makes them visible — all of an epoch's files of a table at once, or none.
//! The order of a lake commit becomes: data files; the Sluice commit record (source positions,
//! state, files); then one Delta commit per table, holding the epoch's `add` actions and a
//! `txn` action (application `sluice/<pipeline>/<instance>`, version = the epoch). A crash
//! between the two is finished by `recover`, which commits what the last record lists unless
//! the table's `txn` version says it is there already; so replaying never adds a file twice.
//! Files an epoch wrote before a crash that kept it from its commit record are listed by no
//! log; `recover` deletes them (their names start with the next record range).
//!
//! Tables are created on their first commit, with the first file's columns and the hive
//! partition keys as string partition columns (as `partitionValues` are). A later file with
//! other columns is refused, naming the table and the difference: a Delta table has one schema.
use crate::sink::lake::{CommitRecord, CommittedFile, LakeError, Storage};
use arrow::datatypes::{
    DataType as ArrowType, Field as ArrowField, Schema as ArrowSchema, TimeUnit,
};
use deltalake_core::kernel::{
    Action, Add, DataType, MetadataExt, PrimitiveType, Remove, StructField, StructType, Transaction,
};
use deltalake_core::logstore::{LogStoreRef, StorageConfig, default_logstore};
use deltalake_core::operations::create::CreateBuilder;
use deltalake_core::protocol::{DeltaOperation, SaveMode};
use deltalake_core::{DeltaTable, DeltaTableError};
use object_store::prefix::PrefixStore;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

/// The URL tables are addressed by inside the lake's object store.
const LAKE_URL: &str = "sluice://lake/";

/// Retries of a commit that lost a race with another writer of the table (appends of two
/// instances never conflict; they only have to take the next version).
const COMMIT_RETRIES: usize = 20;

fn delta_error(table: &str, error: impl std::fmt::Display) -> LakeError {
    LakeError::Delta {
        table: table.to_string(),
        message: error.to_string(),
    }
}

/// The Delta table a lake path belongs to (`<layer>/<table>`), and the path inside it.
pub fn table_of(path: &str) -> Option<(&str, &str)> {
    let mut slashes = path.match_indices('/').map(|(i, _)| i);
    let _layer = slashes.next()?;
    let table_end = slashes.next()?;
    Some((&path[..table_end], &path[table_end + 1..]))
}

/// `key=value` folders of a path inside a table, as Delta partition values.
fn partition_values(relative: &str) -> Vec<(String, Option<String>)> {
    let mut folders: Vec<&str> = relative.split('/').collect();
    folders.pop();
    folders
        .into_iter()
        .filter_map(|folder| folder.split_once('='))
        .map(|(key, value)| {
            let value = (value != crate::sink::lake::NULL_PARTITION).then(|| value.to_string());
            (key.to_string(), value)
        })
        .collect()
}

/// The log store of table `table` (a lake-relative folder).
///
/// A local lake's tables are addressed by `file://` URLs: the Delta kernel sorts a local
/// folder's listing itself (it comes unordered) and trusts other stores to list in order, as
/// HDFS does.
fn log_store(storage: &Storage, table: &str) -> Result<LogStoreRef, LakeError> {
    let (root, url): (Arc<dyn object_store::ObjectStore>, url::Url) = match storage.local_root() {
        Some(lake) => {
            let folder = lake.join(table);
            let url = url::Url::from_directory_path(&folder).map_err(|()| {
                delta_error(table, format!("{} is not absolute", folder.display()))
            })?;
            (Arc::new(object_store::local::LocalFileSystem::new()), url)
        }
        None => {
            let url = url::Url::parse(&format!("{LAKE_URL}{table}/"))
                .map_err(|e| delta_error(table, e))?;
            (storage.object_store(), url)
        }
    };
    let prefix =
        object_store::path::Path::from_url_path(url.path()).map_err(|e| delta_error(table, e))?;
    let prefixed = Arc::new(PrefixStore::new(root.clone(), prefix));
    Ok(default_logstore(
        prefixed,
        root,
        &url,
        &StorageConfig::default(),
    ))
}

/// Whether `table` (a lake-relative folder) is a Delta table: it has a log. (The first log
/// entry may be gone once old entries are cleaned up, so the folder is what counts.)
pub async fn is_table(storage: &Storage, table: &str) -> Result<bool, LakeError> {
    Ok(storage
        .folders(table)
        .await?
        .iter()
        .any(|f| f.trim_end_matches('/').ends_with("/_delta_log")))
}

/// The table at `table`, if there is one.
async fn open(storage: &Storage, table: &str) -> Result<Option<DeltaTable>, LakeError> {
    if !is_table(storage, table).await? {
        return Ok(None);
    }
    let store = log_store(storage, table)?;
    let mut delta = DeltaTable::new(store);
    match delta.load().await {
        Ok(()) => Ok(Some(delta)),
        Err(DeltaTableError::NotATable(_)) => Ok(None),
        Err(e) => Err(delta_error(table, e)),
    }
}

/// An error of the data, not of the store: no retry helps.
fn refused(table: &str, message: impl std::fmt::Display) -> LakeError {
    LakeError::DeltaRefused {
        table: table.to_string(),
        message: message.to_string(),
    }
}

/// The Delta type of an Arrow column type, for the types the lake's tables have.
fn delta_type(table: &str, field: &ArrowField) -> Result<DataType, LakeError> {
    use PrimitiveType::*;
    let primitive = match field.data_type() {
        ArrowType::Utf8 | ArrowType::LargeUtf8 | ArrowType::Utf8View => String,
        ArrowType::Int8 => Byte,
        ArrowType::Int16 => Short,
        ArrowType::Int32 => Integer,
        ArrowType::Int64 => Long,
        ArrowType::Float32 => Float,
        ArrowType::Float64 => Double,
        ArrowType::Boolean => Boolean,
        ArrowType::Date32 => Date,
        ArrowType::Timestamp(TimeUnit::Millisecond | TimeUnit::Microsecond, Some(_)) => Timestamp,
        ArrowType::Timestamp(TimeUnit::Millisecond | TimeUnit::Microsecond, None) => TimestampNtz,
        ArrowType::Binary | ArrowType::LargeBinary => Binary,
        other => {
            return Err(refused(
                table,
                format!(
                    "column `{}`: {other} has no Delta Lake type (unsigned integers, nested and \
                     nanosecond types do not)",
                    field.name()
                ),
            ));
        }
    };
    Ok(DataType::Primitive(primitive))
}

/// The Delta schema of a file schema plus its partition columns (strings).
fn delta_schema(
    table: &str,
    schema: &ArrowSchema,
    partitions: &[String],
) -> Result<Vec<StructField>, LakeError> {
    let mut fields = Vec::new();
    for field in schema.fields() {
        fields.push(StructField::new(
            field.name(),
            delta_type(table, field)?,
            field.is_nullable(),
        ));
    }
    for key in partitions {
        if schema.field_with_name(key).is_err() {
            fields.push(StructField::new(
                key,
                DataType::Primitive(PrimitiveType::String),
                true,
            ));
        }
    }
    Ok(fields)
}

/// The table's schema must be the files': a Delta table has one.
fn check_schema(table: &str, have: &StructType, want: &[StructField]) -> Result<(), LakeError> {
    let have: Vec<(&str, &DataType)> = have
        .fields()
        .map(|f| (f.name().as_str(), f.data_type()))
        .collect();
    let want: Vec<(&str, &DataType)> = want
        .iter()
        .map(|f| (f.name().as_str(), f.data_type()))
        .collect();
    if have == want {
        return Ok(());
    }
    let missing: Vec<_> = want.iter().filter(|w| !have.contains(w)).collect();
    let extra: Vec<_> = have.iter().filter(|h| !want.contains(h)).collect();
    Err(refused(
        table,
        format!(
            "the rows have other columns than the Delta table (a Delta table has one schema): \
             new or changed {missing:?}, gone or changed {extra:?}"
        ),
    ))
}

/// The application id of an instance's commits in its tables' logs.
fn app_id(pipeline: &str, instance: &str) -> String {
    format!("sluice/{pipeline}/{instance}")
}

/// One file to add to a table.
pub struct NewFile<'a> {
    pub file: &'a CommittedFile,
    pub size: u64,
    pub schema: &'a ArrowSchema,
}

/// Commits a lake commit's files of Delta layers to their tables (see the module docs); a
/// table whose log already holds this epoch of this instance is left as it is.
pub async fn commit_epoch(
    storage: &Storage,
    record: &CommitRecord,
    files: &[NewFile<'_>],
) -> Result<(), LakeError> {
    use futures::{StreamExt, TryStreamExt};
    let mut by_table: BTreeMap<&str, Vec<&NewFile>> = BTreeMap::new();
    for new in files {
        if let Some((table, _)) = table_of(&new.file.path) {
            by_table.entry(table).or_default().push(new);
        }
    }
    // Tables are independent, and on HDFS a commit is several round trips.
    futures::stream::iter(by_table)
        .map(|(table, files)| commit_table(storage, record, table, files))
        .buffer_unordered(TABLES_IN_FLIGHT)
        .try_collect::<Vec<()>>()
        .await?;
    Ok(())
}

/// Delta commits made at once, one per table.
const TABLES_IN_FLIGHT: usize = 8;

/// One table's part of `commit_epoch`.
async fn commit_table(
    storage: &Storage,
    record: &CommitRecord,
    table: &str,
    files: Vec<&NewFile<'_>>,
) -> Result<(), LakeError> {
    let app = app_id(&record.pipeline, &record.instance);
    let partitions: Vec<String> = table_of(&files[0].file.path)
        .map(|(_, relative)| partition_values(relative))
        .unwrap_or_default()
        .into_iter()
        .map(|(k, _)| k)
        .collect();
    let columns = delta_schema(table, files[0].schema, &partitions)?;
    let delta = match open(storage, table).await? {
        Some(delta) => delta,
        None => create(storage, table, &columns, &partitions).await?,
    };
    if logged(table, &delta, &app, record.epoch).await? {
        return Ok(());
    }
    let state = delta.snapshot().map_err(|e| delta_error(table, e))?;
    check_schema(table, state.schema().as_ref(), &columns)?;
    let now = crate::live::unix_ms(std::time::SystemTime::now()) as i64;
    let mut actions: Vec<Action> = files
        .iter()
        .map(|new| Action::Add(add(table, &new.file.path, new.file.rows, new.size, now)))
        .collect();
    actions.push(txn(&app, record.epoch, now));
    crate::failpoint::hit("delta.commit");
    let operation = DeltaOperation::Write {
        mode: SaveMode::Append,
        partition_by: (!partitions.is_empty()).then_some(partitions),
        predicate: None,
    };
    commit(storage, table, state, &delta, actions, operation).await
}

/// Whether the log of `delta` holds `app`'s commit `version` (an epoch or a job), or a later one.
async fn logged(
    table: &str,
    delta: &DeltaTable,
    app: &str,
    version: u64,
) -> Result<bool, LakeError> {
    let state = delta.snapshot().map_err(|e| delta_error(table, e))?;
    let done = state
        .transaction_version(delta.log_store().as_ref(), app)
        .await
        .map_err(|e| delta_error(table, e))?;
    Ok(done.is_some_and(|v| v >= version as i64))
}

/// Whether the table at `table` has `record`'s epoch already (recovery reads its files only
/// when not).
pub async fn has_epoch(
    storage: &Storage,
    record: &CommitRecord,
    table: &str,
) -> Result<bool, LakeError> {
    match open(storage, table).await? {
        Some(delta) => {
            logged(
                table,
                &delta,
                &app_id(&record.pipeline, &record.instance),
                record.epoch,
            )
            .await
        }
        None => Ok(false),
    }
}

/// The transaction action recording that `app` has committed `version` (an epoch or a job),
/// which makes a replay of the same commit a no-op.
fn txn(app: &str, version: u64, now: i64) -> Action {
    Action::Txn(Transaction::new_with_last_update(
        app,
        version as i64,
        Some(now),
    ))
}

async fn commit(
    storage: &Storage,
    table: &str,
    state: &deltalake_core::table::state::DeltaTableState,
    delta: &DeltaTable,
    actions: Vec<Action>,
    operation: DeltaOperation,
) -> Result<(), LakeError> {
    use deltalake_core::kernel::transaction::{CommitBuilder, CommitProperties};
    // `CommitBuilder::default()` runs no post-commit hook, so the log was never checkpointed:
    // every open of a table (one per epoch) read all its log entries, a stream's
    // ever-growing number. These properties checkpoint every `delta.checkpointInterval`
    // (100) versions, and clean up entries past `delta.logRetentionDuration` (30 days) that
    // a checkpoint covers, as Spark's writer does.
    let committed = CommitBuilder::from(CommitProperties::default())
        .with_actions(actions)
        .with_max_retries(COMMIT_RETRIES)
        .build(Some(state), delta.log_store(), operation)
        .await
        .map_err(|e| delta_error(table, e))?;
    sync_log_entry(
        storage,
        table,
        committed.version,
        committed.metrics.new_checkpoint_created,
    )
    .await
}

/// Flushes the log entry of `version` to disk (a local lake; a no-op on HDFS), and the
/// checkpoint the commit made, if it made one. delta-rs writes them through `object_store`,
/// which does not: after a crash of the machine the entry of an epoch whose source positions
/// were already reported durable could be missing, or a later one present without it, or
/// `_last_checkpoint` could name a checkpoint that is not there.
async fn sync_log_entry(
    storage: &Storage,
    table: &str,
    version: u64,
    checkpointed: bool,
) -> Result<(), LakeError> {
    let log = format!("{table}/_delta_log");
    let mut written = vec![format!("{log}/{version:020}.json")];
    if checkpointed {
        written.push(format!("{log}/{version:020}.checkpoint.parquet"));
        written.push(format!("{log}/_last_checkpoint"));
    }
    storage.sync(written.iter().map(String::as_str)).await
}

async fn create(
    storage: &Storage,
    table: &str,
    columns: &[StructField],
    partitions: &[String],
) -> Result<DeltaTable, LakeError> {
    let created = CreateBuilder::new()
        .with_log_store(log_store(storage, table)?)
        .with_columns(columns.to_vec())
        .with_partition_columns(partitions.to_vec())
        .with_save_mode(SaveMode::Ignore)
        .await;
    match created {
        Ok(delta) => {
            if let Some(version) = delta.version() {
                sync_log_entry(storage, table, version, false).await?;
            }
            Ok(delta)
        }
        // Another instance created it first.
        Err(_) if let Some(delta) = open(storage, table).await? => Ok(delta),
        Err(e) => Err(delta_error(table, e)),
    }
}

/// The `add` action of a file of `table`; `numRecords` is the only statistic (a wrong min or
/// max would make readers skip rows; none makes them read the file).
fn add(table: &str, path: &str, rows: u64, size: u64, now: i64) -> Add {
    debug_assert!(path.starts_with(table));
    let relative = table_of(path).map_or(path, |(_, r)| r);
    Add {
        path: relative.to_string(),
        partition_values: partition_values(relative).into_iter().collect(),
        size: size as i64,
        modification_time: now,
        data_change: true,
        stats: Some(format!("{{\"numRecords\":{rows}}}")),
        tags: None,
        deletion_vector: None,
        base_row_id: None,
        default_row_commit_version: None,
        clustering_provider: None,
    }
}

/// A layer's data files: for a Delta layer the files its tables' logs list (never the logs
/// themselves, nor files no log lists), else every file under it.
pub async fn layer_files(
    storage: &Storage,
    layer: &str,
    delta: bool,
) -> Result<Vec<(String, u64)>, LakeError> {
    if !delta {
        return storage.list_sizes(layer).await;
    }
    let mut files = Vec::new();
    for table in storage.folders(layer).await? {
        let table = table.trim_end_matches('/');
        for (path, size, _) in active_files(storage, table).await? {
            files.push((path, size));
        }
    }
    Ok(files)
}

/// Whether a path is part of a Delta log rather than of the table's data.
pub fn is_log(path: &str) -> bool {
    path.contains("/_delta_log/")
}

/// The files a table's log lists now, relative to the lake, with their partition values.
pub async fn active_files(
    storage: &Storage,
    table: &str,
) -> Result<Vec<(String, u64, HashMap<String, Option<String>>)>, LakeError> {
    let Some(delta) = open(storage, table).await? else {
        return Ok(vec![]);
    };
    let state = delta.snapshot().map_err(|e| delta_error(table, e))?;
    Ok(state
        .log_data()
        .iter()
        .map(|view| {
            (
                format!("{table}/{}", view.path()),
                view.size() as u64,
                view.partition_values_map(),
            )
        })
        .collect())
}

/// Replaces files of Delta tables in one commit per table (a backfill or compaction): `remove`
/// for what goes, `add` for what comes, and the job's `txn` so a replay is a no-op.
pub async fn replace(
    storage: &Storage,
    pipeline: &str,
    job: u64,
    removed: &[String],
    added: &[(String, u64, u64)],
    schemas: &BTreeMap<String, Arc<ArrowSchema>>,
) -> Result<(), LakeError> {
    let mut tables: BTreeSet<&str> = BTreeSet::new();
    tables.extend(removed.iter().filter_map(|p| table_of(p).map(|(t, _)| t)));
    tables.extend(
        added
            .iter()
            .filter_map(|(p, _, _)| table_of(p).map(|(t, _)| t)),
    );
    let app = format!("sluice/{pipeline}/jobs");
    for table in tables {
        let mut delta = match open(storage, table).await? {
            Some(delta) => delta,
            None => {
                // A table the rewrite brings (a changed plugin's new output).
                let first = added
                    .iter()
                    .find(|(p, _, _)| table_of(p).is_some_and(|(t, _)| t == table));
                let (Some((path, _, _)), Some(schema)) = (first, schemas.get(table)) else {
                    continue;
                };
                let partitions: Vec<String> = table_of(path)
                    .map(|(_, relative)| partition_values(relative))
                    .unwrap_or_default()
                    .into_iter()
                    .map(|(k, _)| k)
                    .collect();
                let columns = delta_schema(table, schema, &partitions)?;
                create(storage, table, &columns, &partitions).await?
            }
        };
        if logged(table, &delta, &app, job).await? {
            continue;
        }
        let state = delta.snapshot().map_err(|e| delta_error(table, e))?;
        let now = crate::live::unix_ms(std::time::SystemTime::now()) as i64;
        let mut actions = Vec::new();
        for path in removed
            .iter()
            .filter(|p| table_of(p).is_some_and(|(t, _)| t == table))
        {
            let relative = table_of(path).map_or(path.as_str(), |(_, r)| r);
            actions.push(Action::Remove(Remove {
                path: relative.to_string(),
                deletion_timestamp: Some(now),
                data_change: true,
                extended_file_metadata: None,
                partition_values: Some(partition_values(relative).into_iter().collect()),
                size: None,
                tags: None,
                deletion_vector: None,
                base_row_id: None,
                default_row_commit_version: None,
            }));
        }
        let mut added_here = Vec::new();
        for (path, size, rows) in added
            .iter()
            .filter(|(p, _, _)| table_of(p).is_some_and(|(t, _)| t == table))
        {
            actions.push(Action::Add(add(table, path, *rows, *size, now)));
            added_here.push(path);
        }
        if let Some(schema) = schemas.get(table) {
            let partitions: Vec<String> = state.metadata().partition_columns().to_vec();
            let columns = delta_schema(table, schema, &partitions)?;
            if check_schema(table, state.schema().as_ref(), &columns).is_err() {
                // A rebuilt layer may have other columns: the table takes the new schema in
                // the same commit that replaces every file.
                let metadata = state
                    .metadata()
                    .clone()
                    .with_schema(&StructType::try_new(columns).map_err(|e| delta_error(table, e))?)
                    .map_err(|e| delta_error(table, e))?;
                actions.push(Action::Metadata(metadata));
            }
        }
        actions.push(txn(&app, job, now));
        let operation = DeltaOperation::Write {
            mode: SaveMode::Overwrite,
            partition_by: None,
            predicate: None,
        };
        commit(storage, table, state, &delta, actions, operation).await?;
        delta
            .update_state()
            .await
            .map_err(|e| delta_error(table, e))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lake_paths_name_their_table_and_partition_values() {
        assert_eq!(
            table_of("gold/sessions/date=2026-11-01/part-main-1-2.parquet"),
            Some(("gold/sessions", "date=2026-11-01/part-main-1-2.parquet"))
        );
        assert_eq!(
            partition_values("date=2026-11-01/hour=__HIVE_DEFAULT_PARTITION__/part.parquet"),
            vec![
                ("date".to_string(), Some("2026-11-01".to_string())),
                ("hour".to_string(), None)
            ]
        );
        assert!(table_of("gold").is_none());
    }

    #[test]
    fn a_table_is_checkpointed_every_hundred_versions_and_the_checkpoint_flushed() {
        let (dir, storage, runtime) = crate::sink::lake::temporary_lake();
        let table = "silver/t";
        let schema = Arc::new(ArrowSchema::new(vec![arrow::datatypes::Field::new(
            "x",
            arrow::datatypes::DataType::Int64,
            true,
        )]));
        let schemas = BTreeMap::from([(table.to_string(), schema)]);
        runtime.block_on(async {
            // Version 0 creates the table and job n commits version n. The checkpoint comes
            // with the 100th version, and its sync fails if it is not where we look for it.
            for job in 1..CHECKPOINT_INTERVAL {
                let file = (format!("{table}/date=2026-01-01/{job}.parquet"), 10, 1);
                replace(&storage, "p", job, &[], &[file], &schemas)
                    .await
                    .unwrap();
            }
        });
        let log = dir.path().join(table).join("_delta_log");
        assert!(log.join("00000000000000000099.checkpoint.parquet").exists());
        assert!(log.join("_last_checkpoint").exists());
    }

    /// deltalake's default `delta.checkpointInterval`.
    const CHECKPOINT_INTERVAL: u64 = 100;
}
