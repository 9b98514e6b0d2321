//! The server's TLS: a certificate and key from PEM files, swapped in when the files change (a
//! cert-manager renewal, a mounted Secret's update) without dropping a connection; and client
//! certificates, verified against CA bundles, whose subject becomes the client's account.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::SystemTime;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

/// Certificate and key files to serve TLS with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// PEM certificate chain.
    pub certificate: PathBuf,
    /// PEM private key.
    pub key: PathBuf,
    /// Client certificates to verify, if any.
    pub clients: Option<ClientCertificates>,
}

/// Which client certificates are accepted (`http.tls.clientcas`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientCertificates {
    /// PEM bundles of the CAs that sign them.
    pub cas: Vec<PathBuf>,
    /// A client without one is refused at the handshake (distribution's behaviour); else it
    /// authenticates another way.
    pub required: bool,
}

/// The account a verified client certificate names: its subject's common name, else its first
/// DNS, e-mail or URI subject alternative name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientCertificate(pub String);

impl ClientCertificate {
    /// The account of a certificate (DER), if it names one.
    pub fn of(der: &[u8]) -> Option<ClientCertificate> {
        use x509_parser::extensions::GeneralName;
        let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
        let cn = cert
            .subject()
            .iter_common_name()
            .next()
            .and_then(|cn| cn.as_str().ok())
            .map(str::to_owned);
        let san = || {
            cert.subject_alternative_name()
                .ok()
                .flatten()?
                .value
                .general_names
                .iter()
                .find_map(|n| match n {
                    GeneralName::DNSName(s) | GeneralName::RFC822Name(s) | GeneralName::URI(s) => {
                        Some((*s).to_owned())
                    }
                    _ => None,
                })
        };
        cn.or_else(san)
            .filter(|a| !a.is_empty() && a.len() <= 256 && !a.chars().any(char::is_control))
            .map(ClientCertificate)
    }
}

fn client_verifier(
    clients: &ClientCertificates,
) -> Result<Arc<dyn rustls::server::danger::ClientCertVerifier>, String> {
    let mut roots = rustls::RootCertStore::empty();
    for path in &clients.cas {
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
            .and_then(|it| it.collect::<Result<_, _>>())
            .map_err(|e| format!("{}: {e}", path.display()))?;
        for c in certs {
            roots
                .add(c)
                .map_err(|e| format!("{}: {e}", path.display()))?;
        }
    }
    if roots.is_empty() {
        return Err("http.tls.clientcas: no CA certificate found".into());
    }
    let builder = rustls::server::WebPkiClientVerifier::builder(Arc::new(roots));
    let builder = if clients.required {
        builder
    } else {
        builder.allow_unauthenticated()
    };
    builder.build().map_err(|e| e.to_string()).map(|v| v as _)
}

/// The certificate in use, replaced by [`ReloadingCertificate::reload_if_changed`].
#[derive(Debug)]
pub struct ReloadingCertificate {
    files: TlsFiles,
    current: RwLock<(Arc<CertifiedKey>, Stamp)>,
}

type Stamp = (Option<SystemTime>, Option<SystemTime>);

fn stamp(files: &TlsFiles) -> Stamp {
    let m = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    (m(&files.certificate), m(&files.key))
}

/// Reads a certificate chain and its private key.
fn load(files: &TlsFiles) -> Result<CertifiedKey, String> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&files.certificate)
        .and_then(|it| it.collect::<Result<_, _>>())
        .map_err(|e| format!("{}: {e}", files.certificate.display()))?;
    if chain.is_empty() {
        return Err(format!("{}: no certificate", files.certificate.display()));
    }
    let key = PrivateKeyDer::from_pem_file(&files.key)
        .map_err(|e| format!("{}: {e}", files.key.display()))?;
    let provider = rustls::crypto::CryptoProvider::get_default()
        .cloned()
        .unwrap_or_else(|| Arc::new(rustls::crypto::aws_lc_rs::default_provider()));
    CertifiedKey::from_der(chain, key, &provider).map_err(|e| e.to_string())
}

impl ReloadingCertificate {
    /// Loads `files` now; an error names the file at fault.
    pub fn load(files: TlsFiles) -> Result<Arc<ReloadingCertificate>, String> {
        let key = load(&files)?;
        if let Some(c) = &files.clients {
            client_verifier(c)?;
        }
        let at = stamp(&files);
        Ok(Arc::new(ReloadingCertificate {
            files,
            current: RwLock::new((Arc::new(key), at)),
        }))
    }

    /// Loads the files again if either changed since the last load; a broken new pair is
    /// logged and the old one kept.
    pub fn reload_if_changed(&self) {
        let now = stamp(&self.files);
        let last = self.current.read().map(|c| c.1).unwrap_or_default();
        if now == last {
            return;
        }
        match load(&self.files) {
            Ok(key) => {
                if let Ok(mut c) = self.current.write() {
                    *c = (Arc::new(key), now);
                }
                tracing::info!("reloaded TLS certificate");
            }
            Err(e) => {
                tracing::warn!(error = %e, "TLS certificate changed but could not be loaded; keeping the old one");
                if let Ok(mut c) = self.current.write() {
                    c.1 = now;
                }
            }
        }
    }

    /// A server configuration serving this certificate, HTTP/2 and HTTP/1.1 by ALPN, and
    /// verifying client certificates if asked (the CA bundles were read at load).
    pub fn server_config(self: &Arc<Self>) -> Arc<rustls::ServerConfig> {
        let verifier = self.files.clients.as_ref().and_then(|c| {
            client_verifier(c)
                .inspect_err(|e| tracing::error!(error = %e, "client CAs could not be read"))
                .ok()
        });
        let builder = rustls::ServerConfig::builder();
        let builder = match verifier {
            Some(v) => builder.with_client_cert_verifier(v),
            None => builder.with_no_client_auth(),
        };
        let mut config = builder.with_cert_resolver(self.clone());
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Arc::new(config)
    }
}

impl ResolvesServerCert for ReloadingCertificate {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.current.read().ok().map(|c| c.0.clone())
    }
}
