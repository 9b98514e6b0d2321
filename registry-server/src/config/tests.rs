//! Configuration tests: distribution configs, overrides, every backend section, bad keys.
use super::*;
use storage_drivers::local::WriteMode;

fn load_str(yaml: &str, env: &[(&str, &str)]) -> Result<(Settings, Vec<String>), ConfigError> {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("config.yml");
    std::fs::write(&p, yaml).unwrap();
    load(
        Source::File(&p),
        env.iter().map(|(k, v)| (k.to_string(), v.to_string())),
    )
}

#[test]
fn embedded_default_is_local_disk_on_loopback() {
    let (s, w) = load(Source::Embedded, Vec::new()).unwrap();
    assert_eq!(s.addr.to_string(), "127.0.0.1:5000");
    assert_eq!(
        s.storage,
        StorageChoice::Filesystem {
            root: PathBuf::from("./data"),
            write_mode: WriteMode::Direct,
        }
    );
    assert!(s.delete_enabled);
    assert!(w.is_empty(), "{w:?}");
}

#[test]
fn distribution_config_is_accepted() {
    let yaml = "
version: 0.1
log:
  fields:
    service: registry
storage:
  cache:
    blobdescriptor: inmemory
  filesystem:
    rootdirectory: /var/lib/registry
http:
  addr: :5000
  headers:
    X-Content-Type-Options: [nosniff]
health:
  storagedriver:
    enabled: true
";
    let (s, _) = load_str(yaml, &[]).unwrap();
    assert_eq!(s.addr.to_string(), "0.0.0.0:5000");
    assert!(!s.delete_enabled, "distribution's default: deletes off");
    assert!(s.redirect);
}

#[test]
fn direct_writes_can_be_turned_off() {
    for (yaml, env, mode) in [
        ("{directwrites: false}", None, WriteMode::Buffered),
        ("{directwrites: true}", None, WriteMode::Direct),
        ("{}", Some("false"), WriteMode::Buffered),
    ] {
        let env: Vec<(&str, &str)> = env
            .map(|v| ("REGISTRY_STORAGE_FILESYSTEM_DIRECTWRITES", v))
            .into_iter()
            .collect();
        let (s, _) = load_str(&format!("storage: {{filesystem: {yaml}}}\n"), &env).unwrap();
        assert!(
            matches!(s.storage, StorageChoice::Filesystem { write_mode, .. } if write_mode == mode),
            "{yaml} {env:?}"
        );
    }
}

#[test]
fn env_overrides_keys() {
    let (s, _) = load_str(
        "storage: {filesystem: {rootdirectory: /a}}\n",
        &[
            ("REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY", "/b"),
            ("REGISTRY_HTTP_ADDR", "127.0.0.1:7000"),
            ("REGISTRY_STORAGE_DELETE_ENABLED", "true"),
            ("UNRELATED", "x"),
        ],
    )
    .unwrap();
    assert_eq!(
        s.storage,
        StorageChoice::Filesystem {
            root: PathBuf::from("/b"),
            write_mode: WriteMode::Direct,
        }
    );
    assert_eq!(s.addr.to_string(), "127.0.0.1:7000");
    assert!(s.delete_enabled);
}

#[test]
fn bad_values_name_their_key() {
    let e = load_str("storage: {filesystem: {}}\nhttp: {addr: nonsense}\n", &[]).unwrap_err();
    assert!(e.to_string().contains("http.addr"), "{e}");
    let e = load_str("storage: {filesystem: {}, delete: {enabled: maybe}}\n", &[]).unwrap_err();
    assert!(e.to_string().contains("storage.delete.enabled"), "{e}");
    let e = load_str("storage: {filesystem: {}, inmemory: {}}\n", &[]).unwrap_err();
    assert!(e.to_string().contains("exactly one backend"), "{e}");
    let e = load_str("log: {level: loud}\nstorage: {inmemory: {}}\n", &[]).unwrap_err();
    assert!(e.to_string().contains("log.level"), "{e}");
    let e = load_str("version: 0.1\n", &[]).unwrap_err();
    assert!(e.to_string().contains("`storage`"), "{e}");
    let e = load_str("storage: [1, 2]\n", &[]).unwrap_err();
    assert!(e.to_string().contains("storage"), "{e}");
}

