//! Batch jobs over the lake — `backfill` (rebuild the layers the stages write from bronze) and
//! `compact` (merge small files) — run by hand or by a pipeline's `schedule:` (`schedule`).
//!
//! A job changes committed files, so it does what a commit does: it records every change
//! before making it. The record, a `Rewrite`, is written atomically to
//! `_jobs/<pipeline>/<number>.<job>.pending.json`; then files are moved in from the job's
//! scratch folder `_jobs/<pipeline>/<number>/`, the files they replace are removed, any commit
//! records the job gives the instances are written, the scratch folder is emptied and the
//! record renamed to `….done.json`. Each step is idempotent, so a crash anywhere is finished
//! by `finish_pending`, which a pipeline runs before it recovers its own last commit.
pub mod backfill;
pub mod compact;
pub mod schedule;

use crate::sink::lake::{CommitRecord, LakeError, Storage, commit_path};
use serde::{Deserialize, Serialize};

/// A job's change to the lake (see the module docs).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Rewrite {
    pub pipeline: String,
    /// `backfill` or `compact`.
    pub job: String,
    pub number: u64,
    /// (from, to): files the job made in its scratch folder, moved into the lake.
    pub moves: Vec<(String, String)>,
    /// Lake paths of the files they replace.
    pub remove: Vec<String>,
    /// Commit records to write (a backfill gives each instance its next one).
    #[serde(default)]
    pub records: Vec<CommitRecord>,
    /// Layers stored as Delta tables: there, what moves in and what goes is also one commit
    /// to each table's log (`remove` + `add`), made before the old files are deleted.
    #[serde(default)]
    pub delta_layers: Vec<String>,
}

impl Rewrite {
    pub fn new(pipeline: &str, job: &str, number: u64) -> Self {
        Rewrite {
            pipeline: pipeline.to_string(),
            job: job.to_string(),
            number,
            moves: vec![],
            remove: vec![],
            records: vec![],
            delta_layers: vec![],
        }
    }

    /// The folder the job writes its new files to before they are moved in.
    pub fn scratch(&self) -> String {
        scratch(&self.pipeline, self.number)
    }

    fn path(&self, state: &str) -> String {
        format!(
            "_jobs/{}/{:010}.{}.{state}.json",
            self.pipeline, self.number, self.job
        )
    }

    /// Records the rewrite, then applies it. The new files are on disk before the record
    /// that names them (a file missing from the scratch folder stops the job here, before
    /// anything changes), and the record before the change it describes.
    pub async fn commit(&self, storage: &Storage) -> Result<(), LakeError> {
        storage
            .sync(self.moves.iter().map(|(from, _)| from.as_str()))
            .await?;
        let json = serde_json::to_vec_pretty(self).expect("rewrites serialise");
        let pending = self.path("pending");
        storage.put(&pending, json).await?;
        storage.sync([pending.as_str()]).await?;
        self.apply(storage).await
    }

    /// Makes the recorded change; idempotent.
    async fn apply(&self, storage: &Storage) -> Result<(), LakeError> {
        for (from, to) in &self.moves {
            crate::failpoint::hit("rewrite.move");
            match storage.rename(from, to).await {
                Ok(()) => {}
                Err(LakeError::Store(object_store::Error::NotFound { .. }))
                    if storage.exists(to).await? => {}
                Err(e) => return Err(e),
            }
        }
        // On a local lake each step is flushed before the next: a crash of the machine must
        // not keep a deletion and lose the renames that replace what it deleted, nor keep the
        // `done` mark and lose a deletion (the replaced files would come back beside their
        // replacements, with no pending record left to remove them again).
        storage
            .sync(self.moves.iter().map(|(_, to)| to.as_str()))
            .await?;
        if !self.delta_layers.is_empty() {
            self.commit_to_delta_tables(storage).await?;
        }
        for path in &self.remove {
            storage.delete_if_present(path).await?;
        }
        storage
            .sync_removals(self.remove.iter().map(String::as_str))
            .await?;
        let mut records = Vec::with_capacity(self.records.len());
        for record in &self.records {
            let json = serde_json::to_vec_pretty(record).expect("commit records serialise");
            let path = commit_path(&record.pipeline, &record.instance, record.epoch);
            storage.put(&path, json).await?;
            records.push(path);
        }
        storage.sync(records.iter().map(String::as_str)).await?;
        storage.clear(&self.scratch()).await?;
        let done = self.path("done");
        match storage.rename(&self.path("pending"), &done).await {
            Ok(()) => {}
            Err(LakeError::Store(object_store::Error::NotFound { .. }))
                if storage.exists(&done).await? => {}
            Err(e) => return Err(e),
        }
        storage.sync([done.as_str()]).await
    }
}

impl Rewrite {
    fn in_delta_layer(&self, path: &str) -> bool {
        let layer = path.split('/').next().unwrap_or_default();
        self.delta_layers.iter().any(|l| l == layer)
    }

