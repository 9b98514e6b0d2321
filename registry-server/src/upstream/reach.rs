//! Where requests made for an upstream may go.
//!
//! An upstream is not trusted: its redirects (to blob storage) and its token realm name hosts
//! that Berth then connects to from inside the network it runs in. Without a check, a 307 to
//! `http://169.254.169.254/` would read the cloud's instance metadata for an anonymous client,
//! and a 307 to `127.0.0.1:<port>` would read any local service (Berth's own `/metrics` among
//! them). So a request may go to the upstream's own origin, to configured trusted origins, and
//! to public addresses; private addresses only when the upstream itself resolved to one (an
//! in-cluster registry redirecting to in-cluster storage); loopback and link-local never, but
//! for the upstream's own origin. Loopback is stricter than private on purpose: a loopback
//! upstream is a sidecar or a port-forward, and every other loopback port is another service of
//! this host.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};

/// The kinds of address a destination can have, as bits (the classes an upstream resolved to).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AddressClass {
    /// Routable on the internet.
    Public = 1,
    /// RFC 1918, carrier-grade NAT, IPv6 unique-local.
    Private = 2,
    /// This host: 127/8, ::1, and the unspecified addresses that reach it.
    Loopback = 4,
    /// 169.254/16 and fe80::/10, where cloud metadata services answer.
    LinkLocal = 8,
    /// Multicast, broadcast, documentation and reserved ranges: never a registry.
    Special = 16,
}

/// Classifies an address (an IPv4-mapped IPv6 address as its IPv4 address).
pub(crate) fn classify(ip: IpAddr) -> AddressClass {
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            if v4.is_loopback() || v4.is_unspecified() {
                AddressClass::Loopback
            } else if v4.is_link_local() {
                AddressClass::LinkLocal
            } else if v4.is_private() || (o[0] == 100 && (o[1] & 0xc0) == 64) {
                AddressClass::Private
            } else if v4.is_multicast()
                || v4.is_broadcast()
                || v4.is_documentation()
                || o[0] == 0
                || o[0] >= 240
            {
                AddressClass::Special
            } else {
                AddressClass::Public
            }
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return classify(IpAddr::V4(v4));
            }
            let first = v6.segments()[0];
            if v6.is_loopback() || v6.is_unspecified() {
                AddressClass::Loopback
            } else if first & 0xffc0 == 0xfe80 {
                AddressClass::LinkLocal
            } else if first & 0xfe00 == 0xfc00 {
                AddressClass::Private
            } else if v6.is_multicast() || first == 0x2001 && v6.segments()[1] == 0x0db8 {
                AddressClass::Special
            } else {
                AddressClass::Public
            }
        }
    }
}

/// The origins one upstream's requests may reach, and the classes its own name resolved to.
#[derive(Debug)]
pub(crate) struct Reach {
    host: String,
    port: u16,
    trusted: Vec<(String, u16)>,
    /// Bits of [`AddressClass`] the upstream's own host has resolved to so far.
    own_classes: AtomicU8,
}

fn host_and_port(url: &url::Url) -> Option<(String, u16)> {
    Some((
        url.host_str()?
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_ascii_lowercase(),
        url.port_or_known_default()?,
    ))
}

impl Reach {
    /// The reach of the upstream at `origin`, with extra `trusted` origins (`host:port`).
    pub(crate) fn new(origin: &url::Url, trusted: &[(String, u16)]) -> Arc<Reach> {
        let (host, port) = host_and_port(origin).unwrap_or_default();
        let own = host.parse::<IpAddr>().map_or(0, |ip| classify(ip) as u8);
        Arc::new(Reach {
            host,
            port,
            trusted: trusted
                .iter()
                .map(|(h, p)| (h.to_ascii_lowercase(), *p))
                .collect(),
            own_classes: AtomicU8::new(own),
        })
    }

    fn own(&self, class: AddressClass) -> bool {
        self.own_classes.load(Ordering::Relaxed) & class as u8 != 0
    }

    fn names_trusted_host(&self, host: &str) -> bool {
        host == self.host || self.trusted.iter().any(|(h, _)| h == host)
    }