#[test]
fn s3_section_in_distribution_shape() {
    let yaml = "
storage:
  s3:
    region: eu-west-1
    bucket: images
    regionendpoint: http://127.0.0.1:9000
    accesskey: AK
    secretkey: SK
    forcepathstyle: true
    rootdirectory: /registry
    chunksize: 10485760
  redirect:
    expiry: 60
    publicendpoint: https://cdn.example.com
";
    let (s, w) = load_str(yaml, &[("REGISTRY_STORAGE_S3_BUCKET", "other")]).unwrap();
    assert!(w.is_empty(), "{w:?}");
    let StorageChoice::S3(o) = s.storage else {
        panic!("not s3")
    };
    assert_eq!(o.bucket, "other");
    assert_eq!(o.endpoint.as_deref(), Some("http://127.0.0.1:9000"));
    assert_eq!(o.root, "registry");
    assert_eq!(o.part_size, 10 << 20);
    assert!(o.force_path_style);
    assert_eq!(
        o.public_endpoint.as_deref(),
        Some("https://cdn.example.com")
    );
    assert_eq!(s.redirect_expiry, Duration::from_secs(60));
    let e = load_str(
        "storage: {s3: {bucket: b, region: r, chunksize: 1000}}\n",
        &[],
    )
    .unwrap_err();
    assert!(e.to_string().contains("storage.s3.chunksize"), "{e}");
    let e = load_str("storage: {s3: {region: r}}\n", &[]).unwrap_err();
    assert!(e.to_string().contains("storage.s3.bucket"), "{e}");
    let e = load_str("storage: {s3: {bucket: b, region: r, accesskey: a}}\n", &[]).unwrap_err();
    assert!(e.to_string().contains("storage.s3.secretkey"), "{e}");
}

#[test]
fn azure_section() {
    let (s, _) = load_str(
            "storage: {azure: {accountname: acct, accountkey: k, container: c, realm: core.chinacloudapi.cn}}\n",
            &[],
        )
        .unwrap();
    let StorageChoice::Azure(o) = s.storage else {
        panic!("not azure")
    };
    assert_eq!(
        o.endpoint.as_deref(),
        Some("https://acct.blob.core.chinacloudapi.cn")
    );
    assert_eq!(o.part_size, DEFAULT_PART_SIZE);
    let e = load_str("storage: {azure: {accountname: a}}\n", &[]).unwrap_err();
    assert!(e.to_string().contains("storage.azure.container"), "{e}");
}

#[test]
fn gcs_section() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("key.json");
    std::fs::write(
        &key,
        r#"{"type":"service_account","private_key":"x","client_email":"a@b"}"#,
    )
    .unwrap();
    let yaml = format!(
        "storage: {{gcs: {{bucket: b, keyfile: {}, rootdirectory: /r}}}}\n",
        key.display()
    );
    let (s, w) = load_str(&yaml, &[]).unwrap();
    assert!(w.is_empty(), "{w:?}");
    let StorageChoice::Gcs(o) = s.storage else {
        panic!("not gcs")
    };
    assert_eq!((o.bucket.as_str(), o.root.as_str()), ("b", "r"));
    assert!(o.service_account_key.unwrap().contains("client_email"));
    let inline = "storage:\n  gcs:\n    bucket: b\n    credentials:\n      type: service_account\n      private_key: k\n      client_email: e@x\n";
    assert!(load_str(inline, &[]).is_ok());
    let e = load_str(
        "storage: {gcs: {bucket: b, keyfile: /nonexistent/key.json}}\n",
        &[],
    )
    .unwrap_err();
    assert!(e.to_string().contains("storage.gcs.keyfile"), "{e}");
    let e = load_str("storage: {gcs: {bucket: b, credentials: {type: x}}}\n", &[]).unwrap_err();
    assert!(e.to_string().contains("storage.gcs.keyfile"), "{e}");
}

