//! The Helm chart, rendered by the real Helm engine (helm-python-sdk) for every storage mode,
//! every object validated against the Kubernetes schemas, and the rendered configuration run by
//! the real berth binary against moto S3 with a skopeo push.

use integration::Berth;
use integration::emulators::Moto;
use integration::helm::render;
use integration::layout::write_image;
use integration::tools::{skopeo_copy, tree};
use serde_json::{Value, json};

fn kinds(objects: &[Value]) -> Vec<String> {
    objects
        .iter()
        .map(|o| o["kind"].as_str().unwrap().to_owned())
        .collect()
}

fn find<'a>(objects: &'a [Value], kind: &str) -> &'a Value {
    objects
        .iter()
        .find(|o| o["kind"] == kind)
        .unwrap_or_else(|| panic!("no {kind}"))
}

#[test]
fn every_storage_mode_renders_valid_objects() {
    let modes = [
        json!({}),
        json!({"storage": "s3", "s3": {"bucket": "images"}, "secrets": {"s3": {"accessKey": "AK", "secretKey": "SK"}},
               "ingress": {"enabled": true, "tls": {"secretName": "tls"}}, "autoscaling": {"enabled": true},
               "metrics": {"serviceMonitor": {"enabled": true}}, "networkPolicy": {"enabled": true}}),
        json!({"storage": "s3", "s3": {"bucket": "images"},
               "serviceAccount": {"annotations": {"eks.amazonaws.com/role-arn": "arn:aws:iam::1:role/berth"}}}),
        json!({"storage": "azure", "azure": {"accountName": "acct", "container": "images"}, "secrets": {"azure": {"accountKey": "k"}}}),
        json!({"storage": "gcs", "gcs": {"bucket": "images"}, "secrets": {"gcs": {"keyfile": "{}"}}}),
        json!({"storage": "filesystem", "replicaCount": 1, "persistence": {"enabled": true}, "secrets": {"htpasswd": "a:$2y$05$abc"}}),
        json!({"proxy": {"remoteUrl": "https://registry-1.docker.io", "username": "me"}, "secrets": {"proxyPassword": "tok"}}),
    ];
    for values in modes {
        let objects = render(&values).unwrap_or_else(|e| panic!("{values}: {e}"));
        let k = kinds(&objects);
        for required in [
            "ConfigMap",
            "Deployment",
            "Service",
            "ServiceAccount",
            "PodDisruptionBudget",
        ] {
            assert!(
                k.contains(&required.to_owned()),
                "{values}: no {required} in {k:?}"
            );
        }
        assert!(
            !k.iter().any(|k| k == "CronJob"),
            "garbage collection must not be a CronJob"
        );
        let pod = &find(&objects, "Deployment")["spec"]["template"]["spec"];
        let c = &pod["containers"][0];
        assert_eq!(c["securityContext"]["readOnlyRootFilesystem"], true);
        assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
        assert_eq!(c["livenessProbe"]["httpGet"]["path"], "/healthz");
        assert_eq!(c["readinessProbe"]["httpGet"]["path"], "/readyz");
        let config = find(&objects, "ConfigMap")["data"]["config.yml"]
            .as_str()
            .unwrap()
            .to_owned();
        assert!(
            !config.contains("secret") && !config.contains("SK"),
            "credentials in the ConfigMap: {config}"
        );
        assert!(
            config.contains("gc:"),
            "online GC is configured in Berth itself: {config}"
        );
    }
    let ingress = render(&json!({"ingress": {"enabled": true}})).unwrap();
    let annotations = &find(&ingress, "Ingress")["metadata"]["annotations"];
    assert_eq!(
        annotations["nginx.ingress.kubernetes.io/proxy-body-size"], "0",
        "big layers pass the ingress"
    );
    assert_eq!(
        annotations["nginx.ingress.kubernetes.io/proxy-request-buffering"],
        "off"
    );
    // A pull-through cache: the URL and account in the config, the password from the Secret.
    let proxied = render(
        &json!({"proxy": {"remoteUrl": "https://registry-1.docker.io", "username": "me", "ttl": "72h"},
        "secrets": {"proxyPassword": "tok"}}),
    )
    .unwrap();
    let config = find(&proxied, "ConfigMap")["data"]["config.yml"]
        .as_str()
        .unwrap();
    assert!(
        config.contains("remoteurl: https://registry-1.docker.io"),
        "{config}"
    );
    assert!(!config.contains("tok"), "{config}");
    assert!(config.contains("ttl: 72h"), "{config}");
    let env = &find(&proxied, "Deployment")["spec"]["template"]["spec"]["containers"][0]["env"];
    assert!(
        env.as_array()
            .unwrap()
            .iter()
            .any(|e| e["name"] == "REGISTRY_PROXY_PASSWORD"
                && e["valueFrom"]["secretKeyRef"]["key"] == "proxyPassword"),
        "{env}"
    );
    assert!(render(&json!({"proxy": {"remoteUrl": "https://x/v2/"}})).is_err());
    assert!(render(&json!({"proxy": {"remoteUrl": "https://x", "ttl": "a week"}})).is_err());
    let forever = render(&json!({"proxy": {"remoteUrl": "https://x", "ttl": 0}})).unwrap();
    let config = find(&forever, "ConfigMap")["data"]["config.yml"]
        .as_str()
        .unwrap();
    assert!(config.contains("ttl: \"0\""), "{config}");
    let irsa = render(&json!({"storage": "s3", "s3": {"bucket": "images"},
        "serviceAccount": {"annotations": {"eks.amazonaws.com/role-arn": "arn:aws:iam::1:role/berth"}}})).unwrap();
    assert!(
        !kinds(&irsa).contains(&"Secret".to_owned()),
        "IRSA needs no static keys"
    );
}

