//! The `berth` binary: `berth serve [CONFIG]` (the default) runs the registry, `berth gc [CONFIG]`
//! collects garbage once, `berth htpasswd -Bbn USER PASSWORD` writes a password entry.
//! distribution's `registry serve CONFIG` and `registry garbage-collect CONFIG` invocations work
//! too, and so does `--config` (or `BERTH_CONFIG`) before or after the command.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use registry_core::registry::gc as registry_core_gc;
use registry_server::config::{self, Settings, Source};
use tracing_subscriber::EnvFilter;

/// Berth: an OCI distribution registry.
#[derive(Parser)]
#[command(name = "berth", version)]
struct Cli {
    /// distribution-style config.yml; without one, Berth serves 127.0.0.1:5000 from ./data.
    #[arg(long, env = "BERTH_CONFIG", global = true)]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the registry (what `berth` alone does).
    Serve {
        /// The config file, as distribution's `registry serve CONFIG` takes it.
        file: Option<PathBuf>,
    },
    /// Collect garbage once, online: remove blobs nothing refers to (a JSON report on stdout).
    #[command(alias = "garbage-collect")]
    Gc(GcArgs),
    /// Write a bcrypt password entry, as Apache's `htpasswd -B` does (`-Bbn USER PASSWORD`
    /// prints it; `-Bb FILE USER PASSWORD` adds or replaces it in FILE, `-c` creates FILE).
    Htpasswd(HtpasswdArgs),
}

#[derive(Args)]
struct GcArgs {
    /// The config file, as distribution's `registry garbage-collect CONFIG` takes it.
    file: Option<PathBuf>,
    /// Report what would be removed without removing it.
    #[arg(long)]
    dry_run: bool,
    /// Also remove manifests that no tag reaches.
    #[arg(long, alias = "delete-untagged-manifests")]
    delete_untagged: bool,
    /// Keep anything younger than this (e.g. 2h, 30m).
    #[arg(long, default_value = "2h")]
    grace: String,
}

#[derive(Args)]
struct HtpasswdArgs {
    /// Hash with bcrypt (the only kind a registry accepts; accepted for Apache's spelling).
    #[arg(short = 'B')]
    bcrypt: bool,
    /// Take the password from the command line instead of standard input.
    #[arg(short = 'b')]
    batch: bool,
    /// Print the entry instead of writing a file.
    #[arg(short = 'n')]
    print: bool,
    /// Create the file (replacing one that exists).
    #[arg(short = 'c')]
    create: bool,
    /// bcrypt cost, 4 to 31.
    #[arg(short = 'C', default_value_t = 10, value_parser = clap::value_parser!(u32).range(4..=31))]
    cost: u32,
    /// `[FILE] USER [PASSWORD]`: FILE unless -n, PASSWORD with -b.
    #[arg(num_args = 1..=3, required = true)]
    words: Vec<String>,
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
    let command = cli.command.unwrap_or(Command::Serve { file: None });
    let file = match &command {
        Command::Htpasswd(args) => return htpasswd(args),
        Command::Serve { file } => file.clone(),
        Command::Gc(args) => args.file.clone(),
    };
    let path = cli.config.or(file);
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
        Command::Serve { .. } => match runtime.block_on(registry_server::serve::run(settings)) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("berth: {e}");
                ExitCode::FAILURE
            }
        },
        Command::Gc(args) => {
            let Some(grace) = config::parse_duration(&args.grace) else {
                eprintln!(
                    "berth: --grace {:?} is not a duration like 2h or 30m",
                    args.grace
                );
                return ExitCode::from(2);
            };
            let options = registry_server::gc::options(
                grace,
                args.dry_run,
                args.delete_untagged,
                &settings.proxies,
            );
            run_gc(&runtime, settings, options)
        }
        Command::Htpasswd(_) => ExitCode::SUCCESS,
    }
}

/// `berth htpasswd`: one bcrypt entry, printed or written into a file.
fn htpasswd(args: &HtpasswdArgs) -> ExitCode {
    // -B is how the tutorials spell it; bcrypt is what a registry reads either way.
    let _ = args.bcrypt;
    let words: Vec<&str> = args.words.iter().map(String::as_str).collect();
    let (file, user, password) = match (args.print, args.batch, words.as_slice()) {
        (true, true, [user, password]) => (None, *user, Some(password.to_string())),
        (true, false, [user]) => (None, *user, None),
        (false, true, [file, user, password]) => (Some(*file), *user, Some(password.to_string())),
        (false, false, [file, user]) => (Some(*file), *user, None),
        _ => {
            let file = if args.print { "" } else { "FILE " };
            let password = if args.batch { " PASSWORD" } else { "" };
            eprintln!("berth htpasswd: expected {file}USER{password} (see berth htpasswd --help)");
            return ExitCode::from(2);
        }
    };
    if user.is_empty() || user.contains(':') {
        eprintln!("berth htpasswd: a user name may not be empty or hold a colon");
        return ExitCode::from(2);
    }
    let password = match password {
        Some(p) => p,
        None => {
            let mut line = String::new();
            if std::io::stdin().read_line(&mut line).is_err() {
                eprintln!("berth htpasswd: cannot read the password from standard input");
                return ExitCode::from(2);
            }
            line.trim_end_matches(['\r', '\n']).to_owned()
        }
    };
    let hash = match bcrypt::hash(&password, args.cost) {
        // Apache writes $2y$; every reader (distribution, Berth) takes it.
        Ok(h) => h.replacen("$2b$", "$2y$", 1),
        Err(e) => {
            eprintln!("berth htpasswd: {e}");
            return ExitCode::FAILURE;
        }
    };
    let entry = format!("{user}:{hash}");
    let Some(file) = file else {
        // Apache prints a blank line after the entry; distribution's docs redirect it into a
        // file, where the blank line does no harm.
        println!("{entry}\n");
        return ExitCode::SUCCESS;
    };
    let existing = if args.create {
        String::new()
    } else {
        match std::fs::read_to_string(file) {
            Ok(t) => t,
            Err(e) => {
                eprintln!("berth htpasswd: cannot read {file}: {e} (-c creates it)");
                return ExitCode::FAILURE;
            }
        }
    };
    let mut lines: Vec<String> = existing
        .lines()
        .filter(|l| !l.is_empty() && l.split(':').next() != Some(user))
        .map(str::to_owned)
        .collect();
    lines.push(entry);
    match std::fs::write(file, lines.join("\n") + "\n") {
        Ok(()) => {
            eprintln!("berth htpasswd: {user} written to {file}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("berth htpasswd: cannot write {file}: {e}");
            ExitCode::FAILURE
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