#[test]
fn maintenance() {
    assert_eq!(parse_duration("1h30m"), Some(Duration::from_secs(5400)));
    assert_eq!(
        parse_duration("168h"),
        Some(Duration::from_secs(168 * 3600))
    );
    assert_eq!(parse_duration("10"), None);
    assert_eq!(parse_duration("500ms"), Some(Duration::from_millis(500)));
    assert_eq!(parse_duration("1m30s"), Some(Duration::from_secs(90)));
    assert_eq!(parse_duration("5d"), None);
    let yaml = "storage:\n  inmemory: {}\n  maintenance:\n    readonly: {enabled: true}\n    uploadpurging: {age: 2h, interval: 10m, dryrun: true}\n";
    let (s, w) = load_str(yaml, &[]).unwrap();
    assert!(w.is_empty(), "{w:?}");
    assert!(s.read_only);
    assert_eq!(
        s.purge,
        Some(PurgeSettings {
            age: Duration::from_secs(7200),
            interval: Duration::from_secs(600),
            dry_run: true
        })
    );
    let e = load_str(
        "storage: {inmemory: {}, maintenance: {uploadpurging: {age: soon}}}\n",
        &[],
    )
    .unwrap_err();
    assert!(
        e.to_string()
            .contains("storage.maintenance.uploadpurging.age"),
        "{e}"
    );
    let (s, _) = load_str(
        "storage: {inmemory: {}, maintenance: {uploadpurging: {enabled: false}}}\n",
        &[],
    )
    .unwrap();
    assert_eq!(s.purge, None);
}

#[test]
fn container_image_default_config_loads() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/config.yml");
    let (s, w) = load(Source::File(&path), Vec::new()).unwrap();
    assert!(w.is_empty(), "{w:?}");
    assert_eq!(s.addr.to_string(), "0.0.0.0:5000");
    assert_eq!(
        s.storage,
        StorageChoice::Filesystem {
            root: PathBuf::from("/var/lib/registry"),
            write_mode: WriteMode::Direct,
        }
    );
    assert!(s.log_json && s.delete_enabled);
}

#[test]
fn unknown_keys_warn() {
    let (_, w) = load_str("storage: {filesystem: {rootdirectroy: /x}}\n", &[]).unwrap();
    assert!(
        w.iter()
            .any(|w| w.contains("storage.filesystem.rootdirectroy")),
        "{w:?}"
    );
}

#[test]
fn proxy_sections_become_upstreams_most_specific_first() {
    let yaml = "
storage:
  filesystem:
    rootdirectory: /tmp/x
proxy:
  remoteurl: https://registry-1.docker.io
  username: bob
  password: secret
  ttl: 168h
berth:
  proxies:
    - prefix: ghcr
      remoteurl: https://ghcr.io
      ttl: 0
    - prefix: /ghcr/team/
      remoteurl: http://127.0.0.1:5001
      ttl: 30m
";
    let (s, w) = load_str(yaml, &[]).unwrap();
    assert!(w.is_empty(), "{w:?}");
    let got: Vec<(Option<&str>, &str, bool)> = s
        .proxies
        .iter()
        .map(|u| (u.prefix.as_deref(), u.url.as_str(), u.credentials.is_some()))
        .collect();
    assert_eq!(
        got,
        [
            (Some("ghcr/team"), "http://127.0.0.1:5001/", false),
            (Some("ghcr"), "https://ghcr.io/", false),
            (None, "https://registry-1.docker.io/", true),
        ]
    );
    // Cached content lives a week after its last pull unless told otherwise; 0 is forever.
    let hours = |h: u64| Some(std::time::Duration::from_secs(h * 3600));
    let ttls: Vec<_> = s.proxies.iter().map(|u| u.ttl).collect();
    assert_eq!(
        ttls,
        [Some(std::time::Duration::from_secs(1800)), None, hours(168)]
    );
    // distribution's environment override names the same key.
    let (s, _) = load_str(
        "storage:\n  filesystem:\n    rootdirectory: /tmp/x\n",
        &[("REGISTRY_PROXY_REMOTEURL", "http://127.0.0.1:6000")],
    )
    .unwrap();
    assert_eq!(s.proxies.len(), 1);
    assert_eq!(s.proxies[0].url.as_str(), "http://127.0.0.1:6000/");
    assert_eq!(s.proxies[0].ttl, hours(168), "the default");
    let (s, _) = load_str(
        "storage:\n  filesystem:\n    rootdirectory: /tmp/x\n",
        &[
            ("REGISTRY_PROXY_REMOTEURL", "http://127.0.0.1:6000"),
            ("REGISTRY_PROXY_TTL", "0"),
        ],
    )
    .unwrap();
    assert_eq!(
        s.proxies[0].ttl, None,
        "0 from the environment is forever too"
    );
}

