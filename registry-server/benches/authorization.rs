//! What an authorization decision costs per request: the access policy's first-match rules, a
//! robot token's check (its record cached), and a bearer token's signature check (ES256, as
//! the built-in issuer signs). `cargo bench -p registry-server --bench authorization`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use registry_server::auth::Access;
use registry_server::auth::policy::{IdentityKind, Policy, Subject};
use registry_server::auth::robots::{RobotAccess, RobotTokens};

/// Runs `f` `n` times and prints the time per run.
fn per_run(what: &str, n: u32, mut f: impl FnMut()) -> Duration {
    for _ in 0..n / 10 {
        f();
    }
    let started = Instant::now();
    for _ in 0..n {
        f();
    }
    let each = started.elapsed() / n;
    println!("{what}: {:.2} µs", each.as_secs_f64() * 1e6);
    each
}

/// A policy of `teams` groups, each with a rule for its own repositories, then catch-alls.
fn policy(teams: usize) -> Policy {
    let mut text = String::from("groups:\n");
    for t in 0..teams {
        text.push_str(&format!("  team{t}: [user{t}a, user{t}b]\n"));
    }
    text.push_str("rules:\n");
    for t in 0..teams {
        text.push_str(&format!(
            "  - repository: team{t}/*\n    actions: [pull, push, delete]\n    groups: [team{t}]\n"
        ));
    }
    text.push_str("  - actions: [pull]\n    accounts: ['*', anonymous]\n");
    Policy::parse(&text).unwrap()
}

fn main() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let push = [Access::repository("team49/app", &["pull", "push"])];
    for teams in [5, 50] {
        let p = policy(teams);
        let last = Subject::account(&format!("user{}a", teams - 1), IdentityKind::Password);
        let need = [Access::repository(
            &format!("team{}/app", teams - 1),
            &["pull", "push"],
        )];
        per_run(
            &format!("policy decision, {teams} teams, the last rule but one decides"),
            200_000,
            || assert!(p.check(&last, &need).is_ok()),
        );
    }
    let p = policy(50);
    let stranger = Subject::account("nobody", IdentityKind::Password);
    per_run("policy decision, 50 teams, no rule allows", 200_000, || {
        assert!(p.check(&stranger, &push).is_err())
    });

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let store: Arc<dyn registry_core::StorageDriver> =
        Arc::new(storage_drivers::memory_driver(1 << 20));
    let tokens = RobotTokens::new(store);
    let (token, _) = rt
        .block_on(tokens.create(
            "ci",
            vec![RobotAccess::parse("team49/*:pull,push").unwrap()],
            Vec::new(),
            None,
        ))
        .unwrap();
    rt.block_on(tokens.authenticate("ci", &token)).unwrap();
    bearer_token_check(&push);
    per_run("robot token check, record cached", 100_000, || {
        let r = rt
            .block_on(tokens.authenticate("ci", &token))
            .unwrap()
            .unwrap();
        assert!(r.allows(&push));
    });
}

/// The built-in issuer's ES256 token checked as every request with it is.
fn bearer_token_check(push: &[Access]) {
    use registry_server::auth::token::{TokenIssuer, TokenVerifier, parse_algorithm};
    let dir = std::env::temp_dir().join(format!("berth-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (key, public) = (dir.join("key.pem"), dir.join("pub.pem"));
    let openssl = |args: &[&str]| {
        assert!(
            std::process::Command::new("openssl")
                .args(args)
                .status()
                .unwrap()
                .success()
        )
    };
    openssl(&[
        "genpkey",
        "-algorithm",
        "EC",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-out",
        key.to_str().unwrap(),
    ]);
    openssl(&[
        "pkey",
        "-in",
        key.to_str().unwrap(),
        "-pubout",
        "-out",
        public.to_str().unwrap(),
    ]);
    let issuer = TokenIssuer::new(
        "svc".into(),
        "iss".into(),
        &std::fs::read(&key).unwrap(),
        Duration::from_secs(300),
        None,
        Vec::new(),
    )
    .unwrap();
    let jwt = issuer
        .sign("svc", Some("alice"), push.to_vec(), false)
        .unwrap()
        .token;
    let verifier = TokenVerifier::new(
        None,
        "svc".into(),
        "iss".into(),
        Some(&std::fs::read_to_string(&public).unwrap()),
        None,
        vec![parse_algorithm("ES256").unwrap()],
    )
    .unwrap();
    per_run(
        "bearer token check (ES256 signature, claims)",
        20_000,
        || {
            let v = verifier.verify(&jwt).unwrap();
            assert!(push.iter().all(|n| n.satisfied_by(&v.access)));
        },
    );
    let _ = std::fs::remove_dir_all(&dir);
}
