//! The `berth` binary: `berth serve [CONFIG]` (the default) runs the registry, `berth gc [CONFIG]`
//! collects garbage once, `berth htpasswd -Bbn USER PASSWORD` writes a password entry, `berth
//! token create|list|revoke` manages robot tokens, `berth usage` says what repositories hold,
//! `berth policy explain` which rule decides, `berth replicate --once` brings the downstream
//! registries in line.
//! distribution's `registry serve CONFIG` and `registry garbage-collect CONFIG` invocations work
//! too, and so does `--config` (or `BERTH_CONFIG`) before or after the command.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use registry_core::registry::gc as registry_core_gc;
use registry_server::config::{self, Settings, Source};
use registry_server::store_mode::Role;
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
    /// Create, list and revoke robot tokens (kept in the store the config names).
    Token {
        #[command(subcommand)]
        action: TokenCommand,
    },
    /// Print what each repository holds (bytes, bytes no other repository shares, tags,
    /// manifests, last push, last pull, quota) and the registry's total, as JSON, walked
    /// from the store.
    Usage {
        /// First rebuild the quota ledgers of the repositories a quota covers from the
        /// layout (after a restore, or to check them).
        #[arg(long)]
        rebuild: bool,
    },
    /// Compare every tag with the downstream registries of `berth.replication` and send what
    /// is missing or differs, and run its scheduled syncs from upstream registries once (a
    /// JSON report on stdout; exit 1 if anything could not be copied). Tags found only
    /// downstream are reported, never deleted.
    Replicate(ReplicateArgs),
    /// Rebuild the catalog index (and every repository's tag index) from the layout, after
    /// something other than Berth wrote the store or repositories were removed by hand (a
    /// JSON report on stdout). Safe while the registry serves.
    Index {
        #[command(subcommand)]
        action: IndexCommand,
    },
    /// Ask the access policy (`berth.policy.file`) what it decides.
    Policy {
        #[command(subcommand)]
        action: PolicyCommand,
    },
}

#[derive(Subcommand)]
enum PolicyCommand {
    /// Print which rule decides whether ACCOUNT may do ACTION on REPOSITORY, and why (exit 0
    /// when allowed, 1 when denied).
    Explain {
        /// The account (`anonymous` for a client without credentials).
        #[arg(long)]
        account: String,
        /// How it authenticates: password, robot, token, certificate (anonymous for `anonymous`).
        #[arg(long, default_value = "password", value_parser = ["password", "robot", "token", "certificate", "anonymous"])]
        kind: String,
        /// The repository (not needed for catalog and admin).
        #[arg(long)]
        repository: Option<String>,
        /// pull, push, delete, catalog or admin.
        #[arg(long, value_parser = ["pull", "push", "delete", "catalog", "admin"])]
        action: String,
    },
}

#[derive(Subcommand)]
enum IndexCommand {
    /// Add what the layout holds and the index lacks, remove what it no longer holds.
    Rebuild {
        /// Only this repository's tag index (created whatever its size).
        #[arg(long)]
        repository: Option<String>,
    },
}

#[derive(Subcommand)]
enum TokenCommand {
    /// Create a token and print it (the only time it is shown): `docker login -u NAME -p TOKEN`.
    Create {
        /// The account name it logs in as (a-z, 0-9, '.', '_', '-').
        #[arg(long)]
        name: String,
        /// What it may do: REPOSITORY-GLOB:ACTIONS, e.g. 'team/*:pull,push' (repeatable).
        #[arg(long, required = true)]
        access: Vec<String>,
        /// When it stops working (e.g. 90d, 12h); never, without it.
        #[arg(long)]
        expires: Option<String>,
        /// A group the access policy sees it in (repeatable).
        #[arg(long = "group")]
        groups: Vec<String>,
    },
    /// List tokens: name, access, expiry, last use (JSON on stdout).
    List,
    /// Revoke a token: every replica refuses it within seconds.
    Revoke {
        /// The token's name.
        name: String,
    },
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
    /// Look only at what changed since the last run (blobs stored, revisions removed), from
    /// the reference index; untagged manifests, retention, cache expiry and quota ledgers are
    /// left to full runs. Runs a full collection while none has completed the index yet.
    #[arg(long, conflicts_with = "delete_untagged")]
    incremental: bool,
    /// A full run that also checks the reference index incremental runs rely on against what
    /// it marks, mends it and records it complete (as the scheduled full run does when
    /// `berth.gc.fullinterval` is set).
    #[arg(long, conflicts_with = "incremental")]
    verify_references: bool,
}

