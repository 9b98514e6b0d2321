//! The Helm chart, rendered by the real Helm engine (helm-python-sdk, through
//! `charts/berth/ci/render.py`) with every object validated against the Kubernetes schemas.

use std::path::Path;
use std::process::Command;

use serde_json::Value;

/// The chart's objects for `values`, or the engine's (or the validator's) complaint.
pub fn render(values: &Value) -> Result<Vec<Value>, String> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../charts/berth/ci/render.py");
    let out = Command::new("python3")
        .arg(script)
        .arg(values.to_string())
        .output()
        .expect("python3");
    if out.status.success() {
        Ok(serde_json::from_slice(&out.stdout).expect("render.py prints JSON"))
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}
