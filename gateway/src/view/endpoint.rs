//! How the gateway reaches a node, decided once per published view: plain
//! HTTP at its resolved address, or TLS when it registered an `sslPort`
//! (or `upstream.tls` says every node). A TLS node is reached at its TLS
//! port on the resolved IP (the plain port when it registered none) and
//! verified against its advertised host, not the IP it resolved to.

use std::net::SocketAddr;

use http::uri::Authority;

use super::Node;
use crate::upstream::Target;

/// Where upstream requests for a node go.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Endpoint {
    pub tls: bool,
    /// `ip:port`, or `host@ip:port` for TLS (see
    /// [`crate::tls::tls_authority`]).
    pub authority: Authority,
    /// What the node's connection pool connects to.
    pub target: Target,
}

/// The endpoint of `node`, `None` while its address is unresolved.
pub fn endpoint(node: &Node, tls_everywhere: bool) -> Option<Endpoint> {
    let addr = node.addr?;
    let tls_port = match (node.ssl_port, tls_everywhere) {
        (Some(port), _) => port,
        (None, true) => addr.port(),
        (None, false) => {
            return Some(Endpoint {
                tls: false,
                authority: Authority::try_from(addr.to_string()).ok()?,
                target: Target {
                    addr,
                    tls_name: None,
                },
            });
        }
    };
    let addr = SocketAddr::new(addr.ip(), tls_port);
    Some(Endpoint {
        tls: true,
        authority: crate::tls::tls_authority(&node.host, addr)?,
        target: Target {
            addr,
            tls_name: Some(node.host.clone()),
        },
    })
}
