//! A real Docker engine for end-to-end tests: `dockerd` with its own socket and directories,
//! leaving the host's network alone, stopped (with its containers) on drop.
//!
//! [`DockerEngine::start`] gives containers no network of their own (`--network host` or
//! `none`), and its pushes reach registries on the host's loopback.
//! [`DockerEngine::start_isolated`] runs the engine in a network namespace of its own, with a
//! bridge, so that `docker run -p 5001:5000` works as the tutorials write it; its loopback is
//! the namespace's, reached from the test with [`DockerEngine::in_namespace`].
//!
//! Nothing can be pulled from outside, so images are made here: a busybox rootfs imported
//! from Debian's busybox-static. Docker treats 127.0.0.0/8 registries as insecure: it speaks
//! TLS to them without checking the certificate, and falls back to plain HTTP.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::tools::require;

/// A running `dockerd`.
pub struct DockerEngine {
    child: Child,
    socket: PathBuf,
    netns: Option<String>,
    dir: tempfile::TempDir,
}

/// The docker client: Debian's (the engine's own version) when installed there.
fn client() -> &'static str {
    if Path::new("/usr/bin/docker").is_file() {
        "/usr/bin/docker"
    } else {
        "docker"
    }
}

impl DockerEngine {
    /// Starts an engine in a fresh directory and waits until it answers.
    pub fn start() -> DockerEngine {
        Self::launch(None)
    }

    /// Starts an engine in a network namespace of its own, with a bridge (see the module).
    pub fn start_isolated() -> DockerEngine {
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let name = format!(
            "berth{}-{}",
            std::process::id(),
            N.fetch_add(1, std::sync::atomic::Ordering::SeqCst)
        );
        crate::tools::run(Command::new("ip").args(["netns", "add", &name]));
        crate::tools::run(
            Command::new("ip").args(["netns", "exec", &name, "ip", "link", "set", "lo", "up"]),
        );
        Self::launch(Some(name))
    }

    /// A command run inside the engine's network namespace (plain when it has none).
    pub fn in_namespace(&self, program: &str) -> Command {
        match &self.netns {
            None => Command::new(program),
            Some(ns) => {
                let mut c = Command::new("nsenter");
                c.arg(format!("--net=/var/run/netns/{ns}")).arg(program);
                c
            }
        }
    }

    fn launch(netns: Option<String>) -> DockerEngine {
        require("dockerd");
        // Short paths: the socket's path must fit in a sockaddr_un.
        let dir = tempfile::Builder::new()
            .prefix("dk")
            .tempdir_in("/tmp")
            .unwrap();
        let socket = dir.path().join("d.sock");
        let log = std::fs::File::create(dir.path().join("dockerd.log")).unwrap();
        // nsenter, not `ip netns exec`: the latter remounts /sys, and dockerd then finds no
        // cgroups.
        let mut command = match &netns {
            None => Command::new("dockerd"),
            Some(ns) => {
                let mut c = Command::new("nsenter");
                c.arg(format!("--net=/var/run/netns/{ns}")).arg("dockerd");
                c
            }
        };
        if netns.is_none() {
            command.arg("--bridge=none");
        }
        let child = command
            .arg("--host")
            .arg(format!("unix://{}", socket.display()))
            .arg("--data-root")
            .arg(dir.path().join("data"))
            .arg("--exec-root")
            .arg(dir.path().join("x"))
            .arg("--pidfile")
            .arg(dir.path().join("d.pid"))
            .args([
                "--iptables=false",
                "--ip6tables=false",
                "--ip-forward=false",
                "--log-level=warn",
            ])
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("cannot start dockerd (as root)");
        let engine = DockerEngine {
            child,
            socket,
            netns,
            dir,
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let out = engine.command(&["version"]).output().unwrap();
            if out.status.success() {
                return engine;
            }
            assert!(
                Instant::now() < deadline,
                "dockerd did not answer: {}",
                engine.log()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// The engine's log.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("dockerd.log")).unwrap_or_default()
    }

    /// `DOCKER_HOST` for this engine.
    pub fn host(&self) -> String {
        format!("unix://{}", self.socket.display())
    }

    /// A `docker` command talking to this engine, with its own client config directory.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(client());
        c.env("DOCKER_HOST", self.host())
            .env("DOCKER_CONFIG", self.dir.path().join("client"))
            .env("DOCKER_BUILDKIT", "0")
            .args(args);
        c
    }

    /// Runs `docker args` and returns its output, failed or not.
    pub fn try_run(&self, args: &[&str]) -> Output {
        self.command(args).output().unwrap()
    }

    /// Runs `docker args`, panicking with its output if it fails; returns stdout.
    pub fn run(&self, args: &[&str]) -> String {
        let out = self.try_run(args);
        assert!(
            out.status.success(),
            "docker {args:?} failed: {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Runs `docker args` with `input` on its standard input, returning its output.
    pub fn run_with_input(&self, args: &[&str], input: &str) -> Output {
        use std::io::Write;
        let mut child = self
            .command(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
        child.wait_with_output().unwrap()
    }

    /// Imports a busybox image as `tag` (a shell and the usual tools, from busybox-static),
    /// with `marker` written into `/marker` so that images made here differ.
    pub fn busybox_image(&self, tag: &str, marker: &str) {
        require("busybox");
        let root = self.dir.path().join(format!("rootfs-{marker}"));
        std::fs::create_dir_all(root.join("bin")).unwrap();
        let busybox = which("busybox");
        std::fs::copy(&busybox, root.join("bin/busybox")).unwrap();
        for tool in ["sh", "cat", "echo", "ls", "wget"] {
            let _ = std::os::unix::fs::symlink("busybox", root.join("bin").join(tool));
        }
        std::fs::write(root.join("marker"), marker).unwrap();
        let tar = self.dir.path().join(format!("rootfs-{marker}.tar"));
        crate::tools::run(
            Command::new("tar")
                .arg("-C")
                .arg(&root)
                .arg("-cf")
                .arg(&tar)
                .arg("."),
        );
        self.run(&[
            "import",
            "--change",
            "CMD [\"/bin/sh\"]",
            tar.to_str().unwrap(),
            tag,
        ]);
    }

    /// The ID of a local image.
    pub fn image_id(&self, reference: &str) -> String {
        self.run(&["image", "inspect", "--format", "{{.Id}}", reference])
            .trim()
            .to_owned()
    }
}

fn which(program: &str) -> PathBuf {
    std::env::var_os("PATH")
        .and_then(|p| {
            std::env::split_paths(&p)
                .map(|d| d.join(program))
                .find(|p| p.is_file())
        })
        .unwrap_or_else(|| panic!("{program} is not on PATH"))
}

impl Drop for DockerEngine {
    fn drop(&mut self) {
        // Containers first, so that dockerd leaves no mounts behind.
        let ids = self.try_run(&["ps", "-aq"]);
        for id in String::from_utf8_lossy(&ids.stdout).split_whitespace() {
            let _ = self.try_run(&["rm", "-f", id]);
        }
        let _ = Command::new("kill")
            .arg(self.child.id().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut exited = false;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                exited = true;
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        if !exited {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        if let Some(ns) = &self.netns {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}
