//! The server's TLS: a certificate and key from PEM files, swapped in when the files change (a
//! cert-manager renewal, a mounted Secret's update) without dropping a connection.

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

    /// A server configuration serving this certificate, HTTP/2 and HTTP/1.1 by ALPN.
    pub fn server_config(self: &Arc<Self>) -> Arc<rustls::ServerConfig> {
        let mut config = rustls::ServerConfig::builder()
            .with_no_client_auth()
            .with_cert_resolver(self.clone());
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Arc::new(config)
    }
}

impl ResolvesServerCert for ReloadingCertificate {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.current.read().ok().map(|c| c.0.clone())
    }
}
