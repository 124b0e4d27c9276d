//! Sinks: where batches end up. The lake sink writes hive-partitioned Parquet through
//! `object_store`, with a two-phase commit that makes every file appear exactly once.
pub mod clickhouse;
pub mod dead_letter;
pub mod lake;
