//! The oci-client crate drives berth: chunked and monolithic pushes, mounts, referrers, pulls.

use std::collections::BTreeMap;

use integration::Berth;
use integration::layout::random_bytes;
use oci_client::client::{ClientConfig, ClientProtocol, Config, ImageLayer};
use oci_client::manifest::{OciDescriptor, OciImageManifest, OciManifest};
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference};

fn client(monolithic: bool) -> Client {
    Client::new(ClientConfig {
        protocol: ClientProtocol::Http,
        use_monolithic_push: monolithic,
        ..Default::default()
    })
}

fn reference(berth: &Berth, repo_and_tag: &str) -> Reference {
    format!("{}/{repo_and_tag}", berth.host).parse().unwrap()
}

fn image(seed: u64) -> (Vec<ImageLayer>, Config) {
    // 10 MiB is pushed in three 4 MiB-max PATCH chunks by oci-client's chunked push.
    let layers = vec![
        ImageLayer::oci_v1(random_bytes(seed, 10 << 20), None),
        ImageLayer::oci_v1(random_bytes(seed + 1, 1000), None),
    ];
    let config = Config::oci_v1(format!("{{\"seed\":{seed}}}").into_bytes(), None);
    (layers, config)
}

#[tokio::test]
async fn chunked_and_monolithic_push_then_pull() {
    let dir = tempfile::tempdir().unwrap();
    let berth = Berth::filesystem(dir.path());
    for (monolithic, repo) in [(false, "chunked/app:v1"), (true, "mono/app:v1")] {
        let c = client(monolithic);
        let r = reference(&berth, repo);
        let (layers, config) = image(if monolithic { 10 } else { 20 });
        c.push(&r, &layers, config.clone(), &RegistryAuth::Anonymous, None)
            .await
            .unwrap();
        let pulled = c
            .pull(
                &r,
                &RegistryAuth::Anonymous,
                vec![oci_client::manifest::IMAGE_LAYER_MEDIA_TYPE],
            )
            .await
            .unwrap();
        // oci-client returns layers in download-completion order.
        let mut got: Vec<String> = pulled.layers.iter().map(|l| l.sha256_digest()).collect();
        let mut want: Vec<String> = layers.iter().map(|l| l.sha256_digest()).collect();
        got.sort();
        want.sort();
        assert_eq!(got, want, "layer bytes differ after {repo}");
        assert_eq!(pulled.config.data, config.data);
    }
    let tags = client(false)
        .list_tags(
            &reference(&berth, "chunked/app"),
            &RegistryAuth::Anonymous,
            None,
            None,
        )
        .await
        .unwrap();
    assert_eq!(tags.tags, vec!["v1"]);
    assert!(
        !berth.log().contains("not respecting"),
        "client fell back: {}",
        berth.log()
    );
}

#[tokio::test]
async fn mount_blob_across_repositories() {
    let dir = tempfile::tempdir().unwrap();
    let berth = Berth::filesystem(dir.path());
    let c = client(false);
    let src = reference(&berth, "team/base:1");
    let data = random_bytes(30, 5000);
    let digest = format!(
        "sha256:{}",
        hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&data))
    );
    c.store_auth_if_needed(src.resolve_registry(), &RegistryAuth::Anonymous)
        .await;
    c.push_blob(&src, &data, &digest).await.unwrap();
    let dst = reference(&berth, "team/derived:1");
    c.mount_blob(&dst, &src, &digest).await.unwrap();
    let mut out = Vec::new();
    c.pull_blob(
        &dst,
        &OciDescriptor {
            digest: digest.clone(),
            size: data.len() as i64,
            ..Default::default()
        },
        &mut out,
    )
    .await
    .unwrap();
    assert_eq!(out, data);
}

#[tokio::test]
async fn referrers_listed_and_filtered() {
    let dir = tempfile::tempdir().unwrap();
    let berth = Berth::filesystem(dir.path());
    let c = client(false);
    let subject_ref = reference(&berth, "signed/app:v1");
    let (layers, config) = image(40);
    c.push(
        &subject_ref,
        &layers,
        config,
        &RegistryAuth::Anonymous,
        None,
    )
    .await
    .unwrap();
    let (subject_manifest, subject_digest) = c
        .pull_manifest(&subject_ref, &RegistryAuth::Anonymous)
        .await
        .unwrap();
    let subject_size = match &subject_manifest {
        OciManifest::Image(m) => serde_json::to_vec(m).unwrap().len() as i64,
        other => panic!("unexpected {other:?}"),
    };
    let empty = b"{}".to_vec();
    let empty_digest = format!(
        "sha256:{}",
        hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&empty))
    );
    c.push_blob(&subject_ref, &empty, &empty_digest)
        .await
        .unwrap();
    let subject = OciDescriptor {
        media_type: oci_client::manifest::OCI_IMAGE_MEDIA_TYPE.into(),
        digest: subject_digest.clone(),
        size: subject_size,
        ..Default::default()
    };
    for (kind, note) in [
        ("application/vnd.example.signature", "sig"),
        ("application/spdx+json", "sbom"),
    ] {
        let artifact = OciImageManifest {
            artifact_type: Some(kind.into()),
            config: OciDescriptor {
                media_type: "application/vnd.oci.empty.v1+json".into(),
                digest: empty_digest.clone(),
                size: 2,
                ..Default::default()
            },
            layers: vec![],
            subject: Some(subject.clone()),
            annotations: Some(BTreeMap::from([("note".to_owned(), note.to_owned())])),
            ..Default::default()
        };
        let by_tag = reference(&berth, &format!("signed/app:{note}"));
        c.push_manifest(&by_tag, &OciManifest::Image(artifact))
            .await
            .unwrap();
    }
    let by_digest: Reference = format!("{}/signed/app@{subject_digest}", berth.host)
        .parse()
        .unwrap();
    let all = c.pull_referrers(&by_digest, None).await.unwrap();
    assert_eq!(all.manifests.len(), 2);
    let sigs = c
        .pull_referrers(&by_digest, Some("application/vnd.example.signature"))
        .await
        .unwrap();
    assert_eq!(sigs.manifests.len(), 1);
    assert_eq!(
        sigs.manifests[0].annotations.as_ref().unwrap()["note"],
        "sig"
    );
}
