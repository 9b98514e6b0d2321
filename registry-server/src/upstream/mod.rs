//! Upstream registries: the clients that fetch from them, their authentication and where their
//! requests may go. What is cached, and for which repository, is the content layer's job;
//! nothing here knows about HTTP requests to Berth itself.

mod challenge;
pub(crate) mod client;
mod joined;
pub(crate) mod reach;

pub(crate) use client::UpstreamClient;

use registry_core::registry::CacheExpiry;

use crate::config::UpstreamSettings;

/// Why the upstream could not provide what a client asked for. The text (for logs) may name
/// hosts and network errors; a client is told only [`UpstreamError::public_message`].
#[derive(Debug, Clone, thiserror::Error)]
pub enum UpstreamError {
    /// No connection, a timeout, or a 5xx.
    #[error("the upstream registry is unreachable: {0}")]
    Unreachable(String),
    /// It refused Berth's credentials (or wants some and none are configured).
    #[error("the upstream registry {0} refused the configured credentials")]
    Refused(String),
    /// It asks Berth to slow down.
    #[error("the upstream registry {0} is rate-limiting this registry")]
    RateLimited(String),
    /// It answered something that is not what the distribution API says.
    #[error("the upstream registry answered unexpectedly: {0}")]
    BadAnswer(String),
}

impl UpstreamError {
    /// Whether a stale cached copy may be served instead (the upstream is down or busy, not
    /// saying the content is gone).
    pub(crate) fn may_serve_cached(&self) -> bool {
        matches!(
            self,
            UpstreamError::Unreachable(_) | UpstreamError::RateLimited(_)
        )
    }

    /// What a client of Berth is told: the kind of failure, never the upstream's address,
    /// credentials or network details (those go to the log).
    pub fn public_message(&self) -> &'static str {
        match self {
            UpstreamError::Unreachable(_) => "the upstream registry is unreachable",
            UpstreamError::Refused(_) => "the upstream registry refused the configured credentials",
            UpstreamError::RateLimited(_) => "the upstream registry is rate-limiting this registry",
            UpstreamError::BadAnswer(_) => "the upstream registry answered unexpectedly",
        }
    }
}

/// One configured upstream.
pub(crate) struct Upstream {
    prefix: Option<String>,
    client: UpstreamClient,
    /// How long cached content lives after its last pull; `None`: forever.
    pub(crate) ttl: Option<std::time::Duration>,
    /// Largest blob taken from this upstream.
    pub(crate) max_blob_bytes: u64,
    /// The digest a tag names upstream (`None`: no such tag; `Some(None)`: the upstream did
    /// not say), for HEADs in flight.
    tag_answers: joined::Joined<Result<Option<Option<registry_core::Digest>>, UpstreamError>>,
}

/// A local repository's counterpart at its upstream.
pub(crate) struct Remote<'a> {
    /// The upstream.
    pub(crate) upstream: &'a Upstream,
    /// The repository's name there (the local name without the prefix).
    pub(crate) name: String,
}

impl Upstream {
    /// The client of this upstream.
    pub(crate) fn client(&self) -> &UpstreamClient {
        &self.client
    }

    /// The digest `path` (a manifest by tag) names upstream, asked once for every request
    /// that arrives while the question is in flight.
    pub(crate) async fn tag_digest<F>(
        &self,
        path: &str,
        ask: impl FnOnce() -> F,
    ) -> Result<Option<Option<registry_core::Digest>>, UpstreamError>
    where
        F: std::future::Future<
                Output = Result<Option<Option<registry_core::Digest>>, UpstreamError>,
            >,
    {
        self.tag_answers.run(path, ask).await
    }
}

/// Every configured upstream, most specific prefix first.
#[derive(Default)]
pub(crate) struct Upstreams {
    upstreams: Vec<Upstream>,
}

