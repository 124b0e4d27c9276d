use super::env::substitute;
use super::locate::{locate, parse_path};
use super::model::{JobKind, KafkaFormat, PipelineConfig, SourceKind};
use crate::decode::schema::{SchemaError, Schemas};
use std::fmt;
use std::path::{Path, PathBuf};

/// One problem in a pipeline file, located as precisely as the problem allows.
#[derive(Debug, Clone, PartialEq)]
pub struct ConfigError {
    pub file: PathBuf,
    pub line: Option<usize>,
    pub key: String,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
        }
        if !self.key.is_empty() {
            write!(f, ": {}", self.key)?;
        }
        write!(f, ": {}", self.message)
    }
}

/// Every problem found in a pipeline file.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.0.len();
        writeln!(
            f,
            "{n} problem{} in the pipeline:",
            if n == 1 { "" } else { "s" }
        )?;
        for error in &self.0 {
            writeln!(f, "  {error}")?;
        }
        Ok(())
    }
}

/// A parsed and validated pipeline with everything resolved that later steps need.
#[derive(Debug, Clone)]
pub struct LoadedPipeline {
    pub path: PathBuf,
    pub config: PipelineConfig,
    pub schemas: Schemas,
    /// Absolute plugin path per stage, in stage order.
    pub plugin_paths: Vec<PathBuf>,
}

