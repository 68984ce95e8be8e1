//! Header rules at the proxy boundary: hop-by-hop headers are dropped both
//! ways (RFC 9110 §7.6.1, including those named in `Connection`), and
//! `X-Forwarded-For/-Proto/-Host` are set on the way up. Everything else
//! passes through untouched.

use std::net::IpAddr;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

use crate::upstream::fields::{self, Class};

// A static, not a const: a const array of names is built and dropped
// again at every use.
static HOP_BY_HOP: [HeaderName; 8] = [
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
/// `Transfer-Encoding` goes too: hyper frames bodies itself. True when
/// anything was removed.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) -> bool {
    // One pass over the few names a message has tells which of the ten
    // listed names are present; only those are removed (each removal hashes).
    // Most requests carry none; responses usually just `Connection`.
    let mut present = 0u16;
    for name in headers.keys() {
        if let Some(i) = hop_by_hop_index(name) {
            present |= 1 << i;
        }
    }
    if present == 0 {
        return false;
    }
    // The names `Connection` lists go too (a cheap copy of the value, so the
    // map can change while its tokens are read; `&str` keys need no
    // allocation, and an invalid name removes nothing).
    if let Some(connection) = headers.get(header::CONNECTION).cloned() {
        for name in connection.to_str().unwrap_or("").split(',') {
            let name = name.trim();
            // `close` and `keep-alive`, nearly every value seen, name no
            // header left to remove: skip parsing and hashing them.
            if !name.is_empty()
                && !name.eq_ignore_ascii_case("close")
                && !name.eq_ignore_ascii_case("keep-alive")
            {
                headers.remove(name);
            }
        }
    }
    for (i, name) in HOP_BY_HOP.iter().enumerate() {
        if present & (1 << i) != 0 {
            headers.remove(name);
        }
    }
    if present & (1 << HOP_BY_HOP.len()) != 0 {
        headers.remove(header::TRANSFER_ENCODING);
    }
    true
}

/// The place of a hop-by-hop name in [`HOP_BY_HOP`] (one past it for
/// `Transfer-Encoding`). Which names are hop-by-hop is
/// [`fields::classify`]'s to say (the node's answers are read by it): its
/// dispatch on the length turns nearly every name away at once, and only
/// a hop-by-hop name is looked for in the list.
fn hop_by_hop_index(name: &HeaderName) -> Option<usize> {
    match fields::classify(name.as_str().as_bytes()) {
        Class::EndToEnd(_) | Class::Expect => None,
        Class::TransferEncoding => Some(HOP_BY_HOP.len()),
        Class::Connection | Class::HopByHop => HOP_BY_HOP.iter().position(|h| h == name),
    }
}

/// Rewrites a request head for upstream: hop-by-hop headers out,
/// `X-Forwarded-*` set, and a `Host` kept (taken from the URI's authority
/// for HTTP/2 requests, which carry none).
pub fn rewrite_request_head(headers: &mut HeaderMap, uri: &http::Uri, client: IpAddr, tls: bool) {
    let proto = if tls { "https" } else { "http" };
    let sent_host = headers.get(header::HOST).cloned();
    let stripped = strip_hop_by_hop(headers);
    let host = sent_host.clone().or_else(|| {
        uri.authority()
            .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
    });
    set_forwarded(headers, client, proto, host.clone());
    // Looked up again only when it may be missing: none was sent, or its
    // `Connection` named it.
    if (sent_host.is_none() || stripped)
        && !headers.contains_key(header::HOST)
        && let Some(host) = host
    {
        headers.insert(header::HOST, host);
    }
}

