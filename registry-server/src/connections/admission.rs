//! How many connections are open, in all and per client, and whether one more may be.
//!
//! Every connection holds a file descriptor and a task until it ends. Without a bound, 20,000
//! connections that each sent one header line took Berth to its descriptor limit: `accept`
//! failed with EMFILE and `/healthz` stopped answering until they left. The total cap keeps a
//! reserve of descriptors for the store, the disk and upstreams; the per-client cap keeps one
//! address (an IPv6 client: its /64) from taking the whole of it.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError};

/// Why a connection was not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The registry holds its maximum of connections.
    Full,
    /// This client holds its maximum.
    ClientFull,
}

/// The open connections, counted.
pub struct Admission {
    max_total: usize,
    max_per_client: usize,
    open: Mutex<Counts>,
}

#[derive(Default)]
struct Counts {
    total: usize,
    by_client: HashMap<IpAddr, usize>,
}

/// One admitted connection; it is counted until this is dropped.
pub struct Ticket {
    admission: Arc<Admission>,
    client: IpAddr,
}

/// The key a client is counted under: its address, or the /64 network of an IPv6 address
/// (one host usually holds a whole /64).
fn client_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
    }
}

impl Admission {
    /// At most `max_total` connections, `max_per_client` of them from one client.
    pub fn new(max_total: usize, max_per_client: usize) -> Arc<Admission> {
        Arc::new(Admission {
            max_total,
            max_per_client,
            open: Mutex::new(Counts::default()),
        })
    }

    /// Counts a connection from `ip` in, or says why not.
    pub fn admit(self: &Arc<Self>, ip: IpAddr) -> Result<Ticket, Refusal> {
        let client = client_key(ip);
        let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        if open.total >= self.max_total {
            return Err(Refusal::Full);
        }
        let mine = open.by_client.entry(client).or_default();
        if *mine >= self.max_per_client {
            return Err(Refusal::ClientFull);
        }
        *mine += 1;
        open.total += 1;
        Ok(Ticket {
            admission: self.clone(),
            client,
        })
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        self.open
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .total
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        let mut open = self
            .admission
            .open
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        open.total -= 1;
        if let Some(n) = open.by_client.get_mut(&self.client) {
            *n -= 1;
            if *n == 0 {
                open.by_client.remove(&self.client);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn caps_in_all_and_per_client() {
        let a = Admission::new(3, 2);
        let t1 = a.admit(ip("10.0.0.1")).unwrap();
        let _t2 = a.admit(ip("10.0.0.1")).unwrap();
        assert_eq!(a.admit(ip("10.0.0.1")).err(), Some(Refusal::ClientFull));
        let _t3 = a.admit(ip("10.0.0.2")).unwrap();
        assert_eq!(a.admit(ip("10.0.0.3")).err(), Some(Refusal::Full));
        drop(t1);
        assert_eq!(a.open(), 2);
        assert!(a.admit(ip("10.0.0.1")).is_ok());
    }

    #[test]
    fn an_ipv6_client_is_its_64() {
        let a = Admission::new(10, 1);
        let _t = a.admit(ip("2001:db8:1:2::1")).unwrap();
        assert!(a.admit(ip("2001:db8:1:2::ffff")).is_err());
        assert!(a.admit(ip("2001:db8:1:3::1")).is_ok());
        let _v4 = a.admit(ip("::ffff:10.0.0.9")).unwrap();
        assert!(
            a.admit(ip("10.0.0.9")).is_err(),
            "a mapped address is its IPv4"
        );
    }
}
