//! Real storage servers on loopback: moto and s3s-fs (S3) and Azurite (Azure Blob), stopped on drop.

use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::server::{free_port, wait_for_port};

/// Azurite's well-known development account.
pub const AZURITE_ACCOUNT: &str = "devstoreaccount1";
/// Azurite's well-known development key (public, documented by Microsoft).
pub const AZURITE_KEY: &str =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

fn kill(child: &mut Child) {
    let _ = child.kill();
    let _ = child.wait();
}

/// Finds a program on PATH or in the project's `.tools/node_modules/.bin`.
fn program(name: &str) -> PathBuf {
    if let Some(p) = std::env::var_os("PATH").and_then(|p| {
        std::env::split_paths(&p)
            .map(|d| d.join(name))
            .find(|c| c.is_file())
    }) {
        return p;
    }
    let local = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../.tools/node_modules/.bin")
        .join(name);
    assert!(
        local.is_file(),
        "{name} is not installed; run ./scripts/test.sh, which installs it (see README)"
    );
    local
}

/// Starts `cmd` (a server told to listen on `addr`), quiet, and waits until `addr` accepts.
fn spawn_listening(mut cmd: Command, addr: &str) -> Child {
    let child = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {:?}: {e}", cmd.get_program()));
    wait_for_port(addr, Duration::from_secs(60));
    child
}

/// A `storage.s3` config section for `bucket` on the S3 server at `endpoint`.
pub(crate) fn s3_storage_yaml(
    endpoint: &str,
    bucket: &str,
    access_key: &str,
    secret_key: &str,
) -> String {
    format!(
        "s3:\n    bucket: {bucket}\n    region: us-east-1\n    regionendpoint: {endpoint}\n    accesskey: {access_key}\n    secretkey: {secret_key}\n    forcepathstyle: true\n    rootdirectory: /registry\n"
    )
}

/// S3 driver options for `bucket` on the S3 server at `endpoint` with these keys, under the
/// root `storage_yaml` names (5 MiB parts; copies above 5 GiB part by part, as Berth's default).
pub fn s3_options(
    endpoint: &str,
    keys: (&str, &str),
    bucket: &str,
) -> storage_drivers::s3::S3Options {
    storage_drivers::s3::S3Options {
        bucket: bucket.into(),
        region: Some("us-east-1".into()),
        endpoint: Some(endpoint.into()),
        access_key: Some(keys.0.into()),
        secret_key: Some(keys.1.into()),
        force_path_style: true,
        root: "registry".into(),
        part_size: 5 << 20,
        copy_threshold: 5 << 30,
        copy_part_size: 1 << 30,
        ..Default::default()
    }
}

