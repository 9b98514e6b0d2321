//! Parses `/v2/...` paths. Repository names contain `/`, so routes are recognised from the end.

use axum::http::Method;

use crate::auth::Access;

/// An API endpoint with its raw (still unvalidated) path parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// `/v2/`
    Base,
    /// `/v2/_catalog`
    Catalog,
    /// `/v2/<name>/tags/list`
    Tags { name: String },
    /// `/v2/<name>/manifests/<reference>`
    Manifest { name: String, reference: String },
    /// `/v2/<name>/blobs/<digest>`
    Blob { name: String, digest: String },
    /// `/v2/<name>/blobs/uploads/`
    UploadStart { name: String },
    /// `/v2/<name>/blobs/uploads/<id>`
    Upload { name: String, id: String },
    /// `/v2/<name>/referrers/<digest>`
    Referrers { name: String, digest: String },
}

fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

impl Route {
    /// Recognises a request path; `None` for anything that is not a registry endpoint.
    pub fn parse(path: &str) -> Option<Route> {
        let rest = path.strip_prefix("/v2")?;
        if rest.is_empty() || rest == "/" {
            return Some(Route::Base);
        }
        let rest = percent_decode(rest.strip_prefix('/')?)?;
        if rest == "_catalog" {
            return Some(Route::Catalog);
        }
        let segs: Vec<&str> = rest.split('/').collect();
        let n = segs.len();
        let name = |k: usize| -> Option<String> { (k > 0).then(|| segs[..k].join("/")) };
        let tail = |k: usize| -> &[&str] { &segs[n.saturating_sub(k)..] };
        match tail(3) {
            [_, "tags", "list"] if n >= 3 => return Some(Route::Tags { name: name(n - 2)? }),
            ["blobs", "uploads", ""] if n >= 4 => {
                return Some(Route::UploadStart { name: name(n - 3)? });
            }
            ["blobs", "uploads", id] if n >= 4 => {
                return Some(Route::Upload {
                    name: name(n - 3)?,
                    id: (*id).to_owned(),
                });
            }
            _ => {}
        }
        match tail(2) {
            ["tags", "list"] => Some(Route::Tags { name: name(n - 2)? }),
            ["manifests", r] if !r.is_empty() => Some(Route::Manifest {
                name: name(n - 2)?,
                reference: (*r).to_owned(),
            }),
            ["blobs", "uploads"] => Some(Route::UploadStart { name: name(n - 2)? }),
            ["blobs", d] if !d.is_empty() => Some(Route::Blob {
                name: name(n - 2)?,
                digest: (*d).to_owned(),
            }),
            ["referrers", d] if !d.is_empty() => Some(Route::Referrers {
                name: name(n - 2)?,
                digest: (*d).to_owned(),
            }),
            _ => None,
        }
    }

    /// The repository the route names, if any.
    pub fn repository(&self) -> Option<&str> {
        match self {
            Route::Base | Route::Catalog => None,
            Route::Tags { name }
            | Route::Manifest { name, .. }
            | Route::Blob { name, .. }
            | Route::UploadStart { name }
            | Route::Upload { name, .. }
            | Route::Referrers { name, .. } => Some(name),
        }
    }

    /// The digest the path names, if it names one (as the client wrote it, unchecked).
    pub fn digest(&self) -> Option<&str> {
        match self {
            Route::Blob { digest, .. } | Route::Referrers { digest, .. } => Some(digest),
            Route::Manifest { reference, .. } if reference.contains(':') => Some(reference),
            _ => None,
        }
    }

    /// The access a request needs, from its route and method (distribution's mapping):
    /// `pull` to read, `pull,push` to write (and `pull` on a mount's source), `delete` to
    /// delete, `registry:catalog:*` for the catalog.
    pub fn required_access(&self, method: &Method, mount_from: Option<&str>) -> Vec<Access> {
        let read = |n: &str| vec![Access::repository(n, &["pull"])];
        let write = |n: &str| vec![Access::repository(n, &["pull", "push"])];
        match self {
            Route::Base => vec![],
            Route::Catalog => vec![Access::catalog()],
            Route::Tags { name } | Route::Referrers { name, .. } => read(name),
            Route::Manifest { name, .. } | Route::Blob { name, .. } => match *method {
                Method::GET | Method::HEAD => read(name),
                Method::DELETE => vec![Access::repository(name, &["delete"])],
                _ => write(name),
            },
            Route::UploadStart { name } => {
                let mut need = write(name);
                if let Some(from) = mount_from {
                    need.push(Access::repository(from, &["pull"]));
                }
                need
            }
            Route::Upload { name, .. } => write(name),
        }
    }

    /// A short label for logs and metrics.
    pub fn label(&self) -> &'static str {
        match self {
            Route::Base => "base",
            Route::Catalog => "catalog",
            Route::Tags { .. } => "tags",
            Route::Manifest { .. } => "manifest",
            Route::Blob { .. } => "blob",
            Route::UploadStart { .. } => "upload_start",
            Route::Upload { .. } => "upload",
            Route::Referrers { .. } => "referrers",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(x: &str) -> String {
        x.to_owned()
    }

    #[test]
    fn recognises_every_endpoint() {
        assert_eq!(Route::parse("/v2/"), Some(Route::Base));
        assert_eq!(Route::parse("/v2"), Some(Route::Base));
        assert_eq!(Route::parse("/v2/_catalog"), Some(Route::Catalog));
        assert_eq!(
            Route::parse("/v2/a/b/tags/list"),
            Some(Route::Tags { name: s("a/b") })
        );
        assert_eq!(
            Route::parse("/v2/a/manifests/latest"),
            Some(Route::Manifest {
                name: s("a"),
                reference: s("latest")
            })
        );
        assert_eq!(
            Route::parse("/v2/a/blobs/sha256%3Aab"),
            Some(Route::Blob {
                name: s("a"),
                digest: s("sha256:ab")
            })
        );
        assert_eq!(
            Route::parse("/v2/a/blobs/uploads/"),
            Some(Route::UploadStart { name: s("a") })
        );
        assert_eq!(
            Route::parse("/v2/a/blobs/uploads"),
            Some(Route::UploadStart { name: s("a") })
        );
        assert_eq!(
            Route::parse("/v2/x/y/blobs/uploads/id1"),
            Some(Route::Upload {
                name: s("x/y"),
                id: s("id1")
            })
        );
        assert_eq!(
            Route::parse("/v2/a/referrers/sha256:1"),
            Some(Route::Referrers {
                name: s("a"),
                digest: s("sha256:1")
            })
        );
    }

    #[test]
    fn names_may_contain_route_words() {
        assert_eq!(
            Route::parse("/v2/blobs/manifests/manifests/x"),
            Some(Route::Manifest {
                name: s("blobs/manifests"),
                reference: s("x")
            })
        );
        assert_eq!(
            Route::parse("/v2/tags/list/tags/list"),
            Some(Route::Tags {
                name: s("tags/list")
            })
        );
    }

    #[test]
    fn rejects_non_endpoints() {
        for p in [
            "/",
            "/v1/",
            "/v2/a",
            "/v2/manifests/x",
            "/v2/a/manifests/",
            "/v2/a/blobs/",
            "/v2/a/%zz/tags/list",
            "/v2x",
        ] {
            assert_eq!(Route::parse(p), None, "{p}");
        }
    }
}