    /// Whether an address of `class` may be connected to for a host that is neither the
    /// upstream's nor a trusted one.
    fn class_allowed(&self, class: AddressClass) -> bool {
        match class {
            AddressClass::Public => true,
            AddressClass::Private => self.own(AddressClass::Private),
            AddressClass::Loopback | AddressClass::LinkLocal | AddressClass::Special => false,
        }
    }

    /// Whether a request may go to `url` (a redirect target or a token realm). Names other
    /// than the upstream's are checked again when they are resolved.
    pub(crate) fn check(&self, url: &url::Url) -> Result<(), String> {
        if !matches!(url.scheme(), "http" | "https") {
            return Err(format!("scheme {:?} is not http(s)", url.scheme()));
        }
        let (host, port) = host_and_port(url).ok_or("no host")?;
        if (host == self.host && port == self.port) || self.trusted.contains(&(host.clone(), port))
        {
            return Ok(());
        }
        match host.parse::<IpAddr>() {
            Ok(ip) => {
                let class = classify(ip);
                if self.class_allowed(class) {
                    Ok(())
                } else {
                    Err(format!("{ip} is a {class:?} address"))
                }
            }
            // Another port of a loopback upstream's host is another local service.
            Err(_) if host == self.host && self.own(AddressClass::Loopback) => Err(format!(
                "port {port} of the upstream's loopback host is not the upstream"
            )),
            Err(_) => Ok(()),
        }
    }

    /// Whether a redirect from the chain `previous` may go to `next`: at most five hops, never
    /// from https to http, and only where [`Reach::check`] allows.
    pub(crate) fn judge_redirect(
        &self,
        next: &url::Url,
        previous: &[url::Url],
    ) -> Result<(), String> {
        if previous.len() >= 5 {
            return Err("more than 5 redirects".into());
        }
        if next.scheme() == "http" && previous.iter().any(|u| u.scheme() == "https") {
            return Err("a redirect from https to http".into());
        }
        self.check(next)
    }

