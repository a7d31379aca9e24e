//! Throttling of failed authentication per peer, and which address "the
//! peer" is.
//!
//! Verifying a secret that is not in the verification cache costs a store
//! lookup and a bcrypt verification: milliseconds of CPU an attacker can ask
//! for with one cheap request. [`FailureThrottle`] gives every peer a budget
//! of `auth.max_failures_per_minute` such attempts (GCRA: the whole budget at
//! once, then one more every `60 / N` seconds). An attempt is charged
//! *before* the store or bcrypt are touched and refunded when the secret
//! verifies, so concurrent attempts cannot overdraw the budget and a client
//! whose secret verifies costs nothing. Requests that present a secret whose
//! verification is already under way wait for it and are not charged (they
//! cost nothing more), so a new key arriving on many connections at once is
//! one attempt, not many. A peer over its budget is answered
//! 429 with a `Retry-After` after which one attempt is admitted again.
//!
//! The table is bounded ([`DEFAULT_MAX_TRACKED_PEERS`]): entries back at a
//! full budget are dropped first, then arbitrary ones. An attacker with more
//! addresses than that can escape the per-peer budget, but not the
//! process-wide bound on concurrent bcrypt verifications in [`crate::auth`].
//!
//! The peer is the socket's address, unless that address is one of
//! `server.trusted_proxies`: then it is the right-most `X-Forwarded-For`
//! entry that is not itself a trusted proxy. A client-supplied
//! `X-Forwarded-For` is never believed from an untrusted socket. IPv6 peers
//! are keyed by their /64, the block one subscriber usually holds.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr};

use http::HeaderMap;
use parking_lot::Mutex;

use crate::headers::X_FORWARDED_FOR;

/// Most peers whose failures are tracked at once.
pub const DEFAULT_MAX_TRACKED_PEERS: usize = 100_000;

/// The period the budget is expressed in.
const PERIOD_MS: i64 = 60_000;

/// Per-peer budget of authentication attempts that need the store and bcrypt.
#[derive(Debug)]
pub struct FailureThrottle {
    /// Milliseconds one attempt's charge takes to be paid back.
    interval_ms: i64,
    capacity: usize,
    /// Peer → theoretical arrival time (GCRA), Unix ms. A peer whose TAT is
    /// not after now has its full budget, exactly as an absent one.
    peers: Mutex<HashMap<IpAddr, i64>>,
}

impl FailureThrottle {
    /// `per_minute` attempts per minute per peer (at least 1), tracking at
    /// most `capacity` peers.
    pub fn new(per_minute: u32, capacity: usize) -> Self {
        FailureThrottle {
            interval_ms: (PERIOD_MS / i64::from(per_minute.max(1))).max(1),
            capacity: capacity.max(1),
            peers: Mutex::new(HashMap::new()),
        }
    }

    /// Charges one attempt to `peer` at `now_ms`. `Err(n)`: over budget,
    /// nothing charged; an attempt is admitted again `n` seconds (at least 1)
    /// from now.
    pub fn charge(&self, peer: IpAddr, now_ms: i64) -> Result<(), u64> {
        let key = peer_key(peer);
        let mut peers = self.peers.lock();
        let tat = peers.get(&key).copied().unwrap_or(now_ms).max(now_ms);
        let new_tat = tat + self.interval_ms;
        if new_tat - now_ms > PERIOD_MS {
            // Admitted again once new_tat - PERIOD_MS <= now.
            let wait_ms = new_tat - PERIOD_MS - now_ms;
            return Err(u64::try_from((wait_ms + 999) / 1000).unwrap_or(1).max(1));
        }
        if !peers.contains_key(&key) && peers.len() >= self.capacity {
            peers.retain(|_, t| *t > now_ms);
            if peers.len() >= self.capacity {
                if let Some(victim) = peers.keys().next().copied() {
                    peers.remove(&victim);
                }
            }
        }
        peers.insert(key, new_tat);
        Ok(())
    }

