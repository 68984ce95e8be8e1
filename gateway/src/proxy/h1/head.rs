//! Request heads in and response heads out for the gateway's own HTTP/1.1
//! server ([`super`]), without I/O. A request is taken here only when it
//! is HTTP/1.1 and its whole body came with its head; any other shape
//! (HTTP/1.0, a transfer coding, `Expect`, CONNECT, a body still on its
//! way, a malformed or oversized head) is left in the buffer for hyper,
//! which serves it or answers 400, 414 or 431 as it always did.

use std::cell::RefCell;
use std::mem::MaybeUninit;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::{Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, StatusCode, Uri, Version};
use smallvec::SmallVec;

use crate::proxy::Answer;
use crate::upstream::fields::{self, Class, Kind};
use crate::upstream::wire::{Facts, push_header};

/// Headers a request head may carry (hyper's server allows 100).
const MAX_HEADERS: usize = 100;

/// What the front of a connection's read buffer holds.
// Returned once per request and matched at once: boxing the request
// would cost an allocation per request.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum Head {
    /// Not a whole head yet, and under the size limit.
    Partial,
    /// A request served here, taken off the buffer with its body.
    Ready(Request),
    /// A request left to hyper, and why; the buffer is as it was.
    Elsewhere(&'static str),
}

/// A request head and its whole body.
#[derive(Debug)]
pub struct Request {
    pub parts: http::request::Parts,
    pub body: Bytes,
    /// The client asked for the connection to close after the answer.
    pub close: bool,
}

/// Takes a request off the front of `buf` when one is there whole, head
/// (at most `max_head` bytes) and body.
pub fn take_request(buf: &mut BytesMut, max_head: usize) -> Head {
    let mut headers = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
    let mut request = httparse::Request::new(&mut []);
    let parsed = httparse::ParserConfig::default().parse_request_with_uninit_headers(
        &mut request,
        buf,
        &mut headers,
    );
    let head_len = match parsed {
        Ok(httparse::Status::Complete(len)) if len <= max_head => len,
        Ok(httparse::Status::Partial) if buf.len() < max_head => return Head::Partial,
        Ok(_) => return Head::Elsewhere("head too large"),
        Err(_) => return Head::Elsewhere("malformed head"),
    };
    if request.version != Some(1) {
        return Head::Elsewhere("not HTTP/1.1");
    }
    let method = match Method::from_bytes(request.method.unwrap_or_default().as_bytes()) {
        Ok(method) if method != Method::CONNECT => method,
        _ => return Head::Elsewhere("method"),
    };
    // Values are slices of the head's bytes, taken without copying: their
    // places are noted while httparse borrows the buffer.
    let base = buf.as_ptr() as usize;
    let path = request.path.unwrap_or_default();
    let path = (path.as_ptr() as usize - base, path.len());
    let mut facts = Facts::default();
    // Not `with_capacity`: it returns the ~800-byte vector by value, a
    // copy; past 16 fields it spills to the heap either way.
    let mut fields = Fields::new();
    if let Err(why) = note_fields(request.headers, base, &mut facts, &mut fields) {
        return Head::Elsewhere(why);
    }
    let body_len = match whole_body(&facts, head_len, buf.len()) {
        Ok(len) => len,
        Err(why) => return Head::Elsewhere(why),
    };
    let head = buf.split_to(head_len).freeze();
    let body = buf.split_to(body_len).freeze();
    match request_parts(&head, method, path, &mut fields) {
        Some(parts) => Head::Ready(Request {
            parts,
            body,
            close: facts.close,
        }),
        None => {
            // httparse took what `http` refuses: hyper answers it.
            put_back(buf, &head, &body);
            Head::Elsewhere("request target or header value")
        }
    }
}