    /// The addresses of `name` that may be connected to (all of them for the upstream's own
    /// and trusted hosts, whose classes are noted).
    pub(crate) fn filter(
        &self,
        name: &str,
        addrs: Vec<SocketAddr>,
    ) -> Result<Vec<SocketAddr>, String> {
        let name = name.to_ascii_lowercase();
        if self.names_trusted_host(&name) {
            if name == self.host {
                for a in &addrs {
                    self.own_classes
                        .fetch_or(classify(a.ip()) as u8, Ordering::Relaxed);
                }
            }
            return Ok(addrs);
        }
        let allowed: Vec<SocketAddr> = addrs
            .iter()
            .copied()
            .filter(|a| self.class_allowed(classify(a.ip())))
            .collect();
        if allowed.is_empty() {
            return Err(format!(
                "{name} resolves only to addresses an upstream may not send Berth to ({})",
                addrs
                    .iter()
                    .map(|a| a.ip().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        Ok(allowed)
    }
}

/// A DNS resolver that drops the addresses a [`Reach`] refuses.
pub(crate) struct ReachResolver(pub(crate) Arc<Reach>);

impl reqwest::dns::Resolve for ReachResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let reach = self.0.clone();
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let addrs: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let allowed = reach.filter(&host, addrs)?;
            Ok(Box::new(allowed.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

/// The redirect policy of an upstream's client: [`Reach::judge_redirect`].
pub(crate) fn redirect_policy(reach: Arc<Reach>) -> reqwest::redirect::Policy {
    reqwest::redirect::Policy::custom(move |attempt| {
        match reach.judge_redirect(attempt.url(), attempt.previous()) {
            Ok(()) => attempt.follow(),
            Err(why) => attempt.error(format!("a redirect refused: {why}")),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(s: &str) -> url::Url {
        s.parse().unwrap()
    }

    #[test]
    fn classes() {
        let c = |s: &str| classify(s.parse().unwrap());
        assert_eq!(c("127.0.0.1"), AddressClass::Loopback);
        assert_eq!(c("127.8.9.10"), AddressClass::Loopback);
        assert_eq!(c("0.0.0.0"), AddressClass::Loopback);
        assert_eq!(c("::1"), AddressClass::Loopback);
        assert_eq!(c("::ffff:127.0.0.1"), AddressClass::Loopback);
        assert_eq!(c("169.254.169.254"), AddressClass::LinkLocal);
        assert_eq!(c("fe80::1"), AddressClass::LinkLocal);
        assert_eq!(c("10.1.2.3"), AddressClass::Private);
        assert_eq!(c("172.16.0.1"), AddressClass::Private);
        assert_eq!(c("192.168.1.1"), AddressClass::Private);
        assert_eq!(c("100.64.0.1"), AddressClass::Private);
        assert_eq!(c("fd00::1"), AddressClass::Private);
        assert_eq!(c("224.0.0.1"), AddressClass::Special);
        assert_eq!(c("255.255.255.255"), AddressClass::Special);
        assert_eq!(c("8.8.8.8"), AddressClass::Public);
        assert_eq!(c("2606:4700::1111"), AddressClass::Public);
        assert_eq!(c("100.128.0.1"), AddressClass::Public);
    }

    #[test]
    fn a_public_upstream_reaches_public_hosts_only() {
        let r = Reach::new(&url("https://registry.example.com"), &[]);
        assert!(r.check(&url("https://registry.example.com/v2/")).is_ok());
        assert!(r.check(&url("https://s3.amazonaws.com/b/k")).is_ok());
        assert!(r.check(&url("https://52.1.2.3/b")).is_ok());
        for bad in [
            "http://169.254.169.254/latest/meta-data/",
            "http://127.0.0.1:5000/metrics",
            "http://10.0.0.5:9000/bucket",
            "http://[::1]/",
            "file:///etc/passwd",
        ] {
            assert!(r.check(&url(bad)).is_err(), "{bad}");
        }
        let addrs = |s: &[&str]| -> Vec<SocketAddr> {
            s.iter()
                .map(|a| SocketAddr::new(a.parse().unwrap(), 443))
                .collect()
        };
        assert!(r.filter("evil.example", addrs(&["127.0.0.1"])).is_err());
        assert_eq!(
            r.filter("cdn.example", addrs(&["10.0.0.1", "52.1.2.3"]))
                .unwrap(),
            addrs(&["52.1.2.3"])
        );
        // The upstream's own name may be anywhere; its classes are noted.
        assert!(
            r.filter("registry.example.com", addrs(&["10.0.0.9"]))
                .is_ok()
        );
        assert!(
            r.check(&url("http://10.0.0.5:9000/bucket")).is_ok(),
            "now private is its own class"
        );
    }

    #[test]
    fn redirects_never_downgrade_and_end() {
        let r = Reach::new(&url("https://registry.example.com"), &[]);
        let from = [url("https://registry.example.com/v2/a/blobs/x")];
        assert!(
            r.judge_redirect(&url("https://s3.example.com/k"), &from)
                .is_ok()
        );
        assert!(
            r.judge_redirect(&url("http://s3.example.com/k"), &from)
                .unwrap_err()
                .contains("https to http")
        );
        let chain: Vec<_> = (0..5)
            .map(|i| url(&format!("https://h{i}.example/")))
            .collect();
        assert!(
            r.judge_redirect(&url("https://last.example/"), &chain)
                .is_err()
        );
        let plain = Reach::new(&url("http://registry.example.com"), &[]);
        assert!(
            plain
                .judge_redirect(
                    &url("http://s3.example.com/k"),
                    &[url("http://registry.example.com/")]
                )
                .is_ok()
        );
    }

    #[test]
    fn a_loopback_upstream_reaches_its_own_port_and_trusted_origins_only() {
        let r = Reach::new(&url("http://127.0.0.1:5001"), &[("127.0.0.1".into(), 9000)]);
        assert!(r.check(&url("http://127.0.0.1:5001/v2/a/blobs/x")).is_ok());
        assert!(r.check(&url("http://127.0.0.1:9000/bucket/key")).is_ok());
        assert!(r.check(&url("http://127.0.0.1:5000/metrics")).is_err());
        assert!(r.check(&url("http://169.254.169.254/")).is_err());
        assert!(r.check(&url("http://10.0.0.1/")).is_err());
        let named = Reach::new(&url("http://localhost:5001"), &[]);
        let lo = vec![SocketAddr::new("127.0.0.1".parse().unwrap(), 0)];
        assert!(named.filter("localhost", lo).is_ok());
        assert!(named.check(&url("http://localhost:5000/metrics")).is_err());
        assert!(named.check(&url("http://localhost:5001/v2/")).is_ok());
    }
}
