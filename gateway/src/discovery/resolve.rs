//! Turning an advertised host into an address to connect to: the
//! `address_map` override first, then asynchronous DNS. Kylin advertises
//! `hostname -f` by default, which may not resolve from the gateway.

use std::collections::BTreeMap;
use std::net::SocketAddr;

/// Resolves advertised addresses.
#[derive(Clone, Debug, Default)]
pub struct Resolver {
    /// `host:port` or `host` → `ip:port`, `host:port` or `ip`/`host`.
    address_map: BTreeMap<String, String>,
}

impl Resolver {
    pub fn new(address_map: BTreeMap<String, String>) -> Resolver {
        Resolver { address_map }
    }

    /// The target to connect to after `address_map`, before DNS.
    pub fn mapped(&self, host: &str, port: u16) -> (String, u16) {
        let full = format!("{host}:{port}");
        let target = self
            .address_map
            .get(&full)
            .or_else(|| self.address_map.get(host))
            .map(String::as_str);
        match target {
            Some(t) => match super::split_host_port(t) {
                Some((h, p)) => (h.to_string(), p),
                None => (t.to_string(), port),
            },
            None => (host.to_string(), port),
        }
    }

    /// Resolves without blocking the runtime. The error is a short
    /// sentence for `/admin/nodes`.
    pub async fn resolve(&self, host: &str, port: u16) -> Result<SocketAddr, String> {
        let (host, port) = self.mapped(host, port);
        if let Ok(ip) = host.parse::<std::net::IpAddr>() {
            return Ok(SocketAddr::new(ip, port));
        }
        let lookup = tokio::time::timeout(
            std::time::Duration::from_secs(5),
            tokio::net::lookup_host((host.as_str(), port)),
        )
        .await;
        match lookup {
            Ok(Ok(mut addrs)) => addrs
                .next()
                .ok_or_else(|| format!("'{host}' resolved to no address")),
            Ok(Err(e)) => Err(format!("cannot resolve '{host}': {e}")),
            Err(_) => Err(format!("resolving '{host}' timed out")),
        }
    }
}
