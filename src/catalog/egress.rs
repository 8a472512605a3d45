//! Where a tenant-defined upstream may point: public addresses only, unless the operator opens
//! private networks (`MCP_PLATFORM_ALLOW_PRIVATE_UPSTREAMS`). Checked when a service is saved
//! and again on every connection, on the address actually connected to (`GuardedResolver`), so a
//! name that later resolves to an internal address gets nowhere. System services, defined by the
//! operator, are not limited.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, LazyLock};

use ipnet::IpNet;
use url::{Host, Url};

/// Ranges that are not the public internet: loopback, private, link-local (cloud metadata),
/// shared, documentation, benchmarking, multicast and reserved.
static NOT_PUBLIC: LazyLock<Vec<IpNet>> = LazyLock::new(|| {
    [
        "0.0.0.0/8",
        "10.0.0.0/8",
        "100.64.0.0/10",
        "127.0.0.0/8",
        "169.254.0.0/16",
        "172.16.0.0/12",
        "192.0.0.0/24",
        "192.0.2.0/24",
        "192.88.99.0/24",
        "192.168.0.0/16",
        "198.18.0.0/15",
        "198.51.100.0/24",
        "203.0.113.0/24",
        "224.0.0.0/4",
        "240.0.0.0/4",
        "::/128",
        "::1/128",
        "100::/64",
        "2001:db8::/32",
        "fc00::/7",
        "fe80::/10",
        "ff00::/8",
    ]
    .iter()
    .map(|net| net.parse().expect("the ranges above are valid"))
    .collect()
});

/// The operator's choice of private networks that tenant upstreams may reach.
#[derive(Debug, Clone, Default)]
pub struct UpstreamPolicy {
    allowed_private: Vec<IpNet>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error(
        "{0} is not a public address; the platform reaches public addresses only (an operator can allow private networks)"
    )]
    NotPublic(IpAddr),
    #[error("the host {0} does not resolve")]
    Unresolved(String),
}

impl UpstreamPolicy {
    /// A comma-separated list of networks or addresses, e.g. `10.0.0.0/8, 127.0.0.1`.
    pub fn parse(raw: &str) -> Result<UpstreamPolicy, String> {
        let mut allowed_private = Vec::new();
        for item in raw.split(',').map(str::trim).filter(|i| !i.is_empty()) {
            let net = item
                .parse::<IpNet>()
                .or_else(|_| item.parse::<IpAddr>().map(IpNet::from))
                .map_err(|_| format!("\"{item}\" is not a network like 10.0.0.0/8 or an address"))?;
            allowed_private.push(net);
        }
        Ok(UpstreamPolicy { allowed_private })
    }

    /// Whether a tenant upstream may connect to `ip`.
    pub fn allows(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        is_public(ip) || self.allowed_private.iter().any(|net| net.contains(&ip))
    }

    /// Checks every address the URL's host resolves to now (a literal address as it is).
    pub async fn check_url(&self, url: &Url) -> Result<(), Refused> {
        let port = url.port_or_known_default().unwrap_or(80);
        let addresses: Vec<IpAddr> = match url.host() {
            Some(Host::Ipv4(ip)) => vec![IpAddr::V4(ip)],
            Some(Host::Ipv6(ip)) => vec![IpAddr::V6(ip)],
            Some(Host::Domain(name)) => tokio::net::lookup_host((name, port))
                .await
                .map_err(|_| Refused::Unresolved(name.to_owned()))?
                .map(|a| a.ip())
                .collect(),
            None => return Err(Refused::Unresolved(String::new())),
        };
        if addresses.is_empty() {
            return Err(Refused::Unresolved(url.host_str().unwrap_or_default().to_owned()));
        }
        match addresses.into_iter().find(|ip| !self.allows(*ip)) {
            Some(ip) => Err(Refused::NotPublic(ip)),
            None => Ok(()),
        }
    }