    /// The Delta tables' side of the rewrite: the files now in place replace the removed ones
    /// in one commit per table (a table's new columns come with it); a replay is a no-op.
    async fn commit_to_delta_tables(&self, storage: &Storage) -> Result<(), LakeError> {
        let removed: Vec<String> = self
            .remove
            .iter()
            .filter(|p| self.in_delta_layer(p))
            .cloned()
            .collect();
        let mut added = Vec::new();
        let mut schemas = std::collections::BTreeMap::new();
        for (_, to) in self.moves.iter().filter(|(_, to)| self.in_delta_layer(to)) {
            let facts = storage.parquet_facts(to).await?;
            if let Some((table, _)) = crate::sink::delta::table_of(to) {
                schemas
                    .entry(table.to_string())
                    .or_insert_with(|| facts.schema.clone());
            }
            added.push((to.clone(), facts.size, facts.rows));
        }
        crate::sink::delta::replace(
            storage,
            &self.pipeline,
            self.number,
            &removed,
            &added,
            &schemas,
        )
        .await
    }
}

fn scratch(pipeline: &str, number: u64) -> String {
    format!("_jobs/{pipeline}/{number}")
}

/// A number after every job this lake has seen for `pipeline`; empties scratch folders no
/// record refers to (a job stopped before it recorded its change).
pub async fn next_number(storage: &Storage, pipeline: &str) -> Result<u64, LakeError> {
    let folder = format!("_jobs/{pipeline}");
    let mut last = 0;
    for file in storage.list(&folder).await? {
        let rest = &file[folder.len() + 1..];
        let number = rest.split(['/', '.']).next().unwrap_or_default();
        if let Ok(n) = number.parse::<u64>() {
            last = last.max(n);
        }
        if rest.contains('/') {
            storage.delete(&file).await?;
        }
    }
    Ok(last + 1)
}

/// Finishes every rewrite of `pipeline` that was recorded but not completed.
pub async fn finish_pending(storage: &Storage, pipeline: &str) -> Result<(), LakeError> {
    let mut pending: Vec<String> = storage
        .list(&format!("_jobs/{pipeline}"))
        .await?
        .into_iter()
        .filter(|f| f.ends_with(".pending.json"))
        .collect();
    pending.sort();
    for path in pending {
        let bytes = storage.get(&path).await?;
        let rewrite: Rewrite =
            serde_json::from_slice(&bytes).map_err(|e| LakeError::CommitRecord {
                path: path.clone(),
                message: e.to_string(),
            })?;
        tracing::info!(pipeline, job = %rewrite.job, number = rewrite.number, "finishing an interrupted job");
        rewrite.apply(storage).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sink::lake::temporary_lake as lake;

    fn rewrite(storage: &Storage, runtime: &tokio::runtime::Runtime) -> Rewrite {
        let mut rewrite = Rewrite::new("p", "compact", 7);
        let scratch = format!(
            "{}/silver/t/date=2026-01-01/00000.parquet",
            rewrite.scratch()
        );
        runtime.block_on(async {
            for old in ["a", "b"] {
                let path = format!("silver/t/date=2026-01-01/{old}.parquet");
                storage.put(&path, old.into()).await.unwrap();
                rewrite.remove.push(path);
            }
            storage.put(&scratch, b"ab".to_vec()).await.unwrap();
        });
        rewrite
            .moves
            .push((scratch, "silver/t/date=2026-01-01/ab.parquet".into()));
        rewrite
    }

    #[test]
    fn a_rewrite_moves_its_files_in_removes_what_they_replace_and_is_marked_done() {
        let (_dir, storage, runtime) = lake();
        let rewrite = rewrite(&storage, &runtime);
        runtime.block_on(async {
            rewrite.commit(&storage).await.unwrap();
            assert_eq!(
                storage.list("silver").await.unwrap(),
                ["silver/t/date=2026-01-01/ab.parquet"]
            );
            assert_eq!(
                storage.list("_jobs").await.unwrap(),
                ["_jobs/p/0000000007.compact.done.json"]
            );
        });
    }

    #[test]
    fn a_rewrite_whose_new_file_is_missing_is_refused_before_anything_changes() {
        let (dir, storage, runtime) = lake();
        let mut rewrite = rewrite(&storage, &runtime);
        rewrite.moves[0].0.push_str(".gone");
        runtime.block_on(async {
            let error = rewrite.commit(&storage).await.unwrap_err();
            assert!(
                matches!(&error, LakeError::Sync { path, .. } if path.ends_with("00000.parquet.gone")),
                "{error}"
            );
            // No pending record: a restart has nothing to finish that it could not.
            assert!(!dir.path().join("_jobs/p/0000000007.compact.pending.json").exists());
            assert_eq!(storage.list("silver").await.unwrap().len(), 2);
        });
    }
}
