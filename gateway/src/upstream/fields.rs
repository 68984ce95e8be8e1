//! An answer's header fields as its node sent them: the head's bytes and
//! where each end-to-end field lies in them, not parsed into a map. The
//! fields of the node's connection (hop-by-hop, RFC 9110 §7.6.1, and any
//! its `Connection` names) are left out while the head is parsed. The
//! gateway's own HTTP/1.1 server writes the fields straight from these
//! bytes; hyper, which serves TLS, h2c and handed-over connections, gets
//! them as a `HeaderMap` ([`NodeFields::into_header_map`]).
//!
//! Why not a map: building one hashes every name and checks every value
//! byte again after httparse did, and the answer's map was read only to be
//! written out again (about 4k instructions of a 28k request).

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue};
use smallvec::SmallVec;

/// What the proxy needs to know of a kept field. Its number is what a
/// [`Field`] stores (two bits).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Other = 0,
    ContentLength = 1,
    Date = 2,
    SetCookie = 3,
}

/// Every kind at its number.
const KINDS: [Kind; 4] = [
    Kind::Other,
    Kind::ContentLength,
    Kind::Date,
    Kind::SetCookie,
];

/// What a field name is to the proxy, matched without regard to case.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Class {
    /// Passed on.
    EndToEnd(Kind),
    Connection,
    TransferEncoding,
    /// Another field of the connection (`Keep-Alive`, `TE`, `Upgrade`, ...).
    HopByHop,
    /// `Expect` (a request's; passed on in an answer).
    Expect,
}

/// The class of a field name. Dispatched on the length first: most names
/// are compared with one candidate at most.
pub fn classify(name: &[u8]) -> Class {
    let is = |candidate: &[u8]| name.eq_ignore_ascii_case(candidate);
    match name.len() {
        2 if is(b"te") => Class::HopByHop,
        4 if is(b"date") => Class::EndToEnd(Kind::Date),
        6 if is(b"expect") => Class::Expect,
        7 if is(b"trailer") || is(b"upgrade") => Class::HopByHop,
        10 if is(b"connection") => Class::Connection,
        10 if is(b"set-cookie") => Class::EndToEnd(Kind::SetCookie),
        10 if is(b"keep-alive") => Class::HopByHop,
        14 if is(b"content-length") => Class::EndToEnd(Kind::ContentLength),
        16 if is(b"proxy-connection") => Class::HopByHop,
        17 if is(b"transfer-encoding") => Class::TransferEncoding,
        18 if is(b"proxy-authenticate") => Class::HopByHop,
        19 if is(b"proxy-authorization") => Class::HopByHop,
        _ => Class::EndToEnd(Kind::Other),
    }
}

/// Where one field lies in the head's bytes (at most 64 KiB). Eight bytes,
/// so that a dozen fields fit inline in an answer that is moved from phase
/// to phase.
#[derive(Clone, Copy, Debug)]
struct Field {
    name_at: u16,
    /// The name's length, and its [`Kind`] in the top two bits.
    name: u16,
    value_at: u16,
    value_len: u16,
}

const KIND_SHIFT: u32 = 14;
/// Names up to this long are noted.
const MAX_NAME: usize = (1 << KIND_SHIFT) - 1;

impl Field {
    fn name_len(self) -> usize {
        usize::from(self.name) & MAX_NAME
    }

    fn kind(self) -> Kind {
        KINDS[usize::from(self.name >> KIND_SHIFT)]
    }

    fn name(self, head: &[u8]) -> &[u8] {
        let at = usize::from(self.name_at);
        &head[at..at + self.name_len()]
    }

    fn value(self) -> std::ops::Range<usize> {
        let at = usize::from(self.value_at);
        at..at + usize::from(self.value_len)
    }
}

/// A node answer's end-to-end header fields, in the order it sent them.
/// Empty for the gateway's own answers.
#[derive(Debug, Default)]
pub struct NodeFields {
    head: Bytes,
    fields: SmallVec<[Field; 12]>,
    /// Some field is a `Set-Cookie`.
    cookies: bool,
}