impl Upstreams {
    /// Clients for `settings` (already ordered by the configuration).
    pub(crate) fn new(settings: &[UpstreamSettings]) -> Result<Self, UpstreamError> {
        let upstreams = settings
            .iter()
            .map(|s| {
                Ok(Upstream {
                    prefix: s.prefix.clone(),
                    client: UpstreamClient::new(s.clone())?,
                    ttl: s.ttl,
                    max_blob_bytes: s.max_blob_bytes,
                    tag_answers: Default::default(),
                })
            })
            .collect::<Result<_, UpstreamError>>()?;
        Ok(Upstreams { upstreams })
    }

    /// The upstream serving local repository `name`, if any.
    pub(crate) fn remote_of(&self, name: &str) -> Option<Remote<'_>> {
        self.upstreams.iter().find_map(|u| {
            let remote = registry_core::names::under_prefix(name, u.prefix.as_deref())?;
            Some(Remote {
                upstream: u,
                name: upstream_name(u.client.origin(), remote),
            })
        })
    }
}

/// The expiry rule of each upstream, in the order repositories are matched to upstreams.
pub(crate) fn expiry_rules(settings: &[UpstreamSettings]) -> Vec<CacheExpiry> {
    settings
        .iter()
        .map(|s| CacheExpiry {
            prefix: s.prefix.clone(),
            ttl: s.ttl,
        })
        .collect()
}

/// Docker Hub keeps its official images under `library/`, and docker adds that for
/// `docker.io/alpine`; a cache reached as `cache/dockerhub/alpine` does the same, so that both
/// spellings work (as they do with docker against Docker Hub itself).
fn upstream_name(origin: &url::Url, name: &str) -> String {
    let docker_hub = matches!(
        origin.host_str(),
        Some("registry-1.docker.io" | "docker.io" | "index.docker.io" | "registry.hub.docker.com")
    );
    if docker_hub && !name.contains('/') {
        format!("library/{name}")
    } else {
        name.to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(prefix: Option<&str>, port: u16) -> UpstreamSettings {
        UpstreamSettings::new(prefix, format!("http://127.0.0.1:{port}").parse().unwrap())
    }

    #[test]
    fn repositories_map_to_the_most_specific_upstream() {
        let p = Upstreams::new(&[
            settings(Some("hub/team"), 1),
            settings(Some("hub"), 2),
            settings(None, 3),
        ])
        .unwrap();
        let pick = |n: &str| {
            p.remote_of(n)
                .map(|r| (r.upstream.client.origin().port(), r.name))
        };
        assert_eq!(pick("hub/team/app"), Some((Some(1), "app".into())));
        assert_eq!(
            pick("hub/library/alpine"),
            Some((Some(2), "library/alpine".into()))
        );
        assert_eq!(pick("hubx/app"), Some((Some(3), "hubx/app".into())));
        assert_eq!(pick("hub"), Some((Some(3), "hub".into())));
        let hub = Upstreams::new(&[UpstreamSettings::new(
            Some("dockerhub"),
            "https://registry-1.docker.io".parse().unwrap(),
        )])
        .unwrap();
        let hub_name = |n: &str| hub.remote_of(n).map(|r| r.name);
        assert_eq!(hub_name("dockerhub/alpine"), Some("library/alpine".into()));
        assert_eq!(
            hub_name("dockerhub/library/alpine"),
            Some("library/alpine".into())
        );
        assert_eq!(
            hub_name("dockerhub/bitnami/redis"),
            Some("bitnami/redis".into())
        );
        // Elsewhere a one-part name is what it is.
        assert_eq!(pick("hubx"), Some((Some(3), "hubx".into())));
        let only_prefixed = Upstreams::new(&[settings(Some("ghcr"), 4)]).unwrap();
        assert!(only_prefixed.remote_of("mine/app").is_none());
        assert_eq!(
            only_prefixed.remote_of("ghcr/o/r").map(|r| r.name),
            Some("o/r".into())
        );
    }
}