    /// Gives back one attempt charged to `peer` (its secret verified, or the
    /// store failed: neither is the peer's fault).
    pub fn refund(&self, peer: IpAddr, now_ms: i64) {
        let key = peer_key(peer);
        let mut peers = self.peers.lock();
        if let Some(tat) = peers.get_mut(&key) {
            *tat -= self.interval_ms;
            if *tat <= now_ms {
                peers.remove(&key);
            }
        }
    }

    /// Peers currently tracked.
    pub fn tracked(&self) -> usize {
        self.peers.lock().len()
    }
}

/// The address a peer is keyed by: IPv4 as is (also when IPv4-mapped), IPv6 by /64.
fn peer_key(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) => {
            let bits = u128::from(v6) & !((1u128 << 64) - 1);
            IpAddr::V6(Ipv6Addr::from(bits))
        }
        v4 => v4,
    }
}

/// An IP network, `10.0.0.0/8` or `fd00::/8` (a bare address is a /32 or /128).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    addr: IpAddr,
    prefix: u8,
}

impl Cidr {
    pub fn parse(text: &str) -> Result<Cidr, String> {
        let (addr, prefix) = match text.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (text, None),
        };
        let addr: IpAddr = addr
            .parse()
            .map_err(|_| format!("{text:?} is not an IP address or network like \"10.0.0.0/8\""))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => match p.parse::<u8>() {
                Ok(n) if n <= max => n,
                _ => return Err(format!("{text:?}: the prefix length must be 0 to {max}")),
            },
        };
        Ok(Cidr { addr, prefix })
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip.to_canonical()) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

impl std::fmt::Display for Cidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// Which address a request comes from, for throttling.
#[derive(Debug, Clone, Default)]
pub struct PeerResolver {
    trusted: Vec<Cidr>,
}

impl PeerResolver {
    pub fn new(trusted: Vec<Cidr>) -> Self {
        PeerResolver { trusted }
    }

    fn is_trusted(&self, ip: IpAddr) -> bool {
        self.trusted.iter().any(|c| c.contains(ip))
    }