/// Reads, substitutes, parses and validates a pipeline file.
pub fn load(path: &Path) -> Result<LoadedPipeline, ConfigErrors> {
    let error = |line: Option<usize>, key: &str, message: String| ConfigError {
        file: path.to_path_buf(),
        line,
        key: key.to_string(),
        message,
    };
    let raw = std::fs::read_to_string(path)
        .map_err(|e| ConfigErrors(vec![error(None, "", format!("cannot read: {e}"))]))?;

    let mut text = String::with_capacity(raw.len());
    let mut problems = Vec::new();
    for (n, line) in raw.lines().enumerate() {
        match substitute(line, |name| std::env::var(name).ok()) {
            Ok(line) => text.push_str(&line),
            Err(message) => problems.push(error(Some(n + 1), "", message)),
        }
        text.push('\n');
    }
    if !problems.is_empty() {
        return Err(ConfigErrors(problems));
    }

    let config: PipelineConfig = serde_path_to_error::deserialize(
        serde_norway::Deserializer::from_str(&text),
    )
    .map_err(|e| {
        let key = e.path().to_string();
        let inner = e.into_inner();
        let line = inner
            .location()
            .map(|l| l.line())
            .or_else(|| locate(&text, &parse_path(&key)));
        let message = inner.to_string();
        let message = message.split(" at line ").next().unwrap_or(&message);
        // serde_norway prefixes the path of the map it was in; `key` already says where.
        let message = match message.split_once(": ") {
            Some((prefix, rest)) if !prefix.contains(' ') && key.starts_with(prefix) => rest,
            _ => message,
        }
        .to_string();
        ConfigErrors(vec![error(
            line,
            if key == "." { "" } else { &key },
            message,
        )])
    })?;

    let at = |key: &str, message: String| error(locate(&text, &parse_path(key)), key, message);
    let mut problems = Vec::new();
    let base = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));

    if config.name.is_empty()
        || !config
            .name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    {
        problems.push(at(
            "name",
            format!(
                "`{}` is not a valid name: use letters, digits, `_` and `-`",
                config.name
            ),
        ));
    }
    if config.allowed_lateness_ms < 0 {
        problems.push(at("allowed_lateness_ms", "must not be negative".into()));
    }
    if config.batch_rows == 0 {
        problems.push(at("batch_rows", "must be at least 1".into()));
    }
    if crate::sink::lake::LakeUri::parse(&config.lake.uri).is_err() {
        problems.push(at("lake.uri", format!("`{}` is not a supported lake URI: use file:///absolute/path or file://./relative/path", config.lake.uri)));
    }
    if config.lake.commit_rows == 0 {
        problems.push(at("lake.commit_rows", "must be at least 1".into()));
    }
    if config.lake.max_buffer_mb == 0 {
        problems.push(at("lake.max_buffer_mb", "must be at least 1".into()));
    }
    // The layers the pipeline writes besides its dead letters: what `lake.statistics` and the
    // database sinks may name.
    let layers: Vec<&str> = config
        .stages
        .iter()
        .filter_map(|s| s.layer.as_deref())
        .chain(config.bronze.as_ref().map(|_| "bronze"))
        .collect();
    for layer in config.lake.statistics.keys() {
        if !layers.contains(&layer.as_str()) && layer != crate::sink::dead_letter::LAYER {
            problems.push(at(
                &format!("lake.statistics.{layer}"),
                format!("this pipeline writes no layer `{layer}`"),
            ));
        }
    }
    if !(1..=22).contains(&config.lake.zstd_level) {
        problems.push(at(
            "lake.zstd_level",
            format!("{} is not a zstd level (1 to 22)", config.lake.zstd_level),
        ));
    }

    let schemas = match Schemas::from_config(&config.schemas) {
        Ok(schemas) => schemas,
        Err(SchemaError { key, message }) => {
            problems.push(at(&format!("schemas.{key}"), message));
            Schemas::default()
        }
    };

    let mut job_names = std::collections::BTreeSet::new();
    for (i, job) in config.schedule.iter().enumerate() {
        let key = |field: &str| format!("schedule[{i}].{field}");
        if !job_names.insert(job.name.as_str()) {
            problems.push(at(&key("name"), format!("`{}` is named twice", job.name)));
        }
        if let Err(e) = crate::jobs::schedule::Cron::parse(&job.cron) {
            problems.push(at(&key("cron"), e));
        }
        match job.job {
            JobKind::Backfill if config.bronze.is_none() => problems.push(at(
                &key("job"),
                "a backfill replays bronze, and this pipeline writes none (add `bronze:`)".into(),
            )),
            JobKind::Compact if job.layers.iter().any(|l| l == "bronze") => problems.push(at(
                &key("layers"),
                "bronze is the log a backfill replays, file by file: it is not compacted".into(),
            )),
            JobKind::Compact if job.min_files < 2 => {
                problems.push(at(&key("min_files"), "must be at least 2".into()))
            }
            _ => {}
        }
    }

    if config.instance.is_empty() || config.instance.contains(['/', '.']) {
        problems.push(at(
            "instance",
            format!("`{}` is not a valid instance name", config.instance),
        ));
    }
    match config.source.kind() {
        None => problems.push(at(
            "source",
            "give exactly one source: `generator`, `files` or `kafka`".into(),
        )),
        Some(SourceKind::Generator(generator)) => {
            if generator.users == 0 {
                problems.push(at("source.generator.users", "must be at least 1".into()));
            }
        }
        Some(SourceKind::Files(files)) => {
            if files.paths.is_empty() {
                problems.push(at("source.files.paths", "lists no files".into()));
            }
            for (i, pattern) in files.paths.iter().enumerate() {
                match glob::glob(pattern) {
                    Err(e) => problems.push(at(
                        &format!("source.files.paths[{i}]"),
                        format!("`{pattern}` is not a valid glob: {e}"),
                    )),
                    Ok(mut matches) => {
                        if matches.next().is_none() {
                            problems.push(at(
                                &format!("source.files.paths[{i}]"),
                                format!("`{pattern}` matches no file"),
                            ));
                        }
                    }
                }
            }
            if let Some(topic) = &files.topic
                && schemas.get(topic).is_none()
            {
                problems.push(at(
                    "source.files.topic",
                    format!("no schema is declared for topic `{topic}`"),
                ));
            }
        }
        Some(SourceKind::Kafka(kafka)) => {
            if kafka.topics.is_empty() {
                problems.push(at("source.kafka.topics", "lists no topic".into()));
            }
            for (i, topic) in kafka.topics.iter().enumerate() {
                if schemas.get(topic).is_none() {
                    problems.push(at(
                        &format!("source.kafka.topics[{i}]"),
                        format!("no schema is declared for topic `{topic}`"),
                    ));
                }
                if kafka.format == KafkaFormat::Avro && !kafka.avro_schemas.contains_key(topic) {
                    problems.push(at(
                        "source.kafka.avro_schemas",
                        format!("`format: avro` needs a schema for topic `{topic}`"),
                    ));
                }
            }
            for (topic, schema) in &kafka.avro_schemas {
                if let Err(e) = apache_avro::Schema::parse_str(schema) {
                    problems.push(at(
                        &format!("source.kafka.avro_schemas.{topic}"),
                        format!("not a valid Avro schema: {e}"),
                    ));
                }
            }
            if kafka.format == KafkaFormat::ConfluentAvro && kafka.schema_registry.is_none() {
                problems.push(at(
                    "source.kafka.schema_registry",
                    "`format: confluent_avro` needs the registry's URL".into(),
                ));
            }
        }
    }

    let check_partitions = |key: &str, partition_by: &[String], problems: &mut Vec<ConfigError>| {
        for (i, p) in partition_by.iter().enumerate() {
            if p.is_empty() || p.contains(['/', '=']) {
                problems.push(at(
                    &format!("{key}[{i}]"),
                    format!("`{p}` is not a valid partition key"),
                ));
            }
        }
    };
    if let Some(bronze) = &config.bronze {
        check_partitions("bronze.partition_by", &bronze.partition_by, &mut problems);
    }

    let mut plugin_paths = Vec::new();
    for (i, stage) in config.stages.iter().enumerate() {
        let key = |k: &str| format!("stages[{i}].{k}");
        if stage.name.is_empty()
            || !stage
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        {
            problems.push(at(
                &key("name"),
                format!("`{}` is not a valid stage name", stage.name),
            ));
        }
        if config.stages[..i].iter().any(|s| s.name == stage.name) {
            problems.push(at(
                &key("name"),
                format!("stage name `{}` is used twice", stage.name),
            ));
        }
        let plugin = base.join(&stage.plugin);
        if !plugin.is_file() {
            problems.push(at(
                &key("plugin"),
                format!(
                    "plugin file {} does not exist (paths are relative to the pipeline file)",
                    plugin.display()
                ),
            ));
        }
        plugin_paths.push(plugin);
        if let Some(layer) = &stage.layer
            && (layer.is_empty()
                || layer == "bronze"
                || layer.starts_with('_')
                || !layer.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'))
        {
            problems.push(at(
                &key("layer"),
                format!("`{layer}` is not a valid layer name (letters, digits, `_`; not `bronze`)"),
            ));
        }
        for (j, topic) in stage.topics.iter().flatten().enumerate() {
            if schemas.get(topic).is_none() {
                problems.push(at(
                    &format!("stages[{i}].topics[{j}]"),
                    format!("no schema is declared for topic `{topic}`"),
                ));
            }
        }
        if stage.limits.memory_mb == 0 || stage.limits.fuel == 0 || stage.limits.timeout.is_zero() {
            problems.push(at(
                &key("limits"),
                "memory_mb, fuel and timeout_ms must all be at least 1".into(),
            ));
        }
        check_partitions(&key("partition_by"), &stage.partition_by, &mut problems);
    }

    if let Some(admin) = &config.admin {
        match admin.listen.parse::<std::net::SocketAddr>() {
            Err(_) => problems.push(at(
                "admin.listen",
                format!("`{}` is not IP:PORT", admin.listen),
            )),
            Ok(address) if !address.ip().is_loopback() && admin.token.is_none() => {
                problems.push(at(
                    "admin.listen",
                    format!(
                        "{address} is reachable from other hosts: set admin.token (a bearer \
                         token) or listen on 127.0.0.1"
                    ),
                ))
            }
            Ok(_) => {}
        }
    }

    if let Some(clickhouse) = &config.clickhouse {
        if !(clickhouse.url.starts_with("http://")) {
            problems.push(at(
                "clickhouse.url",
                format!(
                    "`{}` is not an http:// URL of ClickHouse's HTTP interface (https is not \
                     built in: put a TLS proxy in front)",
                    clickhouse.url
                ),
            ));
        }
        if !sql_name_ok(&clickhouse.database) {
            problems.push(at(
                "clickhouse.database",
                format!("`{}` is not a valid database name", clickhouse.database),
            ));
        }
        if !layers.contains(&clickhouse.layer.as_str()) {
            problems.push(at(
                "clickhouse.layer",
                format!(
                    "no stage writes layer `{}` (layers written: {})",
                    clickhouse.layer,
                    layers.join(", ")
                ),
            ));
        }
        for table in clickhouse.tables.keys() {
            if !sql_name_ok(table) {
                problems.push(at(
                    &format!("clickhouse.tables.{table}"),
                    format!("`{table}` is not a valid table name"),
                ));
            }
        }
        if clickhouse.request_timeout_ms == 0 || clickhouse.max_backoff_ms == 0 {
            problems.push(at(
                "clickhouse",
                "request_timeout_ms and max_backoff_ms must be at least 1".into(),
            ));
        }
    }

    if let Some(postgres) = &config.postgres {
        match postgres.url.parse::<postgres::Config>() {
            Err(error) => problems.push(at(
                "postgres.url",
                format!(
                    "`{}` is not a PostgreSQL connection URL: {error}",
                    postgres.url
                ),
            )),
            Ok(url) if url.get_password().is_some() => problems.push(at(
                "postgres.url",
                "carries a password: put it in `postgres.password` (say `${PGPASSWORD}`) so it \
                 never appears in logs"
                    .into(),
            )),
            Ok(_) => {}
        }
        if !sql_name_ok(&postgres.schema) {
            problems.push(at(
                "postgres.schema",
                format!("`{}` is not a valid schema name", postgres.schema),
            ));
        }
        if !layers.contains(&postgres.layer.as_str()) {
            problems.push(at(
                "postgres.layer",
                format!(
                    "no stage writes layer `{}` (layers written: {})",
                    postgres.layer,
                    layers.join(", ")
                ),
            ));
        }
        if postgres.max_backoff_ms == 0 {
            problems.push(at("postgres.max_backoff_ms", "must be at least 1".into()));
        }
    }

    if !problems.is_empty() {
        problems.sort_by_key(|p| p.line);
        return Err(ConfigErrors(problems));
    }
    Ok(LoadedPipeline {
        path: path.to_path_buf(),
        config,
        schemas,
        plugin_paths,
    })
}

/// A database, schema or table name Sluice writes without quoting trouble.
fn sql_name_ok(name: &str) -> bool {
    !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}