    /// Checks a URL's host if it is a literal address: connections to those skip name
    /// resolution, so `GuardedResolver` never sees them.
    pub fn check_literal(&self, url: &str) -> Result<(), Refused> {
        let Ok(url) = Url::parse(url) else { return Ok(()) };
        let ip = match url.host() {
            Some(Host::Ipv4(ip)) => IpAddr::V4(ip),
            Some(Host::Ipv6(ip)) => IpAddr::V6(ip),
            _ => return Ok(()),
        };
        if self.allows(ip) { Ok(()) } else { Err(Refused::NotPublic(ip)) }
    }
}

/// An IPv4 address written as IPv6 (mapped, or NAT64's well-known prefix) is judged as IPv4.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => nat64(v6).map_or(ip, IpAddr::V4),
        },
        v4 => v4,
    }
}

fn nat64(v6: Ipv6Addr) -> Option<Ipv4Addr> {
    let [a, b, c, d, e, f, g, h] = v6.segments();
    ((a, b, c, d, e, f) == (0x64, 0xff9b, 0, 0, 0, 0))
        .then(|| Ipv4Addr::new((g >> 8) as u8, g as u8, (h >> 8) as u8, h as u8))
}

fn is_public(ip: IpAddr) -> bool {
    !NOT_PUBLIC.iter().any(|net| net.contains(&ip))
}

/// Name resolution for tenant upstreams that drops the addresses the policy does not allow, so
/// the connection itself can only reach an allowed address, whatever the name resolved to when
/// the service was saved.
pub struct GuardedResolver(pub Arc<UpstreamPolicy>);

impl reqwest::dns::Resolve for GuardedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let policy = self.0.clone();
        Box::pin(async move {
            let host = name.as_str().to_owned();
            let found: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let allowed: Vec<SocketAddr> = found.iter().copied().filter(|a| policy.allows(a.ip())).collect();
            match (allowed.is_empty(), found.first()) {
                (false, _) => Ok(Box::new(allowed.into_iter()) as reqwest::dns::Addrs),
                (true, Some(first)) => Err(Box::new(Refused::NotPublic(first.ip())) as _),
                (true, None) => Err(Box::new(Refused::Unresolved(host)) as _),
            }
        })
    }
}

/// The policy's refusal somewhere in an error's causes (e.g. a failed upstream request).
pub fn refusal_in<'a>(error: &'a (dyn std::error::Error + 'static)) -> Option<&'a Refused> {
    let mut cause = Some(error);
    while let Some(e) = cause {
        if let Some(refused) = e.downcast_ref::<Refused>() {
            return Some(refused);
        }
        cause = e.source();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_public_addresses_are_allowed_by_default() {
        let policy = UpstreamPolicy::default();
        for private in [
            "127.0.0.1",
            "10.0.0.1",
            "172.16.5.4",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "::1",
            "::",
            "fd00::1",
            "fe80::1",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
            "64:ff9b::a9fe:a9fe",
        ] {
            assert!(!policy.allows(private.parse().unwrap()), "{private}");
        }
        for public in ["93.184.216.34", "1.1.1.1", "2606:4700:4700::1111", "::ffff:8.8.8.8"] {
            assert!(policy.allows(public.parse().unwrap()), "{public}");
        }
    }

    #[test]
    fn the_operator_can_open_private_networks() {
        let policy = UpstreamPolicy::parse(" 10.0.0.0/8, 127.0.0.1 ,").unwrap();
        assert!(policy.allows("10.1.2.3".parse().unwrap()));
        assert!(policy.allows("127.0.0.1".parse().unwrap()));
        assert!(!policy.allows("127.0.0.2".parse().unwrap()));
        assert!(!policy.allows("169.254.169.254".parse().unwrap()));
        assert!(UpstreamPolicy::parse("10.0.0.0/33").is_err());
        assert!(UpstreamPolicy::parse("intranet").is_err());
    }

    #[test]
    fn literal_hosts_are_checked_without_resolution() {
        let policy = UpstreamPolicy::default();
        assert!(policy.check_literal("http://[::1]:8080/mcp").is_err());
        assert!(policy.check_literal("http://169.254.169.254/latest").is_err());
        assert!(policy.check_literal("https://93.184.216.34/mcp").is_ok());
        assert!(policy.check_literal("https://mcp.example.com/mcp").is_ok(), "names go to the resolver");
    }
}
