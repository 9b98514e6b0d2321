//! CNCF distribution 2.8 (Debian's `docker-registry`) on loopback, as a reference peer.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::server::{free_port, wait_for_port};

/// A running distribution registry.
pub struct Distribution {
    child: Child,
    /// `127.0.0.1:PORT`
    pub host: String,
    _config: tempfile::TempDir,
}

impl Distribution {
    /// Starts distribution with filesystem storage under `root`.
    pub fn filesystem(root: &Path) -> Distribution {
        Self::start(&format!(
            "filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true",
            root.display()
        ))
    }

    /// Starts distribution with `storage_yaml` indented under `storage:`.
    pub fn start(storage_yaml: &str) -> Distribution {
        Self::start_at(&format!("127.0.0.1:{}", free_port()), storage_yaml)
    }

    /// Starts distribution on `host` (`127.0.0.1:PORT`: again where a stopped one was).
    pub fn start_at(host: &str, storage_yaml: &str) -> Distribution {
        crate::tools::require("docker-registry");
        let host = host.to_owned();
        let dir = tempfile::tempdir().unwrap();
        let cfg = dir.path().join("config.yml");
        std::fs::write(
            &cfg,
            format!("version: 0.1\nlog:\n  level: warn\nstorage:\n  {storage_yaml}\nhttp:\n  addr: {host}\n"),
        )
        .unwrap();
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&cfg)
            .env_remove("AWS_CA_BUNDLE")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("cannot start docker-registry");
        wait_for_port(&host, Duration::from_secs(30));
        Distribution {
            child,
            host,
            _config: dir,
        }
    }
}

impl Distribution {
    /// The process id (for resource measurements).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Distribution {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