#[derive(Args)]
struct ReplicateArgs {
    /// Run one full reconciliation and exit (the only mode: the server sends changes as they
    /// happen).
    #[arg(long, required = true)]
    once: bool,
    /// Only this downstream (by its name), and no sync.
    #[arg(long, conflicts_with = "sync")]
    downstream: Option<String>,
    /// Only this scheduled sync (by its name), and no downstream.
    #[arg(long)]
    sync: Option<String>,
    /// Compare and report without sending anything.
    #[arg(long)]
    dry_run: bool,
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

/// Logs to stderr, and spans to the OTLP collector when `berth.tracing` (or `OTEL_*`) says
/// so; the provider returned is flushed at exit. Call inside the runtime.
fn init_logging(
    settings: &Settings,
) -> Result<Option<opentelemetry_sdk::trace::SdkTracerProvider>, String> {
    use registry_server::observe::trace_export;
    use tracing_subscriber::Layer as _;
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(&settings.log_level));
    // Spans are for the traces; in the log they would prefix every line inside a request.
    let filter = match format!("{}=off", trace_export::TRACE_TARGET).parse() {
        Ok(d) => filter.add_directive(d),
        Err(_) => filter,
    };
    let log = if settings.log_json {
        tracing_subscriber::fmt::layer()
            .json()
            .with_writer(std::io::stderr)
            .with_filter(filter)
            .boxed()
    } else {
        // Colour codes only for a person at a terminal, never into files or log shippers.
        let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
        tracing_subscriber::fmt::layer()
            .fmt_fields(registry_server::observe::log_format::escaped_fields())
            .with_ansi(ansi)
            .with_writer(std::io::stderr)
            .with_filter(filter)
            .boxed()
    };
    let provider = match &settings.tracing {
        Some(t) => Some(trace_export::provider(t).map_err(|e| e.to_string())?),
        None => None,
    };
    tracing_subscriber::registry()
        .with(log)
        .with(provider.as_ref().map(trace_export::layer))
        .init();
    Ok(provider)
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
        Command::Token { .. }
        | Command::Policy { .. }
        | Command::Usage { .. }
        | Command::Index { .. }
        | Command::Replicate(_) => None,
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
    let traces = {
        let _in_runtime = runtime.enter();
        match init_logging(&settings) {
            Ok(t) => t,
            Err(e) => {
                eprintln!("berth: {e}");
                return ExitCode::from(2);
            }
        }
    };
    for w in warnings {
        tracing::warn!("{w}");
    }
    match command {
        Command::Serve { .. } => {
            let served = runtime.block_on(registry_server::serve::run(settings));
            if let Some(t) = traces {
                // The spans of the last requests, before the process goes.
                let _in_runtime = runtime.enter();
                let _ = t.shutdown();
            }
            match served {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("berth: {e}");
                    ExitCode::FAILURE
                }
            }
        }
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
                args.incremental,
                args.verify_references,
                registry_server::gc::LEASE_TTL,
                &settings.proxies,
            );
            run_gc(&runtime, settings, options)
        }
        Command::Htpasswd(_) => ExitCode::SUCCESS,
        Command::Token { action } => runtime.block_on(token(settings, action)),
        Command::Policy { action } => policy(&settings, action),
        Command::Usage { rebuild } => runtime.block_on(usage(settings, rebuild)),
        Command::Index { action } => runtime.block_on(index(settings, action)),
        Command::Replicate(args) => runtime.block_on(replicate(settings, args)),
    }
}

