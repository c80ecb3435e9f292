//! Scope of a peer address: LOCAL (loopback, the pod's own addresses), EAST_WEST (inside the
//! configured cluster CIDRs), NORTH_SOUTH (everything else).

use std::net::IpAddr;
use std::str::FromStr;

use ipnet::IpNet;

use crate::model::Scope;

/// Default cluster ranges: RFC 1918, carrier-grade NAT (used by some VPC CNIs) and IPv6 ULA.
pub const DEFAULT_CLUSTER_CIDRS: &str =
    "10.0.0.0/8,172.16.0.0/12,192.168.0.0/16,100.64.0.0/10,fc00::/7";

/// A parsed list of cluster CIDRs (`--cluster-cidrs`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterCidrs(pub Vec<IpNet>);

impl FromStr for ClusterCidrs {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        s.split(',')
            .map(str::trim)
            .filter(|p| !p.is_empty())
            .map(|p| {
                p.parse::<IpNet>()
                    .map_err(|e| format!("invalid CIDR {p:?}: {e}"))
            })
            .collect::<Result<Vec<_>, _>>()
            .map(ClusterCidrs)
    }
}

impl Default for ClusterCidrs {
    fn default() -> Self {
        DEFAULT_CLUSTER_CIDRS
            .parse()
            .unwrap_or(ClusterCidrs(Vec::new()))
    }
}

/// Classifies peers; knows the pod's own addresses as they appear on its sockets.
#[derive(Debug, Clone, Default)]
pub struct Scoper {
    cidrs: ClusterCidrs,
    local_addrs: Vec<IpAddr>,
}

impl Scoper {
    pub fn new(cidrs: ClusterCidrs) -> Self {
        Scoper {
            cidrs,
            local_addrs: Vec::new(),
        }
    }

    /// Remembers an address the pod owns (a local address of one of its sockets).
    pub fn learn_local(&mut self, addr: IpAddr) {
        let addr = canonical(addr);
        if !addr.is_unspecified()
            && !addr.is_loopback()
            && !self.local_addrs.contains(&addr)
            && self.local_addrs.len() < 64
        {
            self.local_addrs.push(addr);
        }
    }

    pub fn scope(&self, remote: IpAddr) -> Scope {
        let remote = canonical(remote);
        if remote.is_loopback() || self.local_addrs.contains(&remote) {
            Scope::Local
        } else if self.cidrs.0.iter().any(|net| net.contains(&remote)) {
            Scope::EastWest
        } else {
            Scope::NorthSouth
        }
    }
}

/// IPv4-mapped IPv6 addresses (`::ffff:a.b.c.d`, seen on dual-stack sockets) as IPv4.
pub fn canonical(addr: IpAddr) -> IpAddr {
    match addr {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(addr),
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    #[test]
    fn default_scopes() {
        let mut scoper = Scoper::new(ClusterCidrs::default());
        scoper.learn_local(ip("10.1.2.3"));
        assert_eq!(scoper.scope(ip("127.0.0.1")), Scope::Local);
        assert_eq!(scoper.scope(ip("::1")), Scope::Local);
        assert_eq!(scoper.scope(ip("10.1.2.3")), Scope::Local);
        assert_eq!(scoper.scope(ip("10.9.9.9")), Scope::EastWest);
        assert_eq!(scoper.scope(ip("::ffff:192.168.1.1")), Scope::EastWest);
        assert_eq!(scoper.scope(ip("100.64.0.1")), Scope::EastWest);
        assert_eq!(scoper.scope(ip("fd00::1")), Scope::EastWest);
        assert_eq!(scoper.scope(ip("203.0.113.7")), Scope::NorthSouth);
        assert_eq!(scoper.scope(ip("2001:db8::1")), Scope::NorthSouth);
    }

    #[test]
    fn custom_cidrs_replace_the_defaults() {
        let scoper = Scoper::new("203.0.113.0/24".parse().expect("cidrs"));
        assert_eq!(scoper.scope(ip("203.0.113.7")), Scope::EastWest);
        assert_eq!(scoper.scope(ip("10.0.0.1")), Scope::NorthSouth);
        assert!("10.0.0.0/33".parse::<ClusterCidrs>().is_err());
    }
}
