use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use sluice::config;
use sluice::pipeline::{RunOptions, run};
use sluice::report::summary_table;
use sluice::source::generator::{GeneratorConfig, Topic, write_jsonl};
use std::io::IsTerminal;
use std::path::PathBuf;

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
    },
    /// Checks a pipeline file without running it; lists every problem with file:line: key.
    Validate { pipeline: PathBuf },
    /// Writes generated EventSim events as JSON lines, one file per topic.
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
        #[arg(long)]
        out: PathBuf,
    },
}

fn main() -> std::process::ExitCode {
    match try_main() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
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
        Command::Run { pipeline, quiet } => {
            let loaded = config::load(&pipeline).map_err(|e| anyhow::anyhow!("{e}"))?;
            let options = RunOptions {
                progress: !quiet && std::io::stderr().is_terminal(),
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
        Command::Gen {
            events,
            seed,
            users,
            dirty_rate,
            out,
        } => {
            let config = GeneratorConfig {
                events,
                seed,
                users,
                dirty_rate,
                ..Default::default()
            };
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
    }
}
