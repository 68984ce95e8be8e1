//! Choosing a certificate by the client's SNI name: an exact name first,
//! then a `*.` wildcard covering exactly one more label (as browsers and
//! RFC 6125 read one), else the default. Pure and allocation-free for
//! lower-case names, so it can run on every handshake.

use std::collections::HashMap;

/// SNI names (or `*.` patterns) → index of the certificate that answers
/// them. The first certificate listing a name wins.
#[derive(Debug, Default)]
pub struct SniTable {
    exact: HashMap<Box<str>, usize>,
    /// `*.example.com` is stored as `example.com`.
    wildcard: HashMap<Box<str>, usize>,
}

impl SniTable {
    /// Builds the table from `(certificate index, its names)`, in order.
    pub fn build<'a>(entries: impl IntoIterator<Item = (usize, &'a [String])>) -> SniTable {
        let mut table = SniTable::default();
        for (index, names) in entries {
            for name in names {
                let name = name.to_ascii_lowercase();
                let map = match name.strip_prefix("*.") {
                    Some(parent) => table.wildcard.entry(parent.into()),
                    None => table.exact.entry(name.into()),
                };
                map.or_insert(index);
            }
        }
        table
    }

    /// The certificate for `server_name`, or `None` for the default
    /// (no SNI, or a name nothing lists).
    pub fn select(&self, server_name: Option<&str>) -> Option<usize> {
        let name = server_name?;
        if name.bytes().any(|b| b.is_ascii_uppercase()) {
            // rustls hands over names as the client sent them; rare enough
            // to pay an allocation for.
            return self.select_lower(&name.to_ascii_lowercase());
        }
        self.select_lower(name)
    }

    fn select_lower(&self, name: &str) -> Option<usize> {
        let name = name.strip_suffix('.').unwrap_or(name);
        if let Some(&index) = self.exact.get(name) {
            return Some(index);
        }
        let (_, parent) = name.split_once('.')?;
        self.wildcard.get(parent).copied()
    }
}

/// Whether `name` (lower case) is a DNS name, or `*.` followed by one with
/// at least two labels (`*.com` would cover a whole top-level domain).
pub fn valid_pattern(name: &str) -> bool {
    match name.strip_prefix("*.") {
        Some(parent) => valid_dns_name(parent) && parent.contains('.'),
        None => valid_dns_name(name),
    }
}

fn valid_dns_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn exact_names_win_over_wildcards_and_unknown_names_get_the_default() {
        let a = names(&["*.example.com"]);
        let b = names(&["kylin.example.com", "other.test"]);
        let table = SniTable::build([(1, &a[..]), (2, &b[..])]);
        assert_eq!(table.select(Some("kylin.example.com")), Some(2));
        assert_eq!(table.select(Some("KYLIN.Example.com")), Some(2));
        assert_eq!(table.select(Some("other.test.")), Some(2));
        assert_eq!(table.select(Some("web.example.com")), Some(1));
        assert_eq!(table.select(Some("unknown.test")), None);
        assert_eq!(table.select(None), None);
    }

    #[test]
    fn a_wildcard_covers_exactly_one_label() {
        let a = names(&["*.example.com"]);
        let table = SniTable::build([(0, &a[..])]);
        assert_eq!(table.select(Some("a.example.com")), Some(0));
        assert_eq!(table.select(Some("example.com")), None);
        assert_eq!(table.select(Some("a.b.example.com")), None);
        assert_eq!(table.select(Some("aexample.com")), None);
    }

    #[test]
    fn the_first_certificate_listing_a_name_wins() {
        let a = names(&["x.test"]);
        let b = names(&["x.test"]);
        let table = SniTable::build([(3, &a[..]), (4, &b[..])]);
        assert_eq!(table.select(Some("x.test")), Some(3));
    }

    #[test]
    fn patterns_are_dns_names_or_narrow_wildcards() {
        for good in ["kylin.example.com", "localhost", "*.example.com", "a-b.c1"] {
            assert!(valid_pattern(good), "{good}");
        }
        for bad in [
            "",
            "*.com",
            "a..b",
            "-a.b",
            "a_b.c",
            "*",
            "a.*.c",
            "Kylin.com",
            "10.0.0.1:7070",
        ] {
            assert!(!valid_pattern(bad), "{bad}");
        }
    }
}
