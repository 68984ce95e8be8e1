//! Header rules at the proxy boundary: hop-by-hop headers are dropped both
//! ways (RFC 9110 §7.6.1, including those named in `Connection`), and
//! `X-Forwarded-For/-Proto/-Host` are set on the way up. Everything else
//! passes through untouched.

use std::net::IpAddr;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

const HOP_BY_HOP: [HeaderName; 8] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::UPGRADE,
];

pub const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
pub const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
pub const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");

/// Removes hop-by-hop headers, including any the `Connection` header names.
/// `Transfer-Encoding` goes too: hyper frames bodies itself.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // Fast path: most requests carry no Connection header.
    if let Some(connection) = headers.get(header::CONNECTION) {
        let named: Vec<HeaderName> = connection
            .to_str()
            .unwrap_or("")
            .split(',')
            .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
            .collect();
        for name in named {
            headers.remove(name);
        }
    }
    for name in &HOP_BY_HOP {
        headers.remove(name);
    }
    headers.remove(header::TRANSFER_ENCODING);
}

/// Appends the client to `X-Forwarded-For` and sets proto and host.
pub fn set_forwarded(
    headers: &mut HeaderMap,
    client: IpAddr,
    proto: &'static str,
    host: Option<HeaderValue>,
) {
    use std::io::Write;
    // One buffer, written in place: the header value takes it over as is.
    let mut xff = Vec::with_capacity(48);
    if let Some(existing) = headers
        .get(X_FORWARDED_FOR)
        .map(HeaderValue::as_bytes)
        .filter(|v| !v.trim_ascii().is_empty())
    {
        xff.extend_from_slice(existing);
        xff.extend_from_slice(b", ");
    }
    let _ = write!(xff, "{client}");
    if let Ok(value) = HeaderValue::from_maybe_shared(bytes::Bytes::from(xff)) {
        headers.insert(X_FORWARDED_FOR, value);
    }
    headers.insert(X_FORWARDED_PROTO, HeaderValue::from_static(proto));
    if let Some(host) = host {
        headers.insert(X_FORWARDED_HOST, host);
    }
}

/// The value of cookie `name` in the request's `Cookie` headers.
pub fn find_cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.trim_matches('"'))
}

/// Whether a response sets cookie `name`.
pub fn sets_cookie(headers: &HeaderMap, name: &str) -> bool {
    headers.get_all(header::SET_COOKIE).iter().any(|v| {
        v.as_bytes()
            .strip_prefix(name.as_bytes())
            .is_some_and(|rest| rest.first() == Some(&b'='))
    })
}

/// The value of query parameter `name` (raw, not decoded).
pub fn find_query_param<'a>(query: Option<&'a str>, name: &str) -> Option<&'a str> {
    query?
        .split('&')
        .filter_map(|pair| pair.split_once('=').or(Some((pair, ""))))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strips_hop_by_hop_and_connection_named_headers() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, x-secret"),
        );
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert("x-secret", HeaderValue::from_static("1"));
        h.insert(header::TE, HeaderValue::from_static("trailers"));
        h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        h.insert(
            header::PROXY_AUTHORIZATION,
            HeaderValue::from_static("Basic x"),
        );
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Basic a2F5bGluOnB3"),
        );
        h.insert(
            header::ACCEPT,
            HeaderValue::from_static("application/vnd.apache.kylin-v2+json"),
        );
        strip_hop_by_hop(&mut h);
        let left: Vec<_> = h.keys().map(|k| k.as_str()).collect();
        assert_eq!(left, vec!["authorization", "accept"]);
    }

    #[test]
    fn appends_forwarded_for() {
        let mut h = HeaderMap::new();
        set_forwarded(
            &mut h,
            [10, 0, 0, 1].into(),
            "http",
            Some(HeaderValue::from_static("gw:7070")),
        );
        set_forwarded(&mut h, [127, 0, 0, 1].into(), "https", None);
        assert_eq!(h[X_FORWARDED_FOR], "10.0.0.1, 127.0.0.1");
        assert_eq!(h[X_FORWARDED_PROTO], "https");
        assert_eq!(h[X_FORWARDED_HOST], "gw:7070");
    }

    #[test]
    fn finds_cookies_and_params() {
        let mut h = HeaderMap::new();
        h.append(
            header::COOKIE,
            HeaderValue::from_static("a=1; JSESSIONID=abc"),
        );
        h.append(
            header::COOKIE,
            HeaderValue::from_static("KYLIN_GW_NODE=\"ff\""),
        );
        assert_eq!(find_cookie(&h, "JSESSIONID"), Some("abc"));
        assert_eq!(find_cookie(&h, "KYLIN_GW_NODE"), Some("ff"));
        assert_eq!(find_cookie(&h, "JSESSION"), None);
        assert_eq!(
            find_query_param(Some("a=1&project=learn%20kylin&flag"), "project"),
            Some("learn%20kylin")
        );
        assert_eq!(find_query_param(Some("flag"), "flag"), Some(""));
        let mut r = HeaderMap::new();
        r.append(
            header::SET_COOKIE,
            HeaderValue::from_static("JSESSIONID=x; Path=/kylin"),
        );
        assert!(sets_cookie(&r, "JSESSIONID"));
        assert!(!sets_cookie(&r, "JSESSION"));
    }
}