/// A raw HTTP/1.1 request on loopback; returns the status code.
fn raw_request(addr: &str, request: &str) -> u16 {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.write_all(request.as_bytes()).unwrap();
    let mut buf = [0u8; 64];
    let n = s.read(&mut buf).unwrap();
    let head = String::from_utf8_lossy(&buf[..n]);
    head.split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

/// moto's S3 server (`pip install 'moto[server]'`).
pub struct Moto {
    child: Child,
    /// `http://127.0.0.1:PORT`
    pub endpoint: String,
    addr: String,
}

impl Moto {
    /// Starts moto on a free port.
    pub fn start() -> Moto {
        let port = free_port();
        let addr = format!("127.0.0.1:{port}");
        let mut cmd = Command::new(program("moto_server"));
        cmd.args(["-H", "127.0.0.1", "-p", &port.to_string()]);
        let child = spawn_listening(cmd, &addr);
        Moto {
            child,
            endpoint: format!("http://{addr}"),
            addr,
        }
    }

    /// Creates a bucket (moto needs no signature for this).
    pub fn create_bucket(&self, bucket: &str) {
        let status = raw_request(
            &self.addr,
            &format!(
                "PUT /{bucket} HTTP/1.1\r\nHost: {}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                self.addr
            ),
        );
        assert_eq!(status, 200, "moto refused to create bucket {bucket}");
    }

    /// A `storage.s3` config section for this server.
    pub fn storage_yaml(&self, bucket: &str) -> String {
        s3_storage_yaml(&self.endpoint, bucket, "test", "test")
    }

    /// An S3 driver on `bucket` under the root `storage_yaml` names, to write into the store
    /// beside a Berth (what a crash left behind, or another process).
    pub fn driver(&self, bucket: &str) -> storage_drivers::object_store_driver::ObjectStoreDriver {
        // Both TLS providers are linked into the tests: pick one, as berth's main does.
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
        storage_drivers::s3::s3_driver(&s3_options(&self.endpoint, ("test", "test"), bucket))
            .unwrap()
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        kill(&mut self.child);
    }
}

/// s3s-fs (`cargo install s3s-fs --features binary`): an S3 server on a directory that checks
/// SigV4 signatures for real, including presigned URLs, which moto does not.
pub struct S3sFs {
    child: Child,
    /// `http://127.0.0.1:PORT`
    pub endpoint: String,
    dir: tempfile::TempDir,
}

/// The keys s3s-fs is started with.
pub const S3S_ACCESS_KEY: &str = "berth-test-access";
/// The secret s3s-fs is started with.
pub const S3S_SECRET_KEY: &str = "berth-test-secret";

impl S3sFs {
    /// Starts s3s-fs on a free port over a fresh directory.
    pub fn start() -> S3sFs {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let addr = format!("127.0.0.1:{port}");
        let mut cmd = Command::new(program("s3s-fs"));
        cmd.args(["--host", "127.0.0.1", "--port", &port.to_string()])
            .args(["--access-key", S3S_ACCESS_KEY])
            .args(["--secret-key", S3S_SECRET_KEY])
            .arg(dir.path());
        let child = spawn_listening(cmd, &addr);
        S3sFs {
            child,
            endpoint: format!("http://{addr}"),
            dir,
        }
    }

    /// Creates a bucket: to s3s-fs a bucket is a directory.
    pub fn create_bucket(&self, bucket: &str) {
        std::fs::create_dir(self.dir.path().join(bucket)).unwrap();
    }

    /// A `storage.s3` config section for this server.
    pub fn storage_yaml(&self, bucket: &str) -> String {
        s3_storage_yaml(&self.endpoint, bucket, S3S_ACCESS_KEY, S3S_SECRET_KEY)
    }
}

impl Drop for S3sFs {
    fn drop(&mut self) {
        kill(&mut self.child);
    }
}

/// Azurite's blob service (`npm install azurite`).
pub struct Azurite {
    child: Child,
    /// `http://127.0.0.1:PORT/devstoreaccount1`
    pub endpoint: String,
    _dir: tempfile::TempDir,
}

impl Azurite {
    /// Starts Azurite on a free port with its data in a temporary directory.
    pub fn start() -> Azurite {
        let port = free_port();
        let addr = format!("127.0.0.1:{port}");
        let dir = tempfile::tempdir().unwrap();
        let child = Command::new(program("azurite-blob"))
            .args([
                "--blobHost",
                "127.0.0.1",
                "--blobPort",
                &port.to_string(),
                "--location",
            ])
            .arg(dir.path())
            .args(["--skipApiVersionCheck", "--disableTelemetry", "--silent"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("cannot start azurite-blob");
        wait_for_port(&addr, Duration::from_secs(60));
        Azurite {
            child,
            endpoint: format!("http://{addr}/{AZURITE_ACCOUNT}"),
            _dir: dir,
        }
    }

    /// Creates a container with the Azure SDK for Python (installed by the test command).
    pub fn create_container(&self, name: &str) {
        let conn = format!(
            "DefaultEndpointsProtocol=http;AccountName={AZURITE_ACCOUNT};AccountKey={AZURITE_KEY};BlobEndpoint={};",
            self.endpoint
        );
        let script = "import sys\nfrom azure.storage.blob import BlobServiceClient\nBlobServiceClient.from_connection_string(sys.argv[1]).create_container(sys.argv[2])\n";
        crate::tools::run(Command::new("python3").args(["-c", script, &conn, name]));
    }

    /// A `storage.azure` config section for this server.
    pub fn storage_yaml(&self, container: &str) -> String {
        format!(
            "azure:\n    accountname: {AZURITE_ACCOUNT}\n    accountkey: {AZURITE_KEY}\n    container: {container}\n    endpoint: {}\n    rootdirectory: /registry\n",
            self.endpoint
        )
    }
}

impl Drop for Azurite {
    fn drop(&mut self) {
        kill(&mut self.child);
    }
}

/// gcp-storage-emulator (`pip install gcp-storage-emulator`): GCS's JSON API in memory.
pub struct GcsEmulator {
    child: Child,
    /// `http://127.0.0.1:PORT`
    pub endpoint: String,
    addr: String,
    /// A throwaway service-account key, so signed URLs can be made and checked offline.
    pub service_account_key: String,
}

impl GcsEmulator {
    /// Starts the emulator on a free port.
    pub fn start() -> GcsEmulator {
        let port = free_port();
        let addr = format!("127.0.0.1:{port}");
        let child = Command::new(program("gcp-storage-emulator"))
            .args([
                "start",
                "--host",
                "127.0.0.1",
                "--port",
                &port.to_string(),
                "--in-memory",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("cannot start gcp-storage-emulator");
        wait_for_port(&addr, Duration::from_secs(60));
        let pem = crate::tools::run(Command::new("openssl").args([
            "genpkey",
            "-algorithm",
            "RSA",
            "-pkeyopt",
            "rsa_keygen_bits:2048",
        ]));
        let key = serde_json::json!({
            "type": "service_account",
            "project_id": "berth-test",
            "private_key_id": "test-key",
            "private_key": String::from_utf8_lossy(&pem.stdout),
            "client_email": "berth@berth-test.iam.gserviceaccount.com",
            // Never contacted: the emulator takes requests without a token.
            "token_uri": "http://127.0.0.1:9/token",
        });
        GcsEmulator {
            child,
            endpoint: format!("http://{addr}"),
            addr,
            service_account_key: key.to_string(),
        }
    }

    /// Creates a bucket (the emulator needs no credentials).
    pub fn create_bucket(&self, bucket: &str) {
        let body = format!("{{\"name\":\"{bucket}\"}}");
        let status = raw_request(
            &self.addr,
            &format!(
                "POST /storage/v1/b?project=berth-test HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                self.addr,
                body.len()
            ),
        );
        assert_eq!(status, 200, "emulator refused to create bucket {bucket}");
    }

    /// The `berth` section a Berth on the emulator needs: the emulator ignores
    /// `ifGenerationMatch` (real GCS honours it), which the startup probe finds, so Berth runs
    /// there in single-writer mode.
    pub const BERTH_YAML: &str = "berth:\n  storage:\n    singlewriter: true\n";

    /// A `storage.gcs` config section for this server (the key is written to `dir`).
    pub fn storage_yaml(&self, bucket: &str, dir: &std::path::Path) -> String {
        let keyfile = dir.join("gcs-key.json");
        std::fs::write(&keyfile, &self.service_account_key).unwrap();
        format!(
            "gcs:\n    bucket: {bucket}\n    keyfile: {}\n    endpoint: {}\n    anonymous: true\n    rootdirectory: /registry\n",
            keyfile.display(),
            self.endpoint
        )
    }
}

impl Drop for GcsEmulator {
    fn drop(&mut self) {
        kill(&mut self.child);
    }
}
