//! Starts the real `berth` binary on a free loopback port and stops it on drop.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// Path of the `berth` binary: `BERTH_BIN`, else built once per test process with cargo.
pub fn berth_binary() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        if let Some(p) = std::env::var_os("BERTH_BIN") {
            return PathBuf::from(p);
        }
        let workspace = Path::new(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .unwrap()
            .to_path_buf();
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let status = Command::new(cargo)
            .args([
                "build",
                "--quiet",
                "-p",
                "registry-server",
                "--bin",
                "berth",
            ])
            .current_dir(&workspace)
            .status()
            .expect("cannot run cargo to build berth");
        assert!(status.success(), "building berth failed");
        let target = std::env::var_os("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .unwrap_or(workspace.join("target"));
        target.join("debug").join("berth")
    })
    .clone()
}

/// A running `berth` process.
pub struct Berth {
    child: Child,
    /// `http://127.0.0.1:PORT` (or `https://` with TLS)
    pub url: String,
    /// `127.0.0.1:PORT`
    pub host: String,
    /// Captured stderr (logs), read after stop.
    log: PathBuf,
    _workdir: Option<tempfile::TempDir>,
}

impl Berth {
    /// Starts berth with a config file written from `yaml` (address forced to 127.0.0.1:0).
    pub fn with_config(yaml: &str, env: &[(&str, &str)]) -> Berth {
        Self::with_config_of(&berth_binary(), yaml, env)
    }

    /// Like [`Berth::with_config`], with another berth build (a benchmark's baseline).
    pub fn with_config_of(binary: &Path, yaml: &str, env: &[(&str, &str)]) -> Berth {
        let dir = tempfile::tempdir().unwrap();
        let cfg = dir.path().join("config.yml");
        std::fs::write(&cfg, yaml).unwrap();
        let mut cmd = Command::new(binary);
        cmd.arg("--config").arg(&cfg).current_dir(dir.path());
        Self::spawn(cmd, env, Some(dir))
    }

    /// Starts berth on local disk under `root` with deletes on.
    pub fn filesystem(root: &Path) -> Berth {
        let yaml = format!(
            "version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\n",
            root.display()
        );
        Self::with_config(&yaml, &[])
    }

    /// Starts `cmd` (a berth invocation) and waits for its `listening on` line.
    pub fn spawn(
        mut cmd: Command,
        env: &[(&str, &str)],
        workdir: Option<tempfile::TempDir>,
    ) -> Berth {
        let log = tempfile::NamedTempFile::new()
            .unwrap()
            .into_temp_path()
            .keep()
            .unwrap();
        cmd.env("REGISTRY_HTTP_ADDR", "127.0.0.1:0")
            .env(
                "RUST_LOG",
                std::env::var("BERTH_TEST_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).unwrap());
        let mut child = cmd.spawn().expect("cannot start berth");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(u) = line.strip_prefix("listening on ") {
                    let _ = tx.send(u.to_owned());
                }
            }
        });
        let url = match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(u) => u,
            Err(_) => {
                let _ = child.kill();
                panic!(
                    "berth did not start: {}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                );
            }
        };
        let host = url
            .split_once("://")
            .map_or(url.as_str(), |(_, h)| h)
            .to_owned();
        Berth {
            child,
            url,
            host,
            log,
            _workdir: workdir,
        }
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The process id (for resource measurements).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Stops the process as Kubernetes does (SIGTERM) and waits for it to end.
    pub fn stop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
    }

    /// Kills the process at once (SIGKILL).
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Berth {
    fn drop(&mut self) {
        self.kill();
        // A failing test shows what the server said last.
        if std::thread::panicking() {
            let log = self.log();
            let lines: Vec<&str> = log.lines().collect();
            let tail = lines[lines.len().saturating_sub(60)..].join("\n");
            eprintln!("--- the last lines of berth's log ---\n{tail}");
        }
        let _ = std::fs::remove_file(&self.log);
    }
}

/// A free TCP port on 127.0.0.1 (for servers that cannot report the port they bound).
/// Runs `berth ARGS --config CONFIG` (a command such as `token create`) to its end.
pub fn berth_command(config: &Path, args: &[&str]) -> std::process::Output {
    Command::new(berth_binary())
        .args(args)
        .arg("--config")
        .arg(config)
        .output()
        .expect("cannot run berth")
}

/// The digests a `berth gc` JSON report swept (or, dry, would sweep), sorted.
pub fn swept_digests(report: &serde_json::Value) -> Vec<String> {
    let mut swept: Vec<String> = report["swept"]
        .as_array()
        .expect("a gc report lists what it swept")
        .iter()
        .filter_map(|d| d.as_str().map(str::to_owned))
        .collect();
    swept.sort();
    swept
}

/// Creates a robot token `name` with `access` through `berth token create`; the token.
pub fn create_robot_token(config: &Path, name: &str, access: &str) -> String {
    let out = berth_command(
        config,
        &["token", "create", "--name", name, "--access", access],
    );
    assert!(
        out.status.success(),
        "berth token create: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Waits until something accepts connections on `addr`.
pub fn wait_for_port(addr: &str, timeout: Duration) {
    let start = Instant::now();
    while start.elapsed() < timeout {
        if std::net::TcpStream::connect(addr).is_ok() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("nothing listening on {addr} after {timeout:?}");
}
