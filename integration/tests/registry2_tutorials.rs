//! The `registry:2` tutorials, word for word, with Berth's own image in its place: built from
//! the repository's Dockerfile by a real engine, run with `-p 5001:5000`, a bind-mounted
//! `/var/lib/registry` that outlives its container, TLS and basic auth from `REGISTRY_*`
//! variables, the password file made with the image itself; then the Helm chart's Deployment
//! run as Kubernetes would run it, two replicas on one S3 bucket.
//!
//! The engine runs in a network namespace of its own (with a bridge, so that `-p` works), and
//! so does everything the containers talk to; `localhost:5001` is the namespace's.

use std::path::Path;
use std::time::{Duration, Instant};

use base64::Engine as _;
use integration::docker::DockerEngine;
use serde_json::{Value, json};

const IMAGE: &str = "berth:tutorial";

/// `curl` inside the engine's namespace; returns the body (`-k` for TLS, `-u` when given).
fn curl(docker: &DockerEngine, url: &str, user: Option<&str>) -> String {
    let mut c = docker.in_namespace("curl");
    c.args(["-skf", url]);
    if let Some(u) = user {
        c.args(["-u", u]);
    }
    let out = c.output().unwrap();
    assert!(out.status.success(), "curl {url} failed");
    String::from_utf8(out.stdout).unwrap()
}