    /// The socket peer, or, when it is a trusted proxy, the right-most
    /// `X-Forwarded-For` entry that is not a trusted proxy. The walk from the
    /// right stops at an unreadable entry, keeping the last trusted hop.
    pub fn client_ip(&self, socket_peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        if !self.is_trusted(socket_peer) {
            return socket_peer;
        }
        let hops: Vec<Option<IpAddr>> = headers
            .get_all(&X_FORWARDED_FOR)
            .iter()
            .flat_map(|v| v.to_str().unwrap_or("?").split(','))
            .map(|h| h.trim().parse::<IpAddr>().ok())
            .collect();
        let mut chosen = socket_peer;
        // Walk back from our own side; an unreadable hop ends the walk.
        for hop in hops.iter().rev() {
            let Some(hop) = *hop else { break };
            chosen = hop;
            if !self.is_trusted(hop) {
                break;
            }
        }
        chosen
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn budget_then_honest_retry_after() {
        let t = FailureThrottle::new(20, 10);
        let p = ip("192.0.2.1");
        for i in 0..20 {
            assert_eq!(t.charge(p, 0), Ok(()), "attempt {i}");
        }
        // One attempt is paid back every 3 s.
        assert_eq!(t.charge(p, 0), Err(3));
        assert_eq!(t.charge(p, 2_001), Err(1));
        assert_eq!(t.charge(p, 2_999), Err(1));
        assert_eq!(t.charge(p, 3_000), Ok(()));
        assert_eq!(t.charge(p, 3_000), Err(3));
        // Other peers are not affected.
        assert_eq!(t.charge(ip("192.0.2.2"), 0), Ok(()));
        // A full minute later the whole budget is back.
        for _ in 0..20 {
            assert_eq!(t.charge(p, 63_000), Ok(()));
        }
    }

    #[test]
    fn refunds_give_the_attempt_back() {
        let t = FailureThrottle::new(2, 10);
        let p = ip("192.0.2.1");
        for _ in 0..100 {
            assert_eq!(t.charge(p, 0), Ok(()));
            t.refund(p, 0);
        }
        assert_eq!(t.tracked(), 0);
        assert_eq!(t.charge(p, 0), Ok(()));
        assert_eq!(t.charge(p, 0), Ok(()));
        assert_eq!(t.charge(p, 0), Err(30));
    }

    #[test]
    fn the_table_is_bounded() {
        let t = FailureThrottle::new(1, 3);
        for i in 0..50u8 {
            let _ = t.charge(IpAddr::from([10, 0, 0, i]), 0);
            assert!(t.tracked() <= 3);
        }
    }

    #[test]
    fn ipv6_peers_share_their_64() {
        let t = FailureThrottle::new(1, 10);
        assert_eq!(t.charge(ip("2001:db8::1"), 0), Ok(()));
        assert!(t.charge(ip("2001:db8::ffff:2"), 0).is_err());
        assert_eq!(t.charge(ip("2001:db8:0:1::1"), 0), Ok(()));
        assert_eq!(t.charge(ip("::ffff:192.0.2.9"), 0), Ok(()));
        assert!(t.charge(ip("192.0.2.9"), 0).is_err(), "IPv4-mapped is IPv4");
    }

    #[test]
    fn cidrs() {
        let c = Cidr::parse("10.0.0.0/8").unwrap();
        assert!(c.contains(ip("10.200.3.4")));
        assert!(!c.contains(ip("11.0.0.1")));
        assert!(c.contains(ip("::ffff:10.0.0.1")));
        assert!(Cidr::parse("127.0.0.1").unwrap().contains(ip("127.0.0.1")));
        assert!(Cidr::parse("0.0.0.0/0").unwrap().contains(ip("8.8.8.8")));
        assert!(Cidr::parse("fd00::/8").unwrap().contains(ip("fd12::1")));
        assert!(!Cidr::parse("fd00::/8").unwrap().contains(ip("10.0.0.1")));
        for bad in ["10.0.0.0/33", "x", "10.0.0.0/", "::/129", "10.0.0/8"] {
            assert!(Cidr::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn forwarded_for_is_believed_only_from_trusted_proxies() {
        let mut h = HeaderMap::new();
        h.append(
            X_FORWARDED_FOR.clone(),
            HeaderValue::from_static("203.0.113.7, 198.51.100.1"),
        );
        h.append(
            X_FORWARDED_FOR.clone(),
            HeaderValue::from_static("10.0.0.2"),
        );
        let none = PeerResolver::default();
        assert_eq!(none.client_ip(ip("192.0.2.1"), &h), ip("192.0.2.1"));
        let r = PeerResolver::new(vec![Cidr::parse("10.0.0.0/8").unwrap()]);
        // Untrusted socket: the header is the client's own claim.
        assert_eq!(r.client_ip(ip("192.0.2.1"), &h), ip("192.0.2.1"));
        // Trusted socket: right-most hop that is not a trusted proxy.
        assert_eq!(r.client_ip(ip("10.0.0.1"), &h), ip("198.51.100.1"));
        // No header, or garbage: the socket peer.
        assert_eq!(
            r.client_ip(ip("10.0.0.1"), &HeaderMap::new()),
            ip("10.0.0.1")
        );
        let mut g = HeaderMap::new();
        g.append(X_FORWARDED_FOR.clone(), HeaderValue::from_static("unknown"));
        assert_eq!(r.client_ip(ip("10.0.0.1"), &g), ip("10.0.0.1"));
        let mut g = HeaderMap::new();
        g.append(
            X_FORWARDED_FOR.clone(),
            HeaderValue::from_static("203.0.113.7, junk, 10.0.0.3"),
        );
        assert_eq!(r.client_ip(ip("10.0.0.1"), &g), ip("10.0.0.3"));
    }
}