/// Notes what the head's fields say about framing and the connection in
/// `facts`, and each field's name and the place of its value (an offset
/// from `base`, the buffer's start) in `fields`. Why the request is left
/// to hyper, if it is.
#[inline]
fn note_fields(
    headers: &[httparse::Header<'_>],
    base: usize,
    facts: &mut Facts,
    fields: &mut Fields,
) -> Result<(), &'static str> {
    for h in headers {
        let name = h.name.as_bytes();
        match fields::classify(name) {
            Class::Expect => return Err("expect"),
            Class::EndToEnd(Kind::ContentLength) => facts.note_length(h.value),
            Class::TransferEncoding => facts.note_coding(h.value),
            Class::Connection => {
                facts.note_connection(h.value);
            }
            Class::EndToEnd(_) | Class::HopByHop => {}
        }
        let Some(name) = common_name(name).or_else(|| HeaderName::from_bytes(name).ok()) else {
            return Err("header name");
        };
        fields.push((name, h.value.as_ptr() as usize - base, h.value.len()));
    }
    Ok(())
}

/// The body's length when all of it follows the `head_len`-byte head in
/// the `buffered` bytes, or why the request is left to hyper.
#[inline]
fn whole_body(facts: &Facts, head_len: usize, buffered: usize) -> Result<usize, &'static str> {
    if facts.coding.is_some() {
        return Err("transfer coding");
    }
    let body_len = match facts.length {
        None => 0,
        Some(Ok(n)) => usize::try_from(n).map_err(|_| "body still on its way")?,
        Some(Err(())) => return Err("content-length"),
    };
    match body_len.checked_add(head_len) {
        Some(end) if end <= buffered => Ok(body_len),
        _ => Err("body still on its way"),
    }
}

/// The names nearly every client sends, without `HeaderName::from_bytes`'s
/// table lookup (dispatched on the length, as [`fields::classify`]).
pub(super) fn common_name(name: &[u8]) -> Option<HeaderName> {
    let is = |candidate: &[u8]| name.eq_ignore_ascii_case(candidate);
    Some(match name.len() {
        4 if is(b"host") => header::HOST,
        6 if is(b"accept") => header::ACCEPT,
        6 if is(b"cookie") => header::COOKIE,
        10 if is(b"user-agent") => header::USER_AGENT,
        10 if is(b"connection") => header::CONNECTION,
        12 if is(b"content-type") => header::CONTENT_TYPE,
        13 if is(b"authorization") => header::AUTHORIZATION,
        14 if is(b"content-length") => header::CONTENT_LENGTH,
        15 if is(b"accept-encoding") => header::ACCEPT_ENCODING,
        15 if is(b"accept-language") => header::ACCEPT_LANGUAGE,
        _ => return None,
    })
}

fn request_parts(
    head: &Bytes,
    method: Method,
    (path_at, path_len): (usize, usize),
    fields: &mut Fields,
) -> Option<http::request::Parts> {
    let uri = Uri::from_maybe_shared(head.slice(path_at..path_at + path_len)).ok()?;
    // Room for the three X-Forwarded-* the proxy adds, so that the map is
    // not grown (rehashed) for them; no more: a map's entries are about
    // 100 bytes each, and up to six of them (three fields and the three
    // added) stay a small block for the allocator (measured with glibc's
    // per-thread cache, whose limit is 1 KiB).
    let headers = header_map(head, fields, 3)?;
    let mut parts = http::Request::new(()).into_parts().0;
    parts.method = method;
    parts.uri = uri;
    parts.version = Version::HTTP_11;
    parts.headers = headers;
    Some(parts)
}

/// A header's name and where its value lies in a head's bytes, noted
/// while httparse borrows them.
type Fields = SmallVec<[(HeaderName, usize, usize); 16]>;

/// The headers of a head whose `fields` were noted while it was parsed:
/// values are slices of `head`, not copies. `room`: headers the map will
/// gain without growing. `None` when a value is not a header value.
/// Drains `fields` in place: moving the vector would copy its ~800 bytes.
fn header_map(head: &Bytes, fields: &mut Fields, room: usize) -> Option<HeaderMap> {
    let mut map = HeaderMap::with_capacity(fields.len() + room);
    for (name, at, len) in fields.drain(..) {
        let value = HeaderValue::from_maybe_shared(head.slice(at..at + len)).ok()?;
        map.append(name, value);
    }
    Some(map)
}

/// Puts a taken request's bytes back in front of `buf` (rare: a copy).
fn put_back(buf: &mut BytesMut, head: &[u8], body: &[u8]) {
    let mut whole = BytesMut::with_capacity(head.len() + body.len() + buf.len());
    whole.extend_from_slice(head);
    whole.extend_from_slice(body);
    whole.extend_from_slice(buf);
    *buf = whole;
}