#[test]
fn bad_proxy_sections_name_their_key() {
    let base = "storage:\n  filesystem:\n    rootdirectory: /tmp/x\n";
    for (section, key) in [
        ("proxy:\n  remoteurl: ''\n", "proxy.remoteurl"),
        ("proxy:\n  remoteurl: ftp://x\n", "proxy.remoteurl"),
        ("proxy:\n  remoteurl: https://x/v2/\n", "proxy.remoteurl"),
        ("proxy:\n  remoteurl: https://x\n  username: u\n", "proxy"),
        ("proxy:\n  remoteurl: https://x\n  ttl: soon\n", "proxy.ttl"),
        (
            "berth:\n  proxies:\n    - remoteurl: https://x\n",
            "berth.proxies[0].prefix",
        ),
        (
            "berth:\n  proxies:\n    - prefix: a\n      remoteurl: https://x\n      ttl: 2 days\n",
            "berth.proxies[0].ttl",
        ),
        (
            "berth:\n  proxies:\n    - prefix: Bad_Prefix!\n      remoteurl: https://x\n",
            "berth.proxies[0].prefix",
        ),
        (
            "berth:\n  proxies:\n    - prefix: a\n      remoteurl: https://x\n    - prefix: a/\n      remoteurl: https://y\n",
            "berth.proxies[1].prefix",
        ),
    ] {
        match load_str(&format!("{base}{section}"), &[]) {
            Err(ConfigError::Key { key: k, .. }) => assert_eq!(k, key, "{section}"),
            other => panic!("{section}: {other:?}"),
        }
    }
}

#[test]
fn a_cache_that_expires_collects_on_a_schedule_unless_told_not_to() {
    let base = "storage:\n  filesystem:\n    rootdirectory: /tmp/x\n";
    let gc = |extra: &str| load_str(&format!("{base}{extra}"), &[]).unwrap().0.gc;
    assert!(gc("").is_none(), "no cache, no schedule unless asked");
    let implied = gc("proxy:\n  remoteurl: https://x\n").expect("expiry needs collections");
    assert_eq!(implied.interval, std::time::Duration::from_secs(24 * 3600));
    assert!(!implied.delete_untagged);
    assert!(gc("proxy:\n  remoteurl: https://x\n  ttl: 0\n").is_none());
    assert!(gc("proxy:\n  remoteurl: https://x\nberth:\n  gc:\n    enabled: false\n").is_none());
}

