//! A 3-node Garage cluster on loopback (`cargo install --locked garage`, see scripts/test.sh):
//! a real distributed S3 store, replication factor 3, behind a TCP balancer as a Kubernetes
//! Service would put it. Garage checks SigV4 for real (presigned URLs included) and takes
//! `If-None-Match` / `If-Match` on PutObject without honouring them, which Berth's startup
//! probe finds; nodes can be killed and restarted under load.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::balancer::Balancer;
use crate::server::{free_port, wait_for_port};

/// The access key imported into every cluster (Garage's `GK` + 24 hex digits form).
pub const GARAGE_ACCESS_KEY: &str = "GK0b5e4a3c1a7f4d5e6f7a8b9c";
/// Its secret (64 hex digits).
pub const GARAGE_SECRET_KEY: &str =
    "5f3a1c9e7b2d4f6a8c0e1b3d5f7a9c2e4b6d8f0a1c3e5b7d9f2a4c6e8b0d1f3a";

/// One node: its configuration and process.
struct Node {
    config: PathBuf,
    s3: String,
    child: Option<Child>,
    /// `ID@ADDR`, known once the node has started.
    id: String,
}

/// A running cluster; every node stops when it is dropped.
pub struct GarageCluster {
    nodes: Vec<Node>,
    balancer: Balancer,
    /// `http://127.0.0.1:PORT` of the balancer in front of the nodes' S3 APIs.
    pub endpoint: String,
    _dir: tempfile::TempDir,
}

/// Runs `garage ARGS` until it succeeds (the cluster settles for a moment after a change).
fn garage_until_ok(config: &Path, args: &[&str]) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let out = Command::new("garage")
            .arg("-c")
            .arg(config)
            .args(args)
            .output()
            .expect("garage is not installed; run ./scripts/test.sh");
        if out.status.success() {
            return String::from_utf8_lossy(&out.stdout).into_owned();
        }
        assert!(
            Instant::now() < deadline,
            "garage {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

impl GarageCluster {
    /// Starts three nodes, connects them, gives each a role (one zone, replication factor 3)
    /// and imports the test key.
    pub fn start() -> GarageCluster {
        let dir = tempfile::tempdir().unwrap();
        let secret = "9d5c3a1e7f2b4d6c8e0a2c4e6a8c0e2b4d6f8a0c2e4a6c8e0b2d4f6a8c0e2d4f";
        let mut nodes = Vec::new();
        for i in 0..3 {
            let home = dir.path().join(format!("node{i}"));
            std::fs::create_dir_all(&home).unwrap();
            let (s3, rpc) = (
                format!("127.0.0.1:{}", free_port()),
                format!("127.0.0.1:{}", free_port()),
            );
            let config = home.join("garage.toml");
            std::fs::write(
                &config,
                format!(
                    "metadata_dir = \"{home}/meta\"\ndata_dir = \"{home}/data\"\ndb_engine = \"sqlite\"\n\
                     replication_factor = 3\nrpc_bind_addr = \"{rpc}\"\nrpc_public_addr = \"{rpc}\"\n\
                     rpc_secret = \"{secret}\"\n\n[s3_api]\ns3_region = \"us-east-1\"\napi_bind_addr = \"{s3}\"\n",
                    home = home.display()
                ),
            )
            .unwrap();
            nodes.push(Node {
                config,
                s3,
                child: None,
                id: String::new(),
            });
        }
        for node in &mut nodes {
            Self::spawn(node);
        }
        let first = nodes[0].config.clone();
        for n in &mut nodes {
            n.id = garage_until_ok(&n.config, &["node", "id", "-q"])
                .trim()
                .to_owned();
        }
        let ids: Vec<String> = nodes.iter().map(|n| n.id.clone()).collect();
        for id in &ids[1..] {
            garage_until_ok(&first, &["node", "connect", id]);
        }
        for id in &ids {
            let short = &id[..16];
            garage_until_ok(
                &first,
                &["layout", "assign", "-z", "dc1", "-c", "1G", short],
            );
        }
        garage_until_ok(&first, &["layout", "apply", "--version", "1"]);
        garage_until_ok(
            &first,
            &[
                "key",
                "import",
                "--yes",
                "-n",
                "berth",
                GARAGE_ACCESS_KEY,
                GARAGE_SECRET_KEY,
            ],
        );
        let balancer = Balancer::start(nodes.iter().map(|n| n.s3.clone()).collect());
        let cluster = GarageCluster {
            endpoint: balancer.url.clone(),
            nodes,
            balancer,
            _dir: dir,
        };
        cluster.wait_until_healthy();
        cluster
    }

    fn wait_until_healthy(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while !self.healthy() {
            assert!(
                Instant::now() < deadline,
                "the garage cluster did not settle"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    fn spawn(node: &mut Node) {
        let child = Command::new("garage")
            .arg("-c")
            .arg(&node.config)
            .arg("server")
            .env("RUST_LOG", "garage=warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("garage is not installed; run ./scripts/test.sh");
        wait_for_port(&node.s3, Duration::from_secs(30));
        node.child = Some(child);
    }

    /// Creates `bucket`, writable with the test key.
    pub fn create_bucket(&self, bucket: &str) {
        let config = &self.nodes[0].config;
        garage_until_ok(config, &["bucket", "create", bucket]);
        garage_until_ok(
            config,
            &[
                "bucket", "allow", "--read", "--write", "--owner", bucket, "--key", "berth",
            ],
        );
    }

    /// A `storage.s3` config section for `bucket` through the balancer.
    pub fn storage_yaml(&self, bucket: &str) -> String {
        crate::emulators::s3_storage_yaml(
            &self.endpoint,
            bucket,
            GARAGE_ACCESS_KEY,
            GARAGE_SECRET_KEY,
        )
    }

    /// Kills node `i` at once (SIGKILL); the balancer skips it from then on.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut c) = self.nodes[i].child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts node `i` again on its data, reconnects it with the others (as an operator does;
    /// on their own they may wait a minute) and waits until the cluster sees every node up.
    pub fn restart(&mut self, i: usize) {
        Self::spawn(&mut self.nodes[i]);
        // Both ways: a node that saw this one fail waits out its own backoff otherwise.
        let (config, id) = (self.nodes[i].config.clone(), self.nodes[i].id.clone());
        for (j, other) in self.nodes.iter().enumerate() {
            if j != i && other.child.is_some() {
                garage_until_ok(&config, &["node", "connect", &other.id]);
                garage_until_ok(&other.config, &["node", "connect", &id]);
            }
        }
        self.wait_until_healthy();
        self.balancer.replace(i, self.nodes[i].s3.clone());
    }

    /// Whether every live node sees all three nodes up and connected.
    pub fn healthy(&self) -> bool {
        self.nodes.iter().filter(|n| n.child.is_some()).all(|n| {
            Command::new("garage")
                .arg("-c")
                .arg(&n.config)
                .arg("status")
                .output()
                .map(|o| {
                    let text = String::from_utf8_lossy(&o.stdout).into_owned();
                    // A node this one has not connected to yet is listed without a version.
                    o.status.success()
                        && text.matches("cargo:").count() == 3
                        && !text.contains("FAILED NODES")
                })
                .unwrap_or(false)
        })
    }
}

impl Drop for GarageCluster {
    fn drop(&mut self) {
        for i in 0..self.nodes.len() {
            self.kill(i);
        }
    }
}
