//! An OIDC issuer of the tests' own, on loopback over HTTPS (a certificate from a test CA): its
//! discovery document and its keys (JWKS), two RSA keys of which it publishes one at a time, a
//! rotation switching them, and ID tokens signed with either.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use base64::Engine;
use bytes::Bytes;
use http_body_util::Full;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::certs::ca_and_server;
use crate::tools::run;

/// One signing key: its id, its private key (PEM) and its public JWK.
struct Key {
    kid: String,
    private_pem: Vec<u8>,
    jwk: serde_json::Value,
}

/// A running issuer.
pub struct OidcIssuer {
    /// `https://127.0.0.1:PORT`: the `iss` of its tokens.
    pub url: String,
    /// The CA its certificate chains to (give it to Berth as `SSL_CERT_FILE`).
    pub ca: PathBuf,
    keys: Vec<Key>,
    published: Arc<AtomicUsize>,
    key_fetches: Arc<AtomicU64>,
}

fn rsa_key(dir: &Path, kid: &str) -> Key {
    let path = dir.join(format!("{kid}.pem"));
    run(Command::new("openssl")
        .args([
            "genpkey",
            "-algorithm",
            "RSA",
            "-pkeyopt",
            "rsa_keygen_bits:2048",
            "-out",
        ])
        .arg(&path));
    let out = run(Command::new("openssl")
        .args(["rsa", "-noout", "-modulus", "-in"])
        .arg(&path));
    let text = String::from_utf8_lossy(&out.stdout);
    let hex_modulus = text.trim().trim_start_matches("Modulus=");
    let n = hex::decode(hex_modulus).unwrap();
    let b64 = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
    Key {
        kid: kid.to_owned(),
        private_pem: std::fs::read(&path).unwrap(),
        jwk: serde_json::json!({
            "kty": "RSA", "use": "sig", "alg": "RS256", "kid": kid,
            "n": b64(&n), "e": b64(&[1, 0, 1]),
        }),
    }
}

impl OidcIssuer {
    /// Starts an issuer with files in `dir`, publishing its first key.
    pub fn start(dir: &Path) -> OidcIssuer {
        let (ca, cert, key) = ca_and_server(dir);
        let keys = vec![rsa_key(dir, "key-1"), rsa_key(dir, "key-2")];
        let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&cert)
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        let private = PrivateKeyDer::from_pem_file(&key).unwrap();
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let mut tls = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(chain, private)
            .unwrap();
        tls.alpn_protocols = vec![b"http/1.1".to_vec()];
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let url = format!("https://{}", listener.local_addr().unwrap());
        let published = Arc::new(AtomicUsize::new(0));
        let key_fetches = Arc::new(AtomicU64::new(0));
        let jwks: Arc<Vec<serde_json::Value>> =
            Arc::new(keys.iter().map(|k| k.jwk.clone()).collect());
        let (u, p, f) = (url.clone(), published.clone(), key_fetches.clone());
        crate::listener::on_own_runtime(async move {
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let (acceptor, u, p, f, jwks) = (
                    acceptor.clone(),
                    u.clone(),
                    p.clone(),
                    f.clone(),
                    jwks.clone(),
                );
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(stream).await else {
                        return;
                    };
                    let service = hyper::service::service_fn(move |req: Request<_>| {
                        let body = match req.uri().path() {
                            "/.well-known/openid-configuration" => serde_json::json!({
                                "issuer": u, "jwks_uri": format!("{u}/jwks"),
                                "id_token_signing_alg_values_supported": ["RS256"],
                            }),
                            "/jwks" => {
                                f.fetch_add(1, Ordering::SeqCst);
                                serde_json::json!({"keys": [jwks[p.load(Ordering::SeqCst)].clone()]})
                            }
                            _ => serde_json::json!({}),
                        };
                        let resp = Response::builder()
                            .header("content-type", "application/json")
                            .body(Full::new(Bytes::from(body.to_string())))
                            .unwrap();
                        async move { Ok::<_, std::convert::Infallible>(resp) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tls), service)
                        .await;
                });
            }
        });
        OidcIssuer {
            url,
            ca,
            keys,
            published,
            key_fetches,
        }
    }

    /// Publishes the second key instead of the first (a rotation).
    pub fn rotate(&self) {
        self.published.store(1, Ordering::SeqCst);
    }

    /// How many times its keys were fetched.
    pub fn key_fetches(&self) -> u64 {
        self.key_fetches.load(Ordering::SeqCst)
    }

    /// An ID token with `claims` (plus `iss`, `iat`, `exp` an hour ahead unless given), signed
    /// with key `index` (0 or 1).
    pub fn token(&self, index: usize, claims: serde_json::Value) -> String {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let mut all = serde_json::json!({"iss": self.url, "iat": now, "exp": now + 3600});
        for (k, v) in claims.as_object().unwrap() {
            all[k] = v.clone();
        }
        let key = &self.keys[index];
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256);
        header.kid = Some(key.kid.clone());
        jsonwebtoken::encode(
            &header,
            &all,
            &jsonwebtoken::EncodingKey::from_rsa_pem(&key.private_pem).unwrap(),
        )
        .unwrap()
    }
}