#[test]
fn collections_are_incremental_with_a_full_interval() {
    let base =
        "storage:\n  filesystem:\n    rootdirectory: /tmp/x\nberth:\n  gc:\n    enabled: true\n";
    let gc = |extra: &str| load_str(&format!("{base}{extra}"), &[]).map(|s| s.0.gc);
    assert_eq!(
        gc("").unwrap().unwrap().full_interval,
        None,
        "full unless asked"
    );
    assert_eq!(
        gc("    fullinterval: 168h\n")
            .unwrap()
            .unwrap()
            .full_interval,
        Some(std::time::Duration::from_secs(168 * 3600))
    );
    match gc("    fullinterval: weekly\n") {
        Err(ConfigError::Key { key, .. }) => assert_eq!(key, "berth.gc.fullinterval"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn the_ui_is_on_unless_turned_off_and_its_oidc_login_must_be_trusted() {
    let (s, _) = load_str("storage: {inmemory: {}}\n", &[]).unwrap();
    assert!(s.ui && s.ui_oidc.is_none());
    let (s, _) = load_str(
        "storage: {inmemory: {}}\nberth: {ui: {enabled: false}}\n",
        &[],
    )
    .unwrap();
    assert!(!s.ui);
    let (s, _) = load_str(
        "storage: {inmemory: {}}\n",
        &[("REGISTRY_BERTH_UI_ENABLED", "false")],
    )
    .unwrap();
    assert!(!s.ui);
    let trusted = "auth: {htpasswd: {realm: r, path: /dev/null}}\nberth:\n  policy: {file: /dev/null}\n  oidc: [{issuer: 'https://id.example', audience: [berth-ui]}]\n";
    let with = |ui: &str| {
        load_str(
            &format!("storage: {{inmemory: {{}}}}\n{trusted}  ui: {{oidc: {ui}}}\n"),
            &[],
        )
    };
    let (s, _) = with("{issuer: 'https://id.example', clientid: berth-ui}").unwrap();
    let o = s.ui_oidc.unwrap();
    assert_eq!(o.scopes, vec!["openid", "profile", "email"]);
    assert_eq!(o.label, "Log in with OIDC");
    let e = with("{issuer: 'https://other.example', clientid: berth-ui}").unwrap_err();
    assert!(e.to_string().contains("berth.ui.oidc.issuer"), "{e}");
    let e = with("{issuer: 'https://id.example', clientid: someone-else}").unwrap_err();
    assert!(e.to_string().contains("berth.ui.oidc.clientid"), "{e}");
    let e = with("{issuer: 'https://id.example', clientid: berth-ui, redirecturl: 'https://x/'}")
        .unwrap_err();
    assert!(e.to_string().contains("redirecturl"), "{e}");
}

#[test]
fn replication_downstreams_are_checked() {
    let with = |d: &str| {
        load_str(
            &format!("storage: {{inmemory: {{}}}}\nberth:\n  replication:\n    downstreams: {d}\n"),
            &[],
        )
    };
    let (s, _) = load_str("storage: {inmemory: {}}\n", &[]).unwrap();
    assert!(s.replication.is_none());
    let (s, _) = with(
        "[{name: dr, remoteurl: 'https://bot:pw@dr.example', repositories: ['team/*']}, {name: all, remoteurl: 'http://10.0.0.9:5000'}]",
    )
    .unwrap();
    let r = s.replication.unwrap();
    assert_eq!(r.poll, Duration::from_secs(5));
    assert_eq!(r.lease_ttl, Duration::from_secs(30));
    let dr = &r.downstreams[0];
    assert_eq!(dr.remote.credentials, Some(("bot".into(), "pw".into())));
    assert_eq!(dr.remote.url.as_str(), "https://dr.example/");
    assert!(dr.wants("team/app") && !dr.wants("other/app"));
    assert!(r.downstreams[1].wants("anything/at/all"));
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("dr-password");
    std::fs::write(&secret, "from-a-secret\n").unwrap();
    let (s, _) = with(&format!(
        "[{{name: dr, remoteurl: 'https://dr.example', username: bot, passwordfile: '{}'}}]",
        secret.display()
    ))
    .unwrap();
    assert_eq!(
        s.replication.unwrap().downstreams[0].remote.credentials,
        Some(("bot".into(), "from-a-secret".into()))
    );
    for (bad, key) in [
        (
            "[{name: a, remoteurl: 'https://x', username: u, passwordfile: /nonexistent}]",
            "downstreams[0].passwordfile",
        ),
        ("[{remoteurl: 'https://x'}]", "downstreams[0].name"),
        (
            "[{name: 'Big Name', remoteurl: 'https://x'}]",
            "downstreams[0].name",
        ),
        (
            "[{name: a, remoteurl: 'https://x'}, {name: a, remoteurl: 'https://y'}]",
            "downstreams[1].name",
        ),
        ("[{name: a}]", "downstreams[0].remoteurl"),
        (
            "[{name: a, remoteurl: 'https://x/v2/'}]",
            "downstreams[0].remoteurl",
        ),
        (
            "[{name: a, remoteurl: 'https://x', username: u}]",
            "downstreams[0]",
        ),
    ] {
        let e = with(bad).unwrap_err().to_string();
        assert!(e.contains(key), "{bad}: {e}");
    }
}

#[test]
fn traces_follow_the_otel_variables_and_berth_tracing() {
    let (s, _) = load_str("storage: {inmemory: {}}\n", &[]).unwrap();
    assert!(s.tracing.is_none(), "off unless asked");
    let (s, _) = load_str(
        "storage: {inmemory: {}}\n",
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4317"),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
            ("OTEL_SERVICE_NAME", "registry-eu"),
        ],
    )
    .unwrap();
    let t = s.tracing.unwrap();
    assert_eq!(t.protocol, OtlpProtocol::Grpc);
    assert_eq!(t.service_name, "registry-eu");
    assert_eq!(t.endpoint, None, "the exporter reads the variable itself");
    let file = "storage: {inmemory: {}}\nberth: {tracing: {endpoint: 'http://c:4318', protocol: http/json, samplingratio: 0.25}}\n";
    let (s, _) = load_str(file, &[]).unwrap();
    let t = s.tracing.unwrap();
    assert_eq!(
        (
            t.protocol,
            t.endpoint.as_deref(),
            t.sampling_ratio,
            t.service_name.as_str()
        ),
        (
            OtlpProtocol::HttpJson,
            Some("http://c:4318"),
            Some(0.25),
            "berth"
        )
    );
    let (s, _) = load_str(file, &[("OTEL_SDK_DISABLED", "true")]).unwrap();
    assert!(s.tracing.is_none(), "OTEL_SDK_DISABLED wins");
    let e = load_str(
        "storage: {inmemory: {}}\nberth: {tracing: {endpoint: 'http://c', protocol: thrift}}\n",
        &[],
    )
    .unwrap_err();
    assert!(e.to_string().contains("berth.tracing.protocol"), "{e}");
    let e = load_str(
        "storage: {inmemory: {}}\nberth: {tracing: {endpoint: 'http://c', samplingratio: 2}}\n",
        &[],
    )
    .unwrap_err();
    assert!(e.to_string().contains("samplingratio"), "{e}");
}

#[test]
fn scheduled_syncs_are_checked() {
    let with = |j: &str| {
        load_str(
            &format!("storage: {{inmemory: {{}}}}\nberth:\n  replication:\n    sync: {j}\n"),
            &[],
        )
    };
    let (s, _) = with(
        "[{name: base, remoteurl: 'https://registry-1.docker.io', interval: 6h, repositories: [{from: library/alpine, to: mirror/alpine, tags: ['3.*']}, {from: library/busybox}]}]",
    )
    .unwrap();
    let r = s.replication.unwrap();
    assert!(r.downstreams.is_empty());
    let j = &r.syncs[0];
    assert_eq!(j.interval, Duration::from_secs(6 * 3600));
    assert_eq!(j.repositories[0].to.as_str(), "mirror/alpine");
    assert!(j.repositories[0].wants("3.19") && !j.repositories[0].wants("edge"));
    assert_eq!(j.repositories[1].to.as_str(), "library/busybox");
    assert!(j.repositories[1].wants("anything"));
    for (bad, key) in [
        (
            "[{name: a, remoteurl: 'https://x'}]",
            "sync[0].repositories",
        ),
        (
            "[{name: a, remoteurl: 'https://x', repositories: [{to: b}]}]",
            "repositories[0].from",
        ),
        (
            "[{name: a, remoteurl: 'https://x', repositories: [{from: a, to: 'B B'}]}]",
            "repositories[0].to",
        ),
        (
            "[{name: a, remoteurl: 'https://x', interval: soon, repositories: [{from: a}]}]",
            "sync[0].interval",
        ),
    ] {
        let e = with(bad).unwrap_err().to_string();
        assert!(e.contains(key), "{bad}: {e}");
    }
}