/// A field that cannot be noted: past 64 KiB of head, or a name over 16 KiB.
#[derive(Debug)]
pub struct TooLong;

/// Collects the fields of a head while httparse borrows its bytes.
pub struct Collector {
    base: usize,
    fields: SmallVec<[Field; 12]>,
    cookies: bool,
}

impl Collector {
    /// For a head whose bytes begin at `head`.
    pub fn new(head: &[u8]) -> Collector {
        Collector {
            base: head.as_ptr() as usize,
            fields: SmallVec::new(),
            cookies: false,
        }
    }

    /// Keeps a field of `kind`; `name` and `value` lie in the head.
    pub fn keep(&mut self, name: &[u8], value: &[u8], kind: Kind) -> Result<(), TooLong> {
        let at = |part: &[u8]| {
            (part.as_ptr() as usize)
                .checked_sub(self.base)
                .and_then(|at| u16::try_from(at).ok())
                .ok_or(TooLong)
        };
        if name.len() > MAX_NAME {
            return Err(TooLong);
        }
        let field = Field {
            name_at: at(name)?,
            name: name.len() as u16 | (kind as u16) << KIND_SHIFT,
            value_at: at(value)?,
            value_len: u16::try_from(value.len()).map_err(|_| TooLong)?,
        };
        self.cookies |= kind == Kind::SetCookie;
        self.fields.push(field);
        Ok(())
    }

    /// Leaves out the kept fields `drop` says so of, given their names and
    /// kinds. `head` is the same bytes as at [`Collector::new`].
    pub fn drop_where(&mut self, head: &[u8], drop: impl Fn(&[u8], Kind) -> bool) {
        self.fields.retain(|f| !drop(f.name(head), f.kind()));
    }

    /// The fields, once the head's bytes are taken off the buffer.
    pub fn finish(self, head: Bytes) -> NodeFields {
        NodeFields {
            head,
            fields: self.fields,
            cookies: self.cookies,
        }
    }
}

impl NodeFields {
    pub fn is_empty(&self) -> bool {
        self.fields.is_empty()
    }

    /// Each field's name (as the node spelled it), value and kind.
    pub fn iter(&self) -> impl Iterator<Item = (&[u8], &[u8], Kind)> {
        self.fields
            .iter()
            .map(|&f| (f.name(&self.head), &self.head[f.value()], f.kind()))
    }

    /// Whether a `Set-Cookie` field sets cookie `name`.
    pub fn sets_cookie(&self, name: &str) -> bool {
        self.cookies
            && self
                .iter()
                .any(|(_, value, kind)| kind == Kind::SetCookie && sets_cookie(value, name))
    }

    /// The fields in a map, followed by `then`'s. httparse accepted exactly
    /// the names and values `http` does (RFC 9110 tokens; visible bytes,
    /// spaces and tabs), so none is lost here; values are slices of the
    /// head, not copies.
    pub fn into_header_map(self, then: HeaderMap) -> HeaderMap {
        if self.fields.is_empty() {
            return then;
        }
        let mut map = HeaderMap::with_capacity(self.fields.len() + then.len());
        for &f in &self.fields {
            let name = HeaderName::from_bytes(f.name(&self.head));
            let value = HeaderValue::from_maybe_shared(self.head.slice(f.value()));
            if let (Ok(name), Ok(value)) = (name, value) {
                map.append(name, value);
            }
        }
        let mut last = None;
        for (name, value) in then {
            // `None`: another value of the name before.
            let name = name.or_else(|| last.clone());
            if let Some(name) = name {
                map.append(name.clone(), value);
                last = Some(name);
            }
        }
        map
    }
}

/// Whether a `Set-Cookie` value sets cookie `name`.
fn sets_cookie(value: &[u8], name: &str) -> bool {
    value
        .strip_prefix(name.as_bytes())
        .is_some_and(|rest| rest.first() == Some(&b'='))
}

#[cfg(test)]
#[test]
fn every_kind_is_at_its_number() {
    for kind in KINDS {
        assert_eq!(KINDS[kind as usize], kind);
    }
}