#[test]
fn wrong_values_fail_at_install_with_a_clear_message() {
    let cases = [
        (json!({"storage": "nfs"}), "/storage"),
        (json!({"storage": "s3"}), "/s3/bucket"),
        (
            json!({"storage": "azure", "azure": {"container": "images"}}),
            "accountName",
        ),
        (json!({"replicaCount": 0}), "/replicaCount"),
        (json!({"s3": {"chunkSize": 1024}}), "/s3/chunkSize"),
        (json!({"gc": {"grace": "two hours"}}), "/gc/grace"),
        (
            json!({"replicaCount": 3, "persistence": {"enabled": true}}),
            "ReadWriteMany",
        ),
        (json!({"singleWriter": true}), "replicaCount=1"),
        (
            json!({"singleWriter": true, "replicaCount": 1, "autoscaling": {"enabled": true}}),
            "autoscaling.enabled=false",
        ),
    ];
    for (values, expect) in cases {
        let err = render(&values).expect_err(&format!("{values} was accepted"));
        assert!(
            err.contains(expect),
            "{values}: message does not name {expect}: {err}"
        );
    }
}

/// A store that ignores conditional writes: one replica, replaced with Recreate, and the
/// switch in Berth's configuration.
#[test]
fn single_writer_mode_is_one_replica_replaced_whole() {
    let objects = render(
        &json!({"storage": "s3", "s3": {"bucket": "images", "regionEndpoint": "http://garage:3900"},
        "singleWriter": true, "replicaCount": 1}),
    )
    .unwrap();
    let deployment = find(&objects, "Deployment");
    assert_eq!(deployment["spec"]["replicas"], 1);
    assert_eq!(deployment["spec"]["strategy"]["type"], "Recreate");
    let config = find(&objects, "ConfigMap")["data"]["config.yml"]
        .as_str()
        .unwrap();
    assert!(
        config.contains("storage:\n    singlewriter: true"),
        "{config}"
    );
    // One pod cannot keep a disruption budget: a drain would wait on it forever.
    assert!(
        !kinds(&objects).contains(&"PodDisruptionBudget".to_owned()),
        "{:?}",
        kinds(&objects)
    );
    let usual = render(&json!({})).unwrap();
    assert!(find(&usual, "Deployment")["spec"]["strategy"].is_null());
    assert!(kinds(&usual).contains(&"PodDisruptionBudget".to_owned()));
}