/// `berth replicate --once`.
async fn replicate(settings: Settings, args: ReplicateArgs) -> ExitCode {
    let app = match registry_server::serve::app(settings, Role::Command).await {
        Ok(a) => a,
        Err(e) => {
            eprintln!("berth: {e}");
            return ExitCode::from(2);
        }
    };
    let Some(replication) = &app.replication else {
        eprintln!("berth replicate: the configuration names no berth.replication.downstreams");
        return ExitCode::from(2);
    };
    let _ = args.once;
    let (mut downstreams, mut syncs) = (Vec::new(), Vec::new());
    if args.sync.is_none() {
        match replication
            .reconcile(&app.registry, args.downstream.as_deref(), args.dry_run)
            .await
        {
            Ok(r) => downstreams = r,
            Err(e) => {
                eprintln!("berth replicate: {e}");
                return ExitCode::FAILURE;
            }
        }
    }
    if args.downstream.is_none() {
        syncs = replication
            .sync_now(&app.registry, args.sync.as_deref(), args.dry_run)
            .await;
    }
    if downstreams.is_empty() && syncs.is_empty() {
        eprintln!("berth replicate: nothing is named so in berth.replication");
        return ExitCode::from(2);
    }
    for r in &downstreams {
        eprintln!(
            "berth replicate: {}: {} tags in {} repositories, {} the same, {} missing, {} differing, {} only there, {} failed; sent {} manifests, {} blobs ({} bytes)",
            r.downstream,
            r.tags,
            r.repositories,
            r.in_sync,
            r.missing.len(),
            r.differing.len(),
            r.only_downstream.len(),
            r.failed.len(),
            r.manifests_sent,
            r.blobs_sent,
            r.bytes_sent
        );
    }
    for r in &syncs {
        eprintln!(
            "berth replicate: sync {}: {} tags, {} the same, {} copied in, {} failed; fetched {} blobs ({} bytes)",
            r.sync,
            r.tags,
            r.in_sync,
            r.copied.len(),
            r.failed.len(),
            r.blobs_fetched,
            r.bytes_fetched
        );
    }
    println!(
        "{}",
        serde_json::to_string_pretty(&serde_json::json!({
            "downstreams": downstreams,
            "syncs": syncs,
        }))
        .unwrap_or_default()
    );
    if downstreams.iter().all(|r| r.converged()) && syncs.iter().all(|r| r.failed.is_empty()) {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// `berth usage`.
async fn usage(settings: Settings, rebuild: bool) -> ExitCode {
    let app = match registry_server::serve::app(settings, Role::Command).await {
        Ok(a) => a,
        Err(e) => {
            eprintln!("berth: {e}");
            return ExitCode::from(2);
        }
    };
    if rebuild {
        match app.registry.rebuild_quotas().await {
            Ok(rebuilt) => {
                for (name, bytes) in rebuilt {
                    eprintln!("berth usage: quota ledger of {name} rebuilt: {bytes} bytes");
                }
            }
            Err(e) => {
                eprintln!("berth usage: {e}");
                return ExitCode::FAILURE;
            }
        }
    }
    match app.registry.usage().await {
        Ok(u) => {
            println!("{}", serde_json::to_string_pretty(&u).unwrap_or_default());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("berth usage: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `berth index rebuild`.
async fn index(settings: Settings, action: IndexCommand) -> ExitCode {
    use futures::{StreamExt, TryStreamExt};
    let IndexCommand::Rebuild { repository } = action;
    let app = match registry_server::serve::app(settings, Role::Command).await {
        Ok(a) => a,
        Err(e) => {
            eprintln!("berth: {e}");
            return ExitCode::from(2);
        }
    };
    let registry = &app.registry;
    let report = async {
        if let Some(name) = repository {
            let name = name
                .parse()
                .map_err(|e| format!("--repository {name:?}: {e}"))?;
            let tags = registry
                .fill_tag_index(&name)
                .await
                .map_err(|e| e.to_string())?;
            return Ok(serde_json::json!({ "repository": name.to_string(), "tags": tags }));
        }
        let catalog = registry
            .fill_catalog(true)
            .await
            .map_err(|e| e.to_string())?;
        let names = registry
            .list_catalog(None, None)
            .await
            .map_err(|e| e.to_string())?
            .items;
        // Only indexes that exist: a repository gets one at its first large tag list.
        let rebuilt: Vec<Option<String>> = futures::stream::iter(names)
            .map(|n| async move {
                let Ok(name) = n.parse() else { return Ok(None) };
                if !registry.has_tag_index(&name).await? {
                    return Ok(None);
                }
                registry.fill_tag_index(&name).await?;
                Ok::<_, registry_core::RegistryError>(Some(n))
            })
            .buffer_unordered(16)
            .try_collect()
            .await
            .map_err(|e| e.to_string())?;
        let tag_indexes: Vec<String> = rebuilt.into_iter().flatten().collect();
        Ok::<_, String>(serde_json::json!({ "catalog": catalog, "tag_indexes": tag_indexes }))
    };
    match report.await {
        Ok(r) => {
            println!("{}", serde_json::to_string_pretty(&r).unwrap_or_default());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("berth index rebuild: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `berth policy explain`.
fn policy(settings: &Settings, action: PolicyCommand) -> ExitCode {
    use registry_server::auth::policy::{IdentityKind, Subject};
    let PolicyCommand::Explain {
        account,
        kind,
        repository,
        action,
    } = action;
    let Some(policy) = &settings.auth.policy else {
        eprintln!("berth policy: the configuration has no berth.policy.file");
        return ExitCode::from(2);
    };
    let policy = policy.current();
    let who = match (account.as_str(), kind.as_str()) {
        ("anonymous", _) | (_, "anonymous") => Subject::anonymous(),
        (a, "robot") => Subject::account(a, IdentityKind::Robot),
        (a, "token") => Subject::account(a, IdentityKind::Token),
        (a, "certificate") => Subject::account(a, IdentityKind::Certificate),
        (a, _) => Subject::account(a, IdentityKind::Password),
    };
    let needs_repository = !matches!(action.as_str(), "catalog" | "admin");
    if needs_repository && repository.is_none() {
        eprintln!("berth policy: --repository is needed for {action}");
        return ExitCode::from(2);
    }
    let decision = policy.decide(&who, repository.as_deref(), &action);
    let groups = who
        .account
        .as_deref()
        .map(|a| policy.groups_of(a).join(", "))
        .unwrap_or_default();
    println!(
        "{} ({}{}) {action} {}: {decision}",
        who.account.as_deref().unwrap_or("anonymous"),
        who.kind.name(),
        if groups.is_empty() {
            String::new()
        } else {
            format!("; groups: {groups}")
        },
        repository.as_deref().unwrap_or("-"),
    );
    if decision.allowed {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

/// `berth token`: robot tokens in the configured store.
async fn token(settings: Settings, action: TokenCommand) -> ExitCode {
    use registry_server::auth::robots::{RobotAccess, RobotTokens};
    let mut settings = settings;
    let store = match registry_server::store_mode::open(&mut settings, Role::Command).await {
        Ok((s, _)) => s,
        Err(e) => {
            eprintln!("berth: {e}");
            return ExitCode::from(2);
        }
    };
    let tokens = RobotTokens::new(store);
    let done = match action {
        TokenCommand::Create {
            name,
            access,
            expires,
            groups,
        } => {
            // Days too (90d), which Go durations in config files lack.
            let parse = |s: &str| match s.strip_suffix('d').map(str::parse::<u64>) {
                Some(Ok(days)) => Some(std::time::Duration::from_secs(days * 86_400)),
                _ => config::parse_duration(s),
            };
            let expires_in = match expires.as_deref().map(parse) {
                None => None,
                Some(Some(d)) => Some(d),
                Some(None) => {
                    eprintln!("berth token: --expires is not a duration like 90d or 12h");
                    return ExitCode::from(2);
                }
            };
            let access: Result<Vec<RobotAccess>, _> =
                access.iter().map(|a| RobotAccess::parse(a)).collect();
            match access {
                Err(e) => Err(e),
                Ok(access) => {
                    tokens
                        .create(&name, access, groups, expires_in)
                        .await
                        .map(|(t, _)| {
                            eprintln!("berth token: {name} created; the token is shown this once");
                            println!("{t}");
                        })
                }
            }
        }
        TokenCommand::List => tokens.list().await.map(|records| {
            // Never the hashes: a listing may end up in a ticket.
            let shown: Vec<serde_json::Value> = records.iter().map(|r| r.shown()).collect();
            println!(
                "{}",
                serde_json::to_string_pretty(&shown).unwrap_or_default()
            );
        }),
        TokenCommand::Revoke { name } => tokens.revoke(&name).await.map(|()| {
            eprintln!("berth token: {name} revoked");
        }),
    };
    match done {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("berth token: {e}");
            ExitCode::FAILURE
        }
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
    let app = match runtime.block_on(registry_server::serve::app(settings, Role::Command)) {
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
    let operations = app.metrics.storage_operations();
    eprintln!(
        "berth gc: {} store operations {}",
        operations.values().sum::<u64>(),
        serde_json::to_string(&operations).unwrap_or_default()
    );
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