/// How an answer's body goes on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Framing {
    /// No body (a `HEAD` request, 1xx, 204, 304), whatever the headers say.
    Bodiless,
    /// `Content-Length` bytes.
    Length(u64),
    /// `Transfer-Encoding: chunked`: the length is not known ahead.
    Chunked,
}

impl Framing {
    /// The framing of an answer with `status` to a `method` request, whose
    /// headers give `length` and whose body has `exact` bytes when known.
    fn of(
        method: &Method,
        status: StatusCode,
        length: Option<Result<u64, ()>>,
        exact: Option<u64>,
    ) -> Framing {
        if *method == Method::HEAD
            || status.is_informational()
            || status == StatusCode::NO_CONTENT
            || status == StatusCode::NOT_MODIFIED
        {
            return Framing::Bodiless;
        }
        match (length, exact) {
            (Some(Ok(n)), _) | (_, Some(n)) => Framing::Length(n),
            (_, None) => Framing::Chunked,
        }
    }
}

/// An answer head as written: how its body follows, and whether the
/// connection closes after it.
#[derive(Debug, PartialEq, Eq)]
pub struct Written {
    pub framing: Framing,
    pub close: bool,
}

/// Writes the head of an answer to a `method` request (status line, the
/// node's fields, then the gateway's headers) to `dst`, in one pass: the
/// framing is this connection's (`Content-Length`, or chunked when the
/// body's length is not known), `Date` is added when missing, and
/// `Connection: close` when the connection closes after it (`close`, or
/// the headers say so).
pub fn encode_response_head(
    dst: &mut Vec<u8>,
    method: &Method,
    answer: &Answer,
    exact: Option<u64>,
    close: bool,
) -> Written {
    let status = answer.parts.status;
    dst.extend_from_slice(b"HTTP/1.1 ");
    dst.extend_from_slice(status.as_str().as_bytes());
    dst.push(b' ');
    dst.extend_from_slice(status.canonical_reason().unwrap_or("").as_bytes());
    dst.extend_from_slice(b"\r\n");
    let mut facts = Facts::default();
    let (mut dated, mut connection) = (false, false);
    for (name, value, kind) in answer.fields.iter() {
        match kind {
            Kind::ContentLength => {
                facts.note_length(value);
                continue;
            }
            Kind::Date => dated = true,
            Kind::SetCookie | Kind::Other => {}
        }
        push_header(dst, name, value);
    }
    for (name, value) in &answer.parts.headers {
        if *name == header::CONTENT_LENGTH {
            facts.note_length(value.as_bytes());
            continue;
        }
        if *name == header::TRANSFER_ENCODING {
            continue;
        }
        if *name == header::DATE {
            dated = true;
        } else if *name == header::CONNECTION {
            connection = true;
            facts.note_connection(value.as_bytes());
        }
        push_header(dst, name.as_str().as_bytes(), value.as_bytes());
    }
    let framing = Framing::of(method, status, facts.length, exact);
    let length = match framing {
        Framing::Length(n) => Some(n),
        // A HEAD answer says what a GET's body would be.
        Framing::Bodiless => facts.length.and_then(Result::ok),
        Framing::Chunked => {
            push_header(dst, b"transfer-encoding", b"chunked");
            None
        }
    };
    if let Some(n) = length {
        dst.extend_from_slice(b"content-length: ");
        crate::text::push_integer(dst, n);
        dst.extend_from_slice(b"\r\n");
    }
    if !dated {
        push_date(dst);
    }
    let close = close || facts.close;
    if close && !connection {
        push_header(dst, b"connection", b"close");
    }
    dst.extend_from_slice(b"\r\n");
    Written { framing, close }
}

/// A `Date` header, formatted once a second per thread.
fn push_date(dst: &mut Vec<u8>) {
    thread_local! {
        static DATE: RefCell<(u64, String)> = const { RefCell::new((u64::MAX, String::new())) };
    }
    let now = SystemTime::now();
    let second = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    DATE.with_borrow_mut(|(at, text)| {
        if *at != second {
            *at = second;
            *text = httpdate::fmt_http_date(now);
        }
        push_header(dst, b"date", text.as_bytes());
    });
}
