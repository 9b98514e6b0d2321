//! An OIDC issuer of the tests' own, on loopback over HTTPS (a certificate from a test CA): its
//! discovery document and its keys (JWKS), two RSA keys of which it publishes one at a time, a
//! rotation switching them, ID tokens signed with either, and a browser login (the
//! authorization code flow with PKCE) that logs in whoever [`OidcIssuer::sign_in_as`] names.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use base64::Engine;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use sha2::Digest;

use crate::certs::ca_and_server;
use crate::tools::run;

/// One signing key: its id, its private key (PEM) and its public JWK.
#[derive(Clone)]
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
    logins: Arc<BrowserLogins>,
}

/// What the issuer's server answers from.
struct Served {
    url: String,
    published: Arc<AtomicUsize>,
    key_fetches: Arc<AtomicU64>,
    jwks: Arc<Vec<serde_json::Value>>,
    logins: Arc<BrowserLogins>,
    signer: Key,
}

impl Served {
    async fn answer(&self, req: Request<Incoming>) -> Response<Full<Bytes>> {
        let u = &self.url;
        let json = |body: serde_json::Value| {
            Response::builder()
                .header("content-type", "application/json")
                .body(Full::new(Bytes::from(body.to_string())))
                .unwrap()
        };
        match req.uri().path() {
            "/.well-known/openid-configuration" => json(serde_json::json!({
                "issuer": u, "jwks_uri": format!("{u}/jwks"),
                "authorization_endpoint": format!("{u}/authorize"),
                "token_endpoint": format!("{u}/token"),
                "id_token_signing_alg_values_supported": ["RS256"],
            })),
            "/jwks" => {
                self.key_fetches.fetch_add(1, Ordering::SeqCst);
                let published = self.jwks[self.published.load(Ordering::SeqCst)].clone();
                json(serde_json::json!({ "keys": [published] }))
            }
            "/authorize" => authorize(&self.logins, req.uri().query()),
            "/token" => {
                let body = req.into_body().collect().await.unwrap().to_bytes();
                redeem(&self.logins, u, &self.signer, &body)
            }
            _ => json(serde_json::json!({})),
        }
    }
}

/// What an authorization code was issued for.
struct IssuedCode {
    client: String,
    redirect: String,
    challenge: String,
    nonce: String,
    claims: serde_json::Value,
}

/// What the browser login knows: who is signed in at the provider, and codes not yet redeemed.
#[derive(Default)]
struct BrowserLogins {
    /// The claims of whoever is signed in (`None`: nobody; the login is refused).
    signed_in: Mutex<Option<serde_json::Value>>,
    /// Codes not yet redeemed.
    codes: Mutex<HashMap<String, IssuedCode>>,
    /// Codes redeemed.
    redeemed: AtomicU64,
}

fn query_pairs(q: Option<&str>) -> HashMap<String, String> {
    url::form_urlencoded::parse(q.unwrap_or("").as_bytes())
        .into_owned()
        .collect()
}

fn sign(iss: &str, key: &Key, claims: &serde_json::Value) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let mut all = serde_json::json!({"iss": iss, "iat": now, "exp": now + 3600});
    for (k, v) in claims.as_object().unwrap() {
        all[k] = v.clone();
    }
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256);
    header.kid = Some(key.kid.clone());
    jsonwebtoken::encode(
        &header,
        &all,
        &jsonwebtoken::EncodingKey::from_rsa_pem(&key.private_pem).unwrap(),
    )
    .unwrap()
}

/// The authorization endpoint: the signed-in person approves at once; back to the client with
/// a code.
fn authorize(logins: &BrowserLogins, query: Option<&str>) -> Response<Full<Bytes>> {
    let q = query_pairs(query);
    let field = |k: &str| q.get(k).cloned().unwrap_or_default();
    let redirect = field("redirect_uri");
    let claims = logins.signed_in.lock().unwrap().clone();
    let location = match claims {
        Some(claims) if q.get("code_challenge_method").map(String::as_str) == Some("S256") => {
            let code = format!("code-{}", rand::random::<u64>());
            logins.codes.lock().unwrap().insert(
                code.clone(),
                IssuedCode {
                    client: field("client_id"),
                    redirect: redirect.clone(),
                    challenge: field("code_challenge"),
                    nonce: field("nonce"),
                    claims,
                },
            );
            format!("{redirect}?code={code}&state={}", field("state"))
        }
        _ => format!("{redirect}?error=access_denied&state={}", field("state")),
    };
    Response::builder()
        .status(302)
        .header("location", location)
        .body(Full::new(Bytes::new()))
        .unwrap()
}

/// The token endpoint: a code redeemed once, with the verifier of its challenge, for an ID
/// token naming the client as its audience and carrying the login's nonce.
fn redeem(logins: &BrowserLogins, iss: &str, key: &Key, form: &[u8]) -> Response<Full<Bytes>> {
    let f: HashMap<String, String> = url::form_urlencoded::parse(form).into_owned().collect();
    let field = |k: &str| f.get(k).cloned().unwrap_or_default();
    let found = logins.codes.lock().unwrap().remove(&field("code"));
    let answer = match found {
        Some(IssuedCode {
            client,
            redirect,
            challenge,
            nonce,
            mut claims,
        }) if client == field("client_id")
            && redirect == field("redirect_uri")
            && field("grant_type") == "authorization_code"
            && base64::engine::general_purpose::URL_SAFE_NO_PAD
                .encode(sha2::Sha256::digest(field("code_verifier").as_bytes()))
                == challenge =>
        {
            logins.redeemed.fetch_add(1, Ordering::SeqCst);
            claims["aud"] = serde_json::json!(client);
            claims["nonce"] = serde_json::json!(nonce);
            Ok(
                serde_json::json!({"id_token": sign(iss, key, &claims), "token_type": "Bearer",
                "access_token": "unused", "expires_in": 3600}),
            )
        }
        _ => Err(serde_json::json!({"error": "invalid_grant"})),
    };
    let (status, body) = match answer {
        Ok(b) => (200, b),
        Err(b) => (400, b),
    };
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_string())))
        .unwrap()
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
        let logins = Arc::new(BrowserLogins::default());
        let served = Arc::new(Served {
            url: url.clone(),
            published: published.clone(),
            key_fetches: key_fetches.clone(),
            jwks,
            logins: logins.clone(),
            signer: keys[0].clone(),
        });
        crate::listener::on_own_runtime(async move {
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let (acceptor, served) = (acceptor.clone(), served.clone());
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(stream).await else {
                        return;
                    };
                    let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                        let served = served.clone();
                        async move { Ok::<_, std::convert::Infallible>(served.answer(req).await) }
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
            logins,
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

    /// Who its browser login logs in (`None`: it refuses every login).
    pub fn sign_in_as(&self, claims: Option<serde_json::Value>) {
        *self.logins.signed_in.lock().unwrap() = claims;
    }

    /// How many authorization codes were redeemed.
    pub fn codes_redeemed(&self) -> u64 {
        self.logins.redeemed.load(Ordering::SeqCst)
    }

    /// An ID token with `claims` (plus `iss`, `iat`, `exp` an hour ahead unless given), signed
    /// with key `index` (0 or 1).
    pub fn token(&self, index: usize, claims: serde_json::Value) -> String {
        sign(&self.url, &self.keys[index], &claims)
    }
}