#[test]
fn rendered_s3_config_runs_berth_against_moto() {
    let moto = Moto::start();
    moto.create_bucket("chart-images");
    let values = json!({"storage": "s3", "s3": {"bucket": "chart-images", "regionEndpoint": moto.endpoint, "forcePathStyle": true},
                        "secrets": {"s3": {"accessKey": "test", "secretKey": "test"}}});
    let objects = render(&values).unwrap();
    let config = find(&objects, "ConfigMap")["data"]["config.yml"]
        .as_str()
        .unwrap()
        .to_owned();
    // The Deployment passes the keys as REGISTRY_* variables from the Secret: do the same.
    let secret = &find(&objects, "Secret")["data"];
    let decode = |k: &str| {
        use base64::Engine;
        String::from_utf8(
            base64::engine::general_purpose::STANDARD
                .decode(secret[k].as_str().unwrap())
                .unwrap(),
        )
        .unwrap()
    };
    let env_names: Vec<String> =
        find(&objects, "Deployment")["spec"]["template"]["spec"]["containers"][0]["env"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["name"].as_str().unwrap().to_owned())
            .collect();
    assert!(env_names.contains(&"REGISTRY_STORAGE_S3_ACCESSKEY".to_owned()));
    let (ak, sk) = (decode("s3AccessKey"), decode("s3SecretKey"));
    let berth = Berth::with_config(
        &config,
        &[
            ("REGISTRY_STORAGE_S3_ACCESSKEY", &ak),
            ("REGISTRY_STORAGE_S3_SECRETKEY", &sk),
        ],
    );
    let work = tempfile::tempdir().unwrap();
    let src = work.path().join("src");
    write_image(&src, "v1", 300, &[2 << 20]);
    let remote = format!("docker://{}/chart/app:v1", berth.host);
    skopeo_copy(
        &format!("oci:{}:v1", src.display()),
        &remote,
        &["--preserve-digests"],
    );
    let dst = work.path().join("dst");
    skopeo_copy(&remote, &format!("oci:{}:v1", dst.display()), &[]);
    assert_eq!(tree(&src.join("blobs")), tree(&dst.join("blobs")));
}

