use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use sluice::admin::AdminServer;
use sluice::config;
use sluice::config::KafkaFormat;
use sluice::live::Live;
use sluice::pipeline::{RunOptions, describe_source, run};
use sluice::report::summary_table;
use sluice::source::generator::{GeneratorConfig, Topic, write_jsonl};
use sluice::source::kafka::{ProduceOptions, produce_generated};
use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// jemalloc, not glibc's malloc: under glibc the resident memory of a pipeline grew with its
/// input, as freed blocks of varied sizes fragmented the arenas of the threads that passed
/// them around (job clean: 254 MiB peak at 1M events, 474 at 20M, 609 at 40M). jemalloc
/// returns what it no longer uses and stays flat (BENCHMARKS.md, memory), for ~2 % more CPU
/// on a 1-second run and none on a 20-second one.
#[cfg(not(target_env = "msvc"))]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// Sluice: a streaming transformation engine for event data, with WebAssembly plugins.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Runs a pipeline (resuming from its last commit in the lake, if any).
    Run {
        pipeline: PathBuf,
        /// Never print the progress line, even on a terminal.
        #[arg(long)]
        quiet: bool,
        /// Serve the admin API, /metrics and the status page on IP:PORT (overrides the
        /// pipeline's `admin.listen`).
        #[arg(long, value_name = "IP:PORT")]
        admin: Option<String>,
    },
    /// Checks a pipeline file without running it; lists every problem with file:line: key.
    Validate { pipeline: PathBuf },
    /// Rebuilds the layers a pipeline's stages write (silver, gold) from its bronze layer, as
    /// a batch job; the pipeline must not be running. A stream resumed afterwards goes on from
    /// the rebuilt plugin state.
    Backfill {
        pipeline: PathBuf,
        /// The layer to replay.
        #[arg(long, default_value = "bronze")]
        from: String,
        /// Never print the progress line, even on a terminal.
        #[arg(long)]
        quiet: bool,
    },
    /// Runs SQL over the lake: every table as `<layer>.<table>` (`silver.listen_events`,
    /// `gold.top_songs`, `rejects.<topic>`), hive partitions as columns, filters on them
    /// pruning folders. `SHOW TABLES` lists them.
    Query {
        sql: String,
        /// The lake (`file://…` or `hdfs://…`); default: the pipeline's, or ./lake.
        #[arg(long)]
        lake: Option<String>,
        /// Take the lake from this pipeline file.
        #[arg(long)]
        pipeline: Option<PathBuf>,
        #[arg(long, value_enum, default_value_t = QueryFormat::Table)]
        format: QueryFormat,
    },
    /// Merges the small files of the layers a pipeline's stages write (or `--layer`s), one
    /// partition folder at a time; safe while the pipeline runs.
    Compact {
        pipeline: PathBuf,
        /// A layer to compact (repeatable; default: those the stages write, and their dead
        /// letters).
        #[arg(long = "layer")]
        layers: Vec<String>,
        /// A folder is merged once it has this many small files.
        #[arg(long, default_value_t = 4)]
        min_files: usize,
        /// Merged files stop growing at about this size.
        #[arg(long, default_value_t = 128)]
        target_file_mb: u64,
    },
    /// Generates EventSim events: JSON lines files (one per topic) in a folder, or messages to
    /// a Kafka broker's four topics, keyed by user id.
    Gen {
        #[arg(long, default_value_t = 100_000)]
        events: u64,
        #[arg(long, default_value_t = 42)]
        seed: u64,
        #[arg(long, default_value_t = 1000)]
        users: u32,
        /// Fraction of records made invalid or duplicated (for exercising the clean stage).
        #[arg(long, default_value_t = 0.002)]
        dirty_rate: f64,
        /// A folder, or `kafka://HOST:PORT[,HOST:PORT…]`.
        #[arg(long, alias = "out")]
        to: String,
        /// Kafka: events per second (0: as fast as the broker takes them).
        #[arg(long, default_value_t = 0)]
        rate: u64,
        /// Kafka: partitions per topic when the topics have to be created.
        #[arg(long, default_value_t = 4)]
        partitions: i32,
        /// Kafka: message format.
        #[arg(long, value_enum, default_value_t = GenFormat::Json)]
        format: GenFormat,
        /// Kafka with `--format confluent-avro`: the Schema Registry to register schemas in.
        #[arg(long)]
        schema_registry: Option<String>,
    },
    /// The plugin author's kit: scaffold, build, test and inspect plugins (docs/plugins.md).
    Plugin {
        #[command(subcommand)]
        command: PluginCommand,
    },
}

