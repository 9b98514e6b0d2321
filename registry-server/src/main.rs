//! The `berth` binary: `berth [serve] [CONFIG]` runs the registry, `berth gc [CONFIG]` collects
//! garbage once (distribution's `registry serve` / `registry garbage-collect` invocations work too).

use registry_core::registry::gc as registry_core_gc;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use registry_server::config::{self, Settings, Source};
use tracing_subscriber::EnvFilter;

/// Berth: an OCI distribution registry.
#[derive(Parser)]
#[command(
    name = "berth",
    version,
    after_help = "Commands: serve [CONFIG] (default), gc [CONFIG] [--dry-run] [--grace 2h]"
)]
struct Cli {
    /// distribution-style config.yml; without it Berth serves 127.0.0.1:5000 from ./data.
    #[arg(long, short, env = "BERTH_CONFIG")]
    config: Option<PathBuf>,
    /// gc: report what would be removed without removing it.
    #[arg(long)]
    dry_run: bool,
    /// gc: also remove manifests that no tag reaches.
    #[arg(long)]
    delete_untagged: bool,
    /// gc: keep anything younger than this (e.g. 2h, 30m).
    #[arg(long, default_value = "2h")]
    grace: String,
    /// `serve [CONFIG]` or `gc [CONFIG]` (also `garbage-collect`).
    #[arg(hide = true)]
    args: Vec<String>,
}

enum Command {
    Serve,
    Gc,
}

fn init_logging(settings: &Settings) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(&settings.log_level));
    if settings.log_json {
        tracing_subscriber::fmt()
            .with_env_filter(filter)
            .json()
            .with_writer(std::io::stderr)
            .init();
    } else {
        // Colour codes only for a person at a terminal, never into files or log shippers.
        let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
        tracing_subscriber::fmt()
            .with_env_filter(filter)
            .fmt_fields(registry_server::observe::log_format::escaped_fields())
            .with_ansi(ansi)
            .with_writer(std::io::stderr)
            .init();
    }
}

fn main() -> ExitCode {
    // Before any thread starts, so that every arena is created with the same settings.
    registry_server::malloc_settings::apply();
    let cli = Cli::parse();
    // One TLS crypto provider for every HTTP client (object stores), chosen here rather than by
    // whichever dependency's feature flags happen to win.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let (command, positional) = match cli.args.as_slice() {
        [] => (Command::Serve, None),
        [cmd] if cmd == "serve" => (Command::Serve, None),
        [cmd, path] if cmd == "serve" => (Command::Serve, Some(PathBuf::from(path))),
        [cmd] if cmd == "gc" || cmd == "garbage-collect" => (Command::Gc, None),
        [cmd, path] if cmd == "gc" || cmd == "garbage-collect" => {
            (Command::Gc, Some(PathBuf::from(path)))
        }
        other => {
            eprintln!("berth: unexpected arguments {other:?} (see berth --help)");
            return ExitCode::from(2);
        }
    };
    let path = cli.config.or(positional);
    let source = path.as_deref().map_or(Source::Embedded, Source::File);
    let (settings, warnings) = match config::load(source, std::env::vars()) {
        Ok(v) => v,
        Err(e) => {
            eprintln!("berth: {e}");
            return ExitCode::from(2);
        }
    };
    init_logging(&settings);
    for w in warnings {
        tracing::warn!("{w}");
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("berth: cannot start runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match command {
        Command::Serve => match runtime.block_on(registry_server::serve::run(settings)) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("berth: {e}");
                ExitCode::FAILURE
            }
        },
        Command::Gc => {
            let Some(grace) = config::parse_duration(&cli.grace) else {
                eprintln!(
                    "berth: --grace {:?} is not a duration like 2h or 30m",
                    cli.grace
                );
                return ExitCode::from(2);
            };
            let options = registry_server::gc::options(
                grace,
                cli.dry_run,
                cli.delete_untagged,
                &settings.proxies,
            );
            run_gc(&runtime, settings, options)
        }
    }
}

fn run_gc(
    runtime: &tokio::runtime::Runtime,
    settings: Settings,
    options: registry_core_gc::GcOptions,
) -> ExitCode {
    let app = match runtime.block_on(async { registry_server::serve::app(settings) }) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("berth: {e}");
            return ExitCode::from(2);
        }
    };
    let collected = runtime.block_on(async {
        let report = app.registry.collect_garbage(&options).await;
        // The space is free when the command returns, not at the next start.
        app.registry.store().settle().await;
        report
    });
    match collected {
        Ok(Some(report)) => {
            println!(
                "{}",
                serde_json::to_string_pretty(&report).unwrap_or_default()
            );
            ExitCode::SUCCESS
        }
        Ok(None) => {
            eprintln!(
                "berth: another collector holds the lease (docker/registry/v2/berth/gc-lease); try later"
            );
            ExitCode::from(3)
        }
        Err(e) => {
            eprintln!("berth: garbage collection failed: {e}");
            ExitCode::FAILURE
        }
    }
}