/// Appends the client to `X-Forwarded-For` and sets proto and host.
pub fn set_forwarded(
    headers: &mut HeaderMap,
    client: IpAddr,
    proto: &'static str,
    host: Option<HeaderValue>,
) {
    // One lookup for reading and setting; one buffer, written in place:
    // the header value takes it over as is.
    let mut xff = Vec::with_capacity(48);
    let entry = headers.entry(X_FORWARDED_FOR);
    if let header::Entry::Occupied(sent) = &entry
        && let sent = sent.get().as_bytes()
        && !sent.trim_ascii().is_empty()
    {
        xff.extend_from_slice(sent);
        xff.extend_from_slice(b", ");
    }
    crate::text::push_ip(&mut xff, client);
    if let Ok(value) = HeaderValue::from_maybe_shared(bytes::Bytes::from(xff)) {
        match entry {
            header::Entry::Occupied(mut sent) => {
                sent.insert(value);
            }
            header::Entry::Vacant(place) => {
                place.insert(value);
            }
        }
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

/// The value of query parameter `name` (raw, not decoded).
pub fn find_query_param<'a>(query: Option<&'a str>, name: &str) -> Option<&'a str> {
    query?
        .split('&')
        .filter_map(|pair| pair.split_once('=').or(Some((pair, ""))))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// Why an HTTP/2 request head is malformed in ways the `h2` crate lets
/// through (RFC 9113 §8.2.1, §8.3.1), or `None`: a `Host` header that names
/// another authority than `:authority`, or a field value with leading or
/// trailing whitespace. Such a request is answered 400, never forwarded:
/// a node (and any proxy after it) could read it differently.
pub fn malformed_h2_head(parts: &http::request::Parts) -> Option<&'static str> {
    if let (Some(authority), Some(host)) = (parts.uri.authority(), parts.headers.get(header::HOST))
        && !host
            .as_bytes()
            .eq_ignore_ascii_case(authority.as_str().as_bytes())
    {
        return Some("Host does not match :authority");
    }
    let padded = |v: &[u8]| {
        matches!(v.first(), Some(b' ' | b'\t')) || matches!(v.last(), Some(b' ' | b'\t'))
    };
    if parts.headers.values().any(|v| padded(v.as_bytes())) {
        return Some("a field value has leading or trailing whitespace");
    }
    None
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
    fn every_hop_by_hop_name_is_found_at_its_place() {
        for (i, name) in HOP_BY_HOP.iter().enumerate() {
            assert_eq!(hop_by_hop_index(name), Some(i), "{name}");
        }
        assert_eq!(
            hop_by_hop_index(&header::TRANSFER_ENCODING),
            Some(HOP_BY_HOP.len())
        );
        assert_eq!(hop_by_hop_index(&header::HOST), None);
        assert_eq!(hop_by_hop_index(&header::EXPECT), None);
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
    fn a_rewritten_head_keeps_its_host_even_when_connection_names_it() {
        let uri: http::Uri = "/kylin/api/query".parse().unwrap();
        let mut h = HeaderMap::new();
        h.insert(header::HOST, HeaderValue::from_static("gw:7070"));
        h.insert(header::CONNECTION, HeaderValue::from_static("Host, x-a"));
        h.insert("x-a", HeaderValue::from_static("1"));
        h.append(X_FORWARDED_FOR, HeaderValue::from_static("10.0.0.9"));
        h.append(X_FORWARDED_FOR, HeaderValue::from_static("10.0.0.8"));
        rewrite_request_head(&mut h, &uri, [10, 0, 0, 1].into(), false);
        assert_eq!(h[header::HOST], "gw:7070");
        assert!(!h.contains_key("x-a") && !h.contains_key(header::CONNECTION));
        let xff: Vec<_> = h.get_all(X_FORWARDED_FOR).iter().collect();
        assert_eq!(
            xff,
            ["10.0.0.9, 10.0.0.1"],
            "the first value, then the client"
        );
        assert_eq!(h[X_FORWARDED_HOST], "gw:7070");

        // An HTTP/2 request names its host in the URI only.
        let uri: http::Uri = "https://gw:7443/kylin/api/query".parse().unwrap();
        let mut h = HeaderMap::new();
        rewrite_request_head(&mut h, &uri, [10, 0, 0, 1].into(), true);
        assert_eq!(h[header::HOST], "gw:7443");
        assert_eq!(h[X_FORWARDED_PROTO], "https");
        assert_eq!(h[X_FORWARDED_FOR], "10.0.0.1");
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
    }

    #[test]
    fn messages_without_hop_by_hop_headers_are_left_alone() {
        let mut headers = HeaderMap::new();
        headers.insert(header::HOST, HeaderValue::from_static("kylin:7070"));
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        let before = headers.clone();
        strip_hop_by_hop(&mut headers);
        assert_eq!(headers, before);
        headers.insert(
            header::TRANSFER_ENCODING,
            HeaderValue::from_static("chunked"),
        );
        strip_hop_by_hop(&mut headers);
        assert_eq!(headers, before);
    }

    fn h2_parts(authority: &str, headers: &[(&str, &str)]) -> http::request::Parts {
        let mut request = http::Request::get(format!("https://{authority}/kylin/api/query"))
            .version(http::Version::HTTP_2);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        request.body(()).unwrap().into_parts().0
    }

    #[test]
    fn h2_heads_with_a_mismatched_host_or_padded_values_are_malformed() {
        assert_eq!(malformed_h2_head(&h2_parts("kylin:7070", &[])), None);
        assert_eq!(
            malformed_h2_head(&h2_parts("kylin:7070", &[("host", "KYLIN:7070")])),
            None
        );
        assert!(malformed_h2_head(&h2_parts("kylin:7070", &[("host", "evil")])).is_some());
        assert!(malformed_h2_head(&h2_parts("kylin", &[("x-a", " padded")])).is_some());
        assert!(malformed_h2_head(&h2_parts("kylin", &[("x-a", "padded\t")])).is_some());
        assert_eq!(
            malformed_h2_head(&h2_parts("kylin", &[("x-a", "in side")])),
            None
        );
    }
}