/// A policy in the values: its own ConfigMap, mounted as a directory (kubelet updates those,
/// and Berth reads the file again), named in config.yml beside the OIDC issuers; and the two
/// rendered files together are what `berth policy explain` reads.
#[test]
fn a_policy_and_oidc_issuers_render_into_a_config_berth_reads() {
    let values = json!({
        "secrets": {"htpasswd": "alice:$2y$05$abc"},
        "policy": {"groups": {"devs": ["alice"]},
                   "rules": [{"name": "devs push team", "repository": "team/*", "actions": ["pull", "push"], "groups": ["devs"]}]},
        "oidc": [{"issuer": "https://token.actions.githubusercontent.com", "audience": "registry.example.com"}],
    });
    let objects = render(&values).unwrap_or_else(|e| panic!("{e}"));
    let maps: Vec<&Value> = objects
        .iter()
        .filter(|o| o["kind"] == "ConfigMap")
        .collect();
    let policy_map = maps
        .iter()
        .find(|m| m["data"]["policy.yml"].is_string())
        .expect("no ConfigMap holds the policy");
    let config_map = maps
        .iter()
        .find(|m| m["data"]["config.yml"].is_string())
        .unwrap();
    let config = config_map["data"]["config.yml"].as_str().unwrap();
    assert!(config.contains("/etc/berth/policy/policy.yml"), "{config}");
    assert!(
        config.contains("token.actions.githubusercontent.com"),
        "{config}"
    );
    let pod = &find(&objects, "Deployment")["spec"]["template"]["spec"];
    let mount = pod["containers"][0]["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["mountPath"] == "/etc/berth/policy")
        .expect("the policy is not mounted");
    assert!(
        mount.get("subPath").is_none(),
        "a subPath mount never sees an update"
    );

    // What the pod would read, run by berth itself.
    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("policy.yml");
    std::fs::write(&policy, policy_map["data"]["policy.yml"].as_str().unwrap()).unwrap();
    std::fs::write(dir.path().join("htpasswd"), "alice:$2y$05$abc\n").unwrap();
    let local = config
        .replace("/etc/berth/policy/policy.yml", policy.to_str().unwrap())
        .replace(
            "/etc/berth/auth/htpasswd",
            dir.path().join("htpasswd").to_str().unwrap(),
        )
        .replace(
            "/var/lib/registry",
            dir.path().join("data").to_str().unwrap(),
        );
    let config_path = dir.path().join("config.yml");
    std::fs::write(&config_path, local).unwrap();
    let out = integration::server::berth_command(
        &config_path,
        &[
            "policy",
            "explain",
            "--account",
            "alice",
            "--repository",
            "team/app",
            "--action",
            "push",
        ],
    );
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && said.contains("allowed by rule devs push team"),
        "{said}{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Every `berth_*` name in `text`, as a family name (histogram series to their family).
fn metric_names(text: &str) -> std::collections::BTreeSet<String> {
    let mut out = std::collections::BTreeSet::new();
    let bytes = text.as_bytes();
    let mut i = 0;
    while let Some(at) = text[i..].find("berth_") {
        let start = i + at;
        let mut end = start;
        while end < bytes.len() && (bytes[end].is_ascii_lowercase() || bytes[end] == b'_') {
            end += 1;
        }
        // Not the middle of another word (a label value such as `dashboard:berth_x`).
        if start == 0 || !(bytes[start - 1].is_ascii_alphanumeric() || bytes[start - 1] == b'_') {
            let name = &text[start..end];
            let family = ["_bucket", "_count", "_sum"]
                .iter()
                .find_map(|s| name.strip_suffix(s))
                .unwrap_or(name);
            out.insert(family.to_owned());
        }
        i = end.max(start + 1);
    }
    out
}

/// The dashboard and the alerts the chart ships: every expression is valid PromQL (promtool),
/// every Berth metric they name is one a running Berth exports, and the alerts fire on the
/// series they watch (promtool's rule tests).
#[tokio::test]
async fn the_dashboard_and_alerts_watch_metrics_berth_exports() {
    integration::tools::require("promtool");
    let objects = render(&json!({"metrics": {"grafanaDashboard": {"enabled": true},
        "prometheusRule": {"enabled": true}, "serviceMonitor": {"enabled": true}}}))
    .unwrap();
    let dashboard = objects
        .iter()
        .find(|o| o["kind"] == "ConfigMap" && o["metadata"]["labels"]["grafana_dashboard"] == "1")
        .expect("a ConfigMap Grafana's sidecar picks up");
    let dash: Value =
        serde_json::from_str(dashboard["data"]["berth.json"].as_str().unwrap()).unwrap();
    let exprs: Vec<String> = dash["panels"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|p| p["targets"].as_array().cloned().unwrap_or_default())
        .map(|t| t["expr"].as_str().unwrap().to_owned())
        .collect();
    assert!(exprs.len() >= 20, "{exprs:?}");
    let rule = find(&objects, "PrometheusRule");
    let alerts = rule["spec"]["groups"][0]["rules"]
        .as_array()
        .unwrap()
        .clone();
    let names: Vec<&str> = alerts
        .iter()
        .map(|a| a["alert"].as_str().unwrap())
        .collect();
    for wanted in [
        "BerthStoreNotReady",
        "BerthHighErrorRate",
        "BerthStoreErrors",
        "BerthGcFailing",
    ] {
        assert!(names.contains(&wanted), "{names:?}");
    }
    // The ServiceMonitor scrapes the metrics port, which the Service names.
    let monitor = find(&objects, "ServiceMonitor");
    assert_eq!(monitor["spec"]["endpoints"][0]["port"], "metrics");
    let ports = &find(&objects, "Service")["spec"]["ports"];
    assert!(
        ports
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["name"] == "metrics"),
        "{ports}"
    );

    // Parsed by Prometheus' own checker: the alerts as they are, each dashboard query as a
    // recording rule with Grafana's variables filled in.
    let dir = tempfile::tempdir().unwrap();
    let recorded: Vec<Value> = exprs
        .iter()
        .enumerate()
        .map(|(i, e)| {
            json!({"record": format!("dashboard:panel_{i}"),
                   "expr": e.replace("$__rate_interval", "5m").replace("$job", ".*")})
        })
        .collect();
    let rules = dir.path().join("rules.yml");
    std::fs::write(
        &rules,
        serde_json::to_string(&json!({"groups": [
            {"name": "berth", "rules": alerts},
            {"name": "dashboard", "rules": recorded},
        ]}))
        .unwrap(),
    )
    .unwrap();
    integration::tools::run(
        std::process::Command::new("promtool")
            .arg("check")
            .arg("rules")
            .arg(&rules),
    );

    // Alerts fire on the series they watch, and stay quiet without them.
    let sel = r#"namespace="registry",service="berth",pod="berth-0""#;
    let tests = dir.path().join("tests.yml");
    std::fs::write(
        &tests,
        serde_json::to_string(&json!({
            "rule_files": [rules.file_name().unwrap().to_str().unwrap()],
            "evaluation_interval": "1m",
            "tests": [{
                "interval": "1m",
                "input_series": [
                    {"series": format!("berth_store_ready{{{sel}}}"), "values": "1 1 0 0 0 0 0"},
                    {"series": format!(r#"berth_http_requests_total{{{sel},route="blob",status="200"}}"#), "values": "0+60x20"},
                    {"series": format!(r#"berth_http_requests_total{{{sel},route="blob",status="500"}}"#), "values": "0+30x20"},
                    {"series": format!(r#"berth_gc_runs_total{{{sel},result="failed"}}"#), "values": "0 0 1 1 1"},
                ],
                "alert_rule_test": [
                    {"eval_time": "1m", "alertname": "BerthStoreNotReady", "exp_alerts": []},
                    {"eval_time": "5m", "alertname": "BerthStoreNotReady",
                     "exp_alerts": [{"exp_labels": {"severity": "critical", "pod": "berth-0"},
                        "exp_annotations": {"summary": alerts.iter().find(|a| a["alert"] == "BerthStoreNotReady").unwrap()["annotations"]["summary"]}}]},
                    {"eval_time": "15m", "alertname": "BerthHighErrorRate",
                     "exp_alerts": [{"exp_labels": {"severity": "warning"},
                        "exp_annotations": {"summary": alerts.iter().find(|a| a["alert"] == "BerthHighErrorRate").unwrap()["annotations"]["summary"]}}]},
                    {"eval_time": "1m", "alertname": "BerthGcFailing", "exp_alerts": []},
                    {"eval_time": "3m", "alertname": "BerthGcFailing",
                     "exp_alerts": [{"exp_labels": {"severity": "warning"},
                        "exp_annotations": {"summary": alerts.iter().find(|a| a["alert"] == "BerthGcFailing").unwrap()["annotations"]["summary"]}}]},
                ],
            }],
        }))
        .unwrap(),
    )
    .unwrap();
    integration::tools::run(
        std::process::Command::new("promtool")
            .arg("test")
            .arg("rules")
            .arg(&tests)
            .current_dir(dir.path()),
    );

    // Every metric they name, a Berth exports (with webhooks, replication and scheduled
    // collections on, as the dashboard shows them).
    let store = tempfile::tempdir().unwrap();
    let debug = format!("127.0.0.1:{}", integration::server::free_port());
    let nowhere = format!("127.0.0.1:{}", integration::server::free_port());
    let berth = Berth::with_config(
        &format!(
            "storage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  debug:\n    addr: {debug}\nnotifications:\n  endpoints:\n    - name: hook\n      url: http://{nowhere}/\n      threshold: 1\nberth:\n  gc:\n    enabled: true\n    interval: 1s\n  replication:\n    downstreams:\n      - name: dr\n        remoteurl: http://{nowhere}\n",
            store.path().display()
        ),
        &[],
    );
    let api = integration::http::Api::new(&berth.url);
    let m = api.image_manifest("team/app", "dashboard").await;
    api.put_manifest(
        "team/app",
        "v1",
        "application/vnd.oci.image.manifest.v1+json",
        &m,
    )
    .await;
    let wanted: std::collections::BTreeSet<String> = exprs
        .iter()
        .chain(
            alerts
                .iter()
                .map(|a| a["expr"].as_str().unwrap().to_owned())
                .collect::<Vec<_>>()
                .iter(),
        )
        .flat_map(|e| metric_names(e))
        .collect();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let text = reqwest::get(format!("http://{debug}/metrics"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let exported: std::collections::BTreeSet<String> = text
            .lines()
            .filter_map(|l| l.strip_prefix("# TYPE "))
            .filter_map(|l| l.split_whitespace().next())
            .map(str::to_owned)
            .collect();
        let missing: Vec<&String> = wanted.difference(&exported).collect();
        if missing.is_empty() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "named by the dashboard or the alerts, not exported: {missing:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }
}
