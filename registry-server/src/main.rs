//! The `berth` binary.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use registry_server::config::{self, Source};
use tracing_subscriber::EnvFilter;

/// Berth: an OCI distribution registry.
#[derive(Parser)]
#[command(name = "berth", version)]
struct Cli {
    /// distribution-style config.yml; without it Berth serves 127.0.0.1:5000 from ./data.
    #[arg(long, short, env = "BERTH_CONFIG")]
    config: Option<PathBuf>,
    /// Accepted for compatibility with `registry serve config.yml`.
    #[arg(hide = true)]
    args: Vec<String>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // One TLS crypto provider for every HTTP client (object stores), chosen here rather than by
    // whichever dependency's feature flags happen to win.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    // `registry serve /etc/docker/registry/config.yml` is how distribution is started.
    let positional = match cli.args.as_slice() {
        [] => None,
        [cmd, path] if cmd == "serve" => Some(PathBuf::from(path)),
        [cmd] if cmd == "serve" => None,
        other => {
            eprintln!("berth: unexpected arguments {other:?}");
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
            .with_ansi(ansi)
            .with_writer(std::io::stderr)
            .init();
    }
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
    match runtime.block_on(registry_server::serve::run(settings)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("berth: {e}");
            ExitCode::FAILURE
        }
    }
}
