//! A registry under a policy file (repository rules: retention, quotas), on local disk or on
//! S3 (moto), with as many replicas on its one store as a test asks for.

use std::path::PathBuf;

use crate::Berth;
use crate::emulators::Moto;

/// Replicas on one store, and the config file `berth` commands take.
pub struct RuledRegistry {
    /// The replicas, each its own process.
    pub replicas: Vec<Berth>,
    /// The config every replica runs with.
    pub config: PathBuf,
    _moto: Option<Moto>,
    _dir: tempfile::TempDir,
}

impl RuledRegistry {
    /// `replicas` processes on one store (a moto bucket when `on_s3`, else a directory)
    /// with deletes enabled and `policy` as the policy file.
    pub fn start(on_s3: bool, policy: &str, replicas: usize) -> RuledRegistry {
        Self::start_with(on_s3, policy, replicas, "")
    }

    /// The same, with `berth_yaml` (indented lines) added to the `berth:` section.
    pub fn start_with(
        on_s3: bool,
        policy: &str,
        replicas: usize,
        berth_yaml: &str,
    ) -> RuledRegistry {
        let dir = tempfile::tempdir().unwrap();
        let policy_path = dir.path().join("policy.yml");
        std::fs::write(&policy_path, policy).unwrap();
        let moto = on_s3.then(Moto::start);
        let storage = match &moto {
            Some(m) => {
                m.create_bucket("ruled");
                m.storage_yaml("ruled")
            }
            None => format!(
                "filesystem:\n    rootdirectory: {}\n",
                dir.path().join("data").display()
            ),
        };
        let yaml = format!(
            "storage:\n  {storage}  delete:\n    enabled: true\nberth:\n  policy:\n    file: {}\n{berth_yaml}",
            policy_path.display()
        );
        let config = dir.path().join("config.yml");
        std::fs::write(&config, &yaml).unwrap();
        RuledRegistry {
            replicas: (0..replicas)
                .map(|_| Berth::with_config(&yaml, &[]))
                .collect(),
            config,
            _moto: moto,
            _dir: dir,
        }
    }

    /// The first replica.
    pub fn berth(&self) -> &Berth {
        &self.replicas[0]
    }
}