#[derive(Subcommand)]
enum PluginCommand {
    /// Creates a plugin crate NAME/ that builds and passes its tests as generated.
    New {
        name: String,
        /// A plugin with state (windows closed by the watermark, snapshot/restore).
        #[arg(long)]
        stateful: bool,
        /// The folder to create it in.
        #[arg(long, default_value = ".")]
        dir: PathBuf,
        /// The SDK to depend on (default: the Sluice checkout this binary comes from).
        #[arg(long)]
        sdk: Option<PathBuf>,
    },
    /// Builds the plugin crate in DIR for wasm32-wasip2 and puts <crate>.wasm in DIR.
    Build {
        #[arg(default_value = ".")]
        dir: PathBuf,
        /// The cargo profile to build with.
        #[arg(long, default_value = "plugin")]
        profile: String,
    },
    /// Runs a built plugin through the real runtime on a JSON lines file and prints its
    /// outputs as tables, row counts and time per batch; fails when the plugin does.
    Test {
        plugin: PathBuf,
        #[arg(long)]
        input: PathBuf,
        /// The topic the rows belong to (an EventSim topic: its declared schema). Default: the
        /// file's name if it is one, else a schema inferred from the file.
        #[arg(long, value_name = "TOPIC")]
        schema: Option<String>,
        /// A YAML file with the stage's `config:` mapping.
        #[arg(long, value_name = "YAML")]
        config: Option<PathBuf>,
        #[arg(long, default_value_t = 8192)]
        batch_rows: usize,
        /// Rows of each output to print.
        #[arg(long, default_value_t = 10)]
        rows: usize,
    },
    /// Shows a plugin's contract version, name, version, inputs, size and imports, and
    /// whether this host's sandbox runs it.
    Inspect {
        plugin: PathBuf,
        /// A YAML file with the stage's `config:` mapping, for plugins whose init needs one.
        #[arg(long, value_name = "YAML")]
        config: Option<PathBuf>,
    },
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum QueryFormat {
    Table,
    Csv,
    Json,
    Ndjson,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum GenFormat {
    Json,
    Avro,
    ConfluentAvro,
}

fn main() -> std::process::ExitCode {
    // `sluice query … | head` should end quietly when head has read enough, as command-line
    // tools do, not panic on the closed pipe (Rust ignores SIGPIPE by default).
    // SAFETY: called before any other thread exists; SIG_DFL is a valid disposition.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    match try_main() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {}", describe(&error));
            std::process::ExitCode::FAILURE
        }
    }
}

/// The error and its causes, `: `-separated as anyhow's `{:#}` prints them, but without a
/// cause the message before it already states: many of the library's errors put their cause
/// in their own text and also expose it as their source, and the line said it twice.
fn describe(error: &anyhow::Error) -> String {
    let mut text = String::new();
    for cause in error.chain() {
        let cause = cause.to_string();
        if text.is_empty() {
            text = cause;
        } else if !text.contains(&cause) {
            text.push_str(": ");
            text.push_str(&cause);
        }
    }
    text
}

