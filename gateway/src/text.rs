//! Writing values as text where it happens for every request (the
//! `X-Forwarded-For` value, the access log line): by hand or with `itoa`
//! and `ryu`, since `fmt`'s machinery costs hundreds to thousands of
//! instructions per value. Each writer's output is the same as its
//! `Display` or `Debug` form, which its tests check.

use std::io::Write;
use std::net::{IpAddr, SocketAddr};

/// `ip` as `Display` writes it; IPv4 by hand.
pub fn push_ip(buf: &mut Vec<u8>, ip: IpAddr) {
    match ip {
        IpAddr::V4(v4) => {
            for (i, octet) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    buf.push(b'.');
                }
                if octet >= 100 {
                    buf.push(b'0' + octet / 100);
                }
                if octet >= 10 {
                    buf.push(b'0' + octet / 10 % 10);
                }
                buf.push(b'0' + octet % 10);
            }
        }
        IpAddr::V6(_) => {
            let _ = write!(buf, "{ip}");
        }
    }
}

/// `address` as `Display` writes it (`ip:port`, `[ip]:port` for IPv6).
pub fn push_socket_addr(buf: &mut Vec<u8>, address: SocketAddr) {
    match address {
        SocketAddr::V4(v4) => {
            push_ip(buf, IpAddr::V4(*v4.ip()));
            buf.push(b':');
            push_integer(buf, v4.port());
        }
        SocketAddr::V6(_) => {
            let _ = write!(buf, "{address}");
        }
    }
}

pub fn push_integer(buf: &mut Vec<u8>, value: impl itoa::Integer) {
    buf.extend_from_slice(itoa::Buffer::new().format(value).as_bytes());
}

/// `value` as `Debug` writes a `str`: quoted, with escapes. Text of
/// printable ASCII without quotes or backslashes (paths, node labels)
/// needs none and is copied.
pub fn push_debug_str(buf: &mut Vec<u8>, value: &str) {
    if value
        .bytes()
        .all(|b| (b' '..=b'~').contains(&b) && b != b'"' && b != b'\\')
    {
        buf.push(b'"');
        buf.extend_from_slice(value.as_bytes());
        buf.push(b'"');
    } else {
        let _ = write!(buf, "{value:?}");
    }
}

/// `value` as `Debug` writes an `f64`. `ryu` writes the same shortest
/// digits; its switch to exponents differs below 1e-4, so values outside
/// [1e-3, 1e15) take `fmt`.
pub fn push_debug_f64(buf: &mut Vec<u8>, value: f64) {
    if (1e-3..1e15).contains(&value) {
        buf.extend_from_slice(ryu::Buffer::new().format_finite(value).as_bytes());
    } else {
        let _ = write!(buf, "{value:?}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_read_as_display_writes_them() {
        for ip in [
            "0.0.0.0",
            "127.0.0.1",
            "10.9.99.100",
            "255.255.255.255",
            "192.168.10.1",
            "::1",
            "::ffff:10.0.0.1",
            "2001:db8::7",
        ] {
            let ip: IpAddr = ip.parse().unwrap();
            let mut text = Vec::new();
            push_ip(&mut text, ip);
            assert_eq!(String::from_utf8(text).unwrap(), ip.to_string());
            for port in [0, 7, 80, 7070, 65535] {
                let address = SocketAddr::new(ip, port);
                let mut text = Vec::new();
                push_socket_addr(&mut text, address);
                assert_eq!(String::from_utf8(text).unwrap(), address.to_string());
            }
        }
    }

    #[test]
    fn strings_read_as_debug_writes_them() {
        for value in [
            "",
            "/kylin/api/query",
            "/kylin/api/%22q%22?x=1",
            "connect failed: \"refused\"",
            "back\\slash",
            "tab\there",
            "caf\u{e9}",
            "~ !",
        ] {
            let mut text = Vec::new();
            push_debug_str(&mut text, value);
            assert_eq!(String::from_utf8(text).unwrap(), format!("{value:?}"));
        }
    }

    /// Durations in milliseconds as the access log writes them: every
    /// microsecond count up to 10 s, then a spread up to days, and the
    /// edges of the `ryu` range.
    #[test]
    fn floats_read_as_debug_writes_them() {
        let micros = (0..10_000_000u64)
            .step_by(7)
            .chain((0..2_000).map(|i| i * 48_611_113));
        let edges = [0.0, 1e-5, 0.999e-3, 1e-3, 1.0, 1e14, 0.99e15, 1e15, 1e17];
        let values = micros
            .map(|us| std::time::Duration::from_micros(us).as_secs_f64() * 1000.0)
            .chain(edges);
        for value in values {
            let mut text = Vec::new();
            push_debug_f64(&mut text, value);
            assert_eq!(String::from_utf8(text).unwrap(), format!("{value:?}"));
        }
    }
}