/// Waits until `url` answers inside the namespace (any status); on failure, shows the logs
/// of `container`.
fn wait_for(docker: &DockerEngine, url: &str, container: Option<&str>) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let ok = docker
            .in_namespace("curl")
            .args(["-sk", "-o", "/dev/null", url])
            .status()
            .unwrap()
            .success();
        if ok {
            return;
        }
        if Instant::now() > deadline {
            let logs = container
                .map(|c| {
                    let out = docker.try_run(&["logs", c]);
                    String::from_utf8_lossy(&out.stdout).into_owned()
                        + &String::from_utf8_lossy(&out.stderr)
                })
                .unwrap_or_default();
            panic!("{url} never answered: {logs}");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The tutorial's loop: tag, push, remove every local copy, pull, and check it is the image.
fn push_and_pull(docker: &DockerEngine, image: &str, reference: &str) {
    let id = docker.image_id(image);
    docker.run(&["tag", image, reference]);
    docker.run(&["push", reference]);
    docker.run(&["image", "remove", reference]);
    docker.run(&["pull", reference]);
    assert_eq!(docker.image_id(reference), id);
}

/// `docker run -d -p 5001:5000 --name registry -v VOLUME berth`, answering.
fn run_with_volume(docker: &DockerEngine, volume: &str) {
    docker.run(&[
        "run",
        "-d",
        "-p",
        "5001:5000",
        "--name",
        "registry",
        "-v",
        volume,
        IMAGE,
    ]);
    wait_for(docker, "http://localhost:5001/v2/", Some("registry"));
}

fn remove(docker: &DockerEngine, name: &str) {
    docker.run(&["container", "stop", name]);
    docker.run(&["container", "rm", "-v", name]);
}

#[test]
fn the_registry2_tutorials_and_the_helm_deployment_with_berths_image() {
    let docker = DockerEngine::start_isolated();
    let started = Instant::now();
    integration::image::build_berth_image(&docker, IMAGE);
    eprintln!("image built in {:?}", started.elapsed());
    docker.busybox_image("my-busybox-src:latest", "tutorial");
    let work = tempfile::tempdir().unwrap();

    // "Run a local registry": docker run -d -p 5000:5000 --restart=always --name registry registry:2
    docker.run(&[
        "run",
        "-d",
        "-p",
        "5001:5000",
        "--restart=always",
        "--name",
        "registry",
        IMAGE,
    ]);
    wait_for(&docker, "http://localhost:5001/v2/", Some("registry"));
    push_and_pull(
        &docker,
        "my-busybox-src:latest",
        "localhost:5001/my-busybox",
    );
    assert_eq!(
        curl(&docker, "http://localhost:5001/v2/_catalog", None),
        "{\"repositories\":[\"my-busybox\"]}"
    );
    assert_eq!(
        curl(
            &docker,
            "http://localhost:5001/v2/my-busybox/tags/list",
            None
        ),
        "{\"name\":\"my-busybox\",\"tags\":[\"latest\"]}"
    );
    remove(&docker, "registry");

    // "Customize the storage location": -v /mnt/registry:/var/lib/registry, surviving the
    // container.
    let data = work.path().join("registry-data");
    let volume = format!("{}:/var/lib/registry", data.display());
    run_with_volume(&docker, &volume);
    push_and_pull(&docker, "my-busybox-src:latest", "localhost:5001/kept");
    docker.run(&["rm", "-f", "registry"]);
    assert!(data.join("docker/registry/v2/repositories/kept").is_dir());
    run_with_volume(&docker, &volume);
    docker.run(&["image", "remove", "localhost:5001/kept"]);
    docker.run(&["pull", "localhost:5001/kept"]);
    remove(&docker, "registry");

    // "Get a certificate" and "Restrict access": TLS and basic auth from the environment,
    // the password file made with the image (the tutorials use the registry image's htpasswd).
    let certs = work.path().join("certs");
    std::fs::create_dir_all(&certs).unwrap();
    let (cert, key) = integration::certs::self_signed(&certs, "made");
    std::fs::rename(cert, certs.join("domain.crt")).unwrap();
    std::fs::rename(key, certs.join("domain.key")).unwrap();
    let auth = work.path().join("auth");
    std::fs::create_dir_all(&auth).unwrap();
    let entry = docker.run(&[
        "run",
        "--rm",
        "--entrypoint",
        "berth",
        IMAGE,
        "htpasswd",
        "-Bbn",
        "testuser",
        "testpassword",
    ]);
    std::fs::write(auth.join("htpasswd"), entry).unwrap();
    let certs_volume = format!("{}:/certs", certs.display());
    let auth_volume = format!("{}:/auth", auth.display());
    docker.run(&[
        "run",
        "-d",
        "-p",
        "5001:443",
        "--restart=always",
        "--name",
        "registry",
        "-v",
        &auth_volume,
        "-e",
        "REGISTRY_AUTH=htpasswd",
        "-e",
        "REGISTRY_AUTH_HTPASSWD_REALM=Registry Realm",
        "-e",
        "REGISTRY_AUTH_HTPASSWD_PATH=/auth/htpasswd",
        "-v",
        &certs_volume,
        "-e",
        "REGISTRY_HTTP_ADDR=0.0.0.0:443",
        "-e",
        "REGISTRY_HTTP_TLS_CERTIFICATE=/certs/domain.crt",
        "-e",
        "REGISTRY_HTTP_TLS_KEY=/certs/domain.key",
        IMAGE,
    ]);
    wait_for(&docker, "https://localhost:5001/v2/", Some("registry"));
    let refused = docker.try_run(&["pull", "localhost:5001/my-busybox"]);
    assert!(!refused.status.success(), "pulled without logging in");
    let login = docker.run_with_input(
        &[
            "login",
            "localhost:5001",
            "-u",
            "testuser",
            "--password-stdin",
        ],
        "testpassword",
    );
    assert!(
        login.status.success(),
        "{}",
        String::from_utf8_lossy(&login.stderr)
    );
    push_and_pull(&docker, "my-busybox-src:latest", "localhost:5001/secured");
    assert_eq!(
        curl(
            &docker,
            "https://localhost:5001/v2/_catalog",
            Some("testuser:testpassword")
        ),
        "{\"repositories\":[\"secured\"]}"
    );
    docker.run(&["logout", "localhost:5001"]);
    docker.run(&["rm", "-f", "registry"]);

    helm_deployment(&docker, work.path());
}

/// The chart's Deployment run by the engine as Kubernetes would run it: its rendered config
/// and Secret, its securityContext, two replicas (each with an address of its own, as pods
/// have) on one S3 bucket; a push through one and a pull through the other.
fn helm_deployment(docker: &DockerEngine, work: &Path) {
    // moto inside the namespace, reached from the containers at the bridge's gateway.
    let bridge = docker
        .in_namespace("ip")
        .args(["-4", "-o", "addr", "show", "docker0"])
        .output()
        .unwrap();
    let gateway = String::from_utf8_lossy(&bridge.stdout)
        .split_whitespace()
        .skip_while(|w| *w != "inet")
        .nth(1)
        .and_then(|cidr| cidr.split('/').next())
        .map(str::to_owned)
        .expect("the bridge's address");
    let port = integration::server::free_port();
    let mut moto = docker
        .in_namespace("moto_server")
        .args(["-H", "0.0.0.0", "-p", &port.to_string()])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    wait_for(docker, &format!("http://127.0.0.1:{port}/"), None);
    assert!(
        docker
            .in_namespace("curl")
            .args([
                "-sf",
                "-X",
                "PUT",
                &format!("http://127.0.0.1:{port}/charted")
            ])
            .status()
            .unwrap()
            .success()
    );
    let values = json!({
        "image": {"repository": "berth", "tag": "tutorial"},
        "storage": "s3",
        "s3": {"bucket": "charted", "regionEndpoint": format!("http://{gateway}:{port}"), "forcePathStyle": true},
        "secrets": {"s3": {"accessKey": "AKIDEXAMPLE", "secretKey": "chart-secret"}},
    });
    let objects = integration::helm::render(&values).unwrap();
    let find = |kind: &str| {
        objects
            .iter()
            .find(|o| o["kind"] == kind)
            .unwrap_or_else(|| panic!("no {kind}"))
            .clone()
    };
    let (deployment, config, secret) = (find("Deployment"), find("ConfigMap"), find("Secret"));
    let pod = &deployment["spec"]["template"]["spec"];
    let container = &pod["containers"][0];
    assert_eq!(
        format!(
            "{}:{}",
            values["image"]["repository"].as_str().unwrap(),
            values["image"]["tag"].as_str().unwrap()
        ),
        container["image"].as_str().unwrap()
    );
    let config_file = work.join("chart-config.yml");
    std::fs::write(&config_file, config["data"]["config.yml"].as_str().unwrap()).unwrap();
    let secret_value = |key: &str| -> String {
        if let Some(v) = secret["stringData"][key].as_str() {
            return v.to_owned();
        }
        let b64 = secret["data"][key].as_str().unwrap();
        String::from_utf8(
            base64::engine::general_purpose::STANDARD
                .decode(b64)
                .unwrap(),
        )
        .unwrap()
    };
    let replicas = deployment["spec"]["replicas"].as_u64().unwrap();
    assert!(replicas >= 2);
    let mut names = Vec::new();
    for (i, host_port) in [(0, 5011), (1, 5012)] {
        let name = format!("berth-{i}");
        let mut args = vec!["run".to_owned(), "-d".into(), "--name".into(), name.clone()];
        args.extend(pod_args(pod, container, &config_file, &secret_value, &name));
        args.extend(["-p".into(), format!("{host_port}:5000"), IMAGE.into()]);
        args.extend(
            container["args"]
                .as_array()
                .unwrap()
                .iter()
                .map(|a| a.as_str().unwrap().to_owned()),
        );
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        docker.run(&args);
        wait_for(
            docker,
            &format!("http://localhost:{host_port}/readyz"),
            Some(&name),
        );
        names.push(name);
    }
    // It runs as the chart says.
    let user = docker.run(&[
        "inspect",
        "--format",
        "{{.Config.User}} {{.HostConfig.ReadonlyRootfs}}",
        "berth-0",
    ]);
    assert_eq!(user.trim(), "65532:65532 true");
    let id = docker.image_id("my-busybox-src:latest");
    docker.run(&["tag", "my-busybox-src:latest", "localhost:5011/team/app:v1"]);
    docker.run(&["push", "localhost:5011/team/app:v1"]);
    docker.run(&["image", "remove", "localhost:5011/team/app:v1"]);
    docker.run(&["pull", "localhost:5012/team/app:v1"]);
    assert_eq!(docker.image_id("localhost:5012/team/app:v1"), id);
    for n in names {
        docker.run(&["rm", "-f", &n]);
    }
    let _ = moto.kill();
    let _ = moto.wait();
}

/// `docker run` flags for the pod's container: its user, read-only root, dropped capabilities,
/// environment (from the Secret and the pod's fields), and mounts (the ConfigMap's file, an
/// emptyDir as tmpfs).
fn pod_args(
    pod: &Value,
    container: &Value,
    config_file: &Path,
    secret_value: &dyn Fn(&str) -> String,
    pod_name: &str,
) -> Vec<String> {
    let mut out = Vec::new();
    let psc = &pod["securityContext"];
    out.push("--user".into());
    out.push(format!("{}:{}", psc["runAsUser"], psc["runAsGroup"]));
    let csc = &container["securityContext"];
    if csc["readOnlyRootFilesystem"] == true {
        out.push("--read-only".into());
    }
    if csc["allowPrivilegeEscalation"] == false {
        out.push("--security-opt=no-new-privileges".into());
    }
    for cap in csc["capabilities"]["drop"].as_array().into_iter().flatten() {
        out.push(format!("--cap-drop={}", cap.as_str().unwrap()));
    }
    for env in container["env"].as_array().into_iter().flatten() {
        let name = env["name"].as_str().unwrap();
        let value = if let Some(v) = env["value"].as_str() {
            v.to_owned()
        } else if let Some(key) = env["valueFrom"]["secretKeyRef"]["key"].as_str() {
            secret_value(key)
        } else if env["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name" {
            pod_name.to_owned()
        } else {
            panic!("an env entry this test cannot run: {env}")
        };
        out.push("-e".into());
        out.push(format!("{name}={value}"));
    }
    let volumes = pod["volumes"].as_array().unwrap();
    for mount in container["volumeMounts"].as_array().into_iter().flatten() {
        let volume = volumes.iter().find(|v| v["name"] == mount["name"]).unwrap();
        let path = mount["mountPath"].as_str().unwrap();
        if volume.get("configMap").is_some() {
            out.push("-v".into());
            out.push(format!("{}:{path}:ro", config_file.display()));
        } else if volume.get("emptyDir").is_some() {
            out.push("--tmpfs".into());
            out.push(format!("{path}:uid=65532,gid=65532"));
        } else {
            panic!("a volume this test cannot run: {volume}");
        }
    }
    out
}