fn try_main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("SLUICE_LOG")
                .unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    match Cli::parse().command {
        Command::Validate { pipeline } => {
            let loaded = config::load(&pipeline).map_err(|e| anyhow::anyhow!("{e}"))?;
            println!(
                "{}: valid ({} stage{})",
                pipeline.display(),
                loaded.config.stages.len(),
                if loaded.config.stages.len() == 1 {
                    ""
                } else {
                    "s"
                }
            );
            Ok(())
        }
        Command::Run {
            pipeline,
            quiet,
            admin,
        } => {
            let loaded = config::load(&pipeline).map_err(|e| anyhow::anyhow!("{e}"))?;
            let live = Arc::new(Live::new(
                &loaded.config.name,
                &loaded.config.instance,
                &describe_source(&loaded),
            ));
            let configured = loaded.config.admin.as_ref();
            let listen = admin.or_else(|| configured.map(|a| a.listen.clone()));
            let _admin = match listen {
                Some(listen) => {
                    let token = configured.and_then(|a| a.token.clone());
                    let address: std::net::SocketAddr = listen
                        .parse()
                        .with_context(|| format!("--admin {listen}: not IP:PORT"))?;
                    if !address.ip().is_loopback() && token.is_none() {
                        anyhow::bail!(
                            "--admin {listen} is reachable from other hosts: set admin.token in the pipeline"
                        );
                    }
                    let server = AdminServer::start(&listen, token, vec![live.clone()])?;
                    eprintln!("admin: http://{}/", server.address());
                    Some(server)
                }
                None => None,
            };
            let options = RunOptions {
                progress: !quiet && std::io::stderr().is_terminal(),
                stop: Some(stop_on_signal()?),
                live: Some(live),
            };
            let summary = run(&loaded, &options)
                .with_context(|| format!("pipeline {} failed", pipeline.display()))?;
            print!("{}", summary_table(&summary));
            if let Ok(sluice::sink::lake::LakeUri::Local(root)) =
                sluice::sink::lake::LakeUri::parse(&loaded.config.lake.uri)
                && let Some(headline) = sluice::report::headline(&root)
            {
                print!("{headline}");
            }
            Ok(())
        }
        Command::Backfill {
            pipeline,
            from,
            quiet,
        } => {
            let loaded = config::load(&pipeline).map_err(|e| anyhow::anyhow!("{e}"))?;
            let options = sluice::jobs::backfill::BackfillOptions {
                from,
                progress: !quiet && std::io::stderr().is_terminal(),
                stop: Some(stop_on_signal()?),
            };
            let report = sluice::jobs::backfill::backfill(&loaded, &options)
                .with_context(|| format!("backfill of {} failed", pipeline.display()))?;
            print!("{}", sluice::report::backfill_table(&report));
            Ok(())
        }
        Command::Query {
            sql,
            lake,
            pipeline,
            format,
        } => {
            let lake = match (lake, pipeline) {
                (Some(lake), _) => lake,
                (None, Some(pipeline)) => {
                    config::load(&pipeline)
                        .map_err(|e| anyhow::anyhow!("{e}"))?
                        .config
                        .lake
                        .uri
                }
                (None, None) => "file://./lake".to_string(),
            };
            let format = match format {
                QueryFormat::Table => sluice::query::OutputFormat::Table,
                QueryFormat::Csv => sluice::query::OutputFormat::Csv,
                QueryFormat::Json => sluice::query::OutputFormat::Json,
                QueryFormat::Ndjson => sluice::query::OutputFormat::Ndjson,
            };
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()?;
            // The session is dropped outside the runtime: an HDFS lake's client owns a
            // runtime of its own, which tokio does not let an async context drop.
            let session = runtime.block_on(sluice::query::LakeSession::open(&lake))?;
            let batches = runtime.block_on(session.sql(&sql))?;
            let mut out = std::io::stdout().lock();
            sluice::query::write_result(&batches, format, &mut out)?;
            drop(session);
            Ok(())
        }
        Command::Compact {
            pipeline,
            layers,
            min_files,
            target_file_mb,
        } => {
            let loaded = config::load(&pipeline).map_err(|e| anyhow::anyhow!("{e}"))?;
            let options = sluice::jobs::compact::CompactOptions {
                layers,
                min_files,
                target_file_mb,
            };
            let report = sluice::jobs::compact::compact(&loaded, &options)
                .with_context(|| format!("compaction of {} failed", pipeline.display()))?;
            println!(
                "compacted {} of pipeline {}: {} files in {} folders merged into {} ({} rows) in {:.2?}",
                report.layers.join(", "),
                loaded.config.name,
                report.files_before,
                report.folders,
                report.files_after,
                report.rows,
                report.elapsed
            );
            Ok(())
        }
        Command::Gen {
            events,
            seed,
            users,
            dirty_rate,
            to,
            rate,
            partitions,
            format,
            schema_registry,
        } => {
            let config = GeneratorConfig {
                events,
                seed,
                users,
                dirty_rate,
                ..Default::default()
            };
            if let Some(brokers) = to.strip_prefix("kafka://") {
                let options = ProduceOptions {
                    rate,
                    partitions,
                    format: match format {
                        GenFormat::Json => KafkaFormat::Json,
                        GenFormat::Avro => KafkaFormat::Avro,
                        GenFormat::ConfluentAvro => KafkaFormat::ConfluentAvro,
                    },
                    schema_registry,
                };
                let started = std::time::Instant::now();
                let counts = produce_generated(&config, brokers, &options)
                    .with_context(|| format!("producing to {to}"))?;
                for (topic, count) in Topic::ALL.iter().zip(counts) {
                    println!("{count:>10}  {to}/{}", topic.name());
                }
                let total: u64 = counts.iter().sum();
                let seconds = started.elapsed().as_secs_f64();
                println!(
                    "{total} events in {seconds:.1} s ({:.0} events/s)",
                    total as f64 / seconds.max(1e-9)
                );
                return Ok(());
            }
            let out = PathBuf::from(&to);
            let counts = write_jsonl(&config, &out)
                .with_context(|| format!("writing to {}", out.display()))?;
            for (topic, count) in Topic::ALL.iter().zip(counts) {
                println!(
                    "{count:>10}  {}",
                    out.join(format!("{}.jsonl", topic.name())).display()
                );
            }
            Ok(())
        }
        Command::Plugin { command } => plugin_command(command),
    }
}

fn plugin_command(command: PluginCommand) -> Result<()> {
    use sluice::plugin_kit::{build, inspect, scaffold, trial};
    match command {
        PluginCommand::New {
            name,
            stateful,
            dir,
            sdk,
        } => {
            let sdk = scaffold::find_sdk(sdk.as_deref())?;
            let made = scaffold::new_plugin(&name, &dir, stateful, &sdk)?;
            println!(
                "created {} ({} plugin, sluice-sdk at {})",
                made.dir.display(),
                if stateful { "stateful" } else { "stateless" },
                sdk.display()
            );
            println!("  cd {}", made.dir.display());
            println!("  cargo test             # its tests, natively");
            println!("  sluice plugin build    # -> {}.wasm", made.crate_name);
            println!(
                "  sluice plugin test {}.wasm --input events.jsonl",
                made.crate_name
            );
            Ok(())
        }
        PluginCommand::Build { dir, profile } => {
            let wasm = build::build_plugin(&dir, &profile)?;
            let size = std::fs::metadata(&wasm).map(|m| m.len()).unwrap_or(0);
            println!("built {} ({size} bytes)", wasm.display());
            Ok(())
        }
        PluginCommand::Test {
            plugin,
            input,
            schema,
            config,
            batch_rows,
            rows,
        } => {
            let options = trial::TrialOptions {
                plugin,
                input,
                topic: schema,
                config_json: stage_config_json(config.as_deref())?,
                batch_rows: batch_rows.max(1),
                limits: sluice::stage::Limits::default(),
            };
            let result = trial::run_trial(&options)?;
            print!("{}", trial::render(&result, rows));
            if result.failed() {
                anyhow::bail!(
                    "plugin {} failed on {} of {} calls",
                    result.plugin,
                    result.calls.iter().filter(|c| c.error.is_some()).count(),
                    result.calls.len()
                );
            }
            Ok(())
        }
        PluginCommand::Inspect { plugin, config } => {
            let inspection = inspect::inspect(&plugin, &stage_config_json(config.as_deref())?)?;
            print!("{}", inspect::render(&inspection));
            if !inspection.usable() {
                anyhow::bail!("{} cannot run in this host", plugin.display());
            }
            Ok(())
        }
    }
}

/// A stage's `config:` mapping from a YAML file, as the JSON `init` receives.
fn stage_config_json(path: Option<&std::path::Path>) -> Result<String> {
    let Some(path) = path else {
        return Ok("{}".into());
    };
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let value: serde_json::Value =
        serde_norway::from_str(&text).with_context(|| format!("{}: not YAML", path.display()))?;
    Ok(serde_json::to_string(&value)?)
}

/// A flag set by the first SIGINT or SIGTERM: a stream then stops after a final commit. A
/// second signal ends the process at once (the lake recovers from its last commit).
fn stop_on_signal() -> Result<Arc<AtomicBool>> {
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    std::thread::Builder::new()
        .name("sluice-signals".into())
        .spawn(move || {
            runtime.block_on(async {
                use tokio::signal::unix::{SignalKind, signal};
                let (Ok(mut term), Ok(mut int)) = (
                    signal(SignalKind::terminate()),
                    signal(SignalKind::interrupt()),
                ) else {
                    return;
                };
                for round in 0..2 {
                    tokio::select! {
                        _ = term.recv() => {}
                        _ = int.recv() => {}
                    }
                    if round == 0 {
                        eprintln!("stopping after a final commit (signal again to quit now)");
                        flag.store(true, Ordering::Relaxed);
                    }
                }
                std::process::exit(130);
            });
        })?;
    Ok(stop)
}

#[cfg(test)]
mod tests {
    use super::describe;

    #[derive(Debug, thiserror::Error)]
    #[error("cannot flush {path}: {source}")]
    struct Stated {
        path: String,
        source: std::io::Error,
    }

    #[test]
    fn a_cause_the_message_already_states_is_not_repeated_and_others_are_kept() {
        let missing = || std::io::Error::new(std::io::ErrorKind::NotFound, "no such file");
        let stated = anyhow::Error::from(Stated {
            path: "a.parquet".into(),
            source: missing(),
        })
        .context("pipeline p failed");
        assert_eq!(
            describe(&stated),
            "pipeline p failed: cannot flush a.parquet: no such file"
        );
        let unstated = anyhow::Error::from(missing()).context("cannot open a.yaml");
        assert_eq!(describe(&unstated), "cannot open a.yaml: no such file");
    }
}
