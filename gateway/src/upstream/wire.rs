//! HTTP/1.1 as the gateway speaks it to nodes, without I/O: a request head
//! written into a buffer, a response head parsed from one (RFC 9112), and
//! the response body's framing decoded frame by frame. [`super::conn`]
//! moves the bytes.

use std::mem::MaybeUninit;

use bytes::{Buf, Bytes, BytesMut};
use http::header::{self, HeaderValue};
use http::{HeaderMap, Method, StatusCode, Version};

use super::fields::{self, Class, Collector, Kind, NodeFields};

/// A response head longer than this is refused (Kylin's are a few hundred
/// bytes; hyper's client allowed about 400 KiB of buffer, nginx 4–8 KiB).
pub const MAX_HEAD_BYTES: usize = 64 * 1024;

/// Headers a response head may carry (hyper's client allowed 100).
const MAX_HEADERS: usize = 100;

/// A chunk-size line or trailer line longer than this is refused.
const MAX_LINE_BYTES: usize = 4 * 1024;

/// What went wrong in a node's bytes.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum WireError {
    #[error("invalid response head from the node: {0}")]
    Head(&'static str),
    #[error("response head from the node over {MAX_HEAD_BYTES} bytes")]
    HeadTooLarge,
    #[error("invalid chunked body from the node: {0}")]
    Chunk(&'static str),
    #[error("the node closed the connection before its answer was complete")]
    Incomplete,
}

/// The request line and headers to send. `host` is sent when `headers` has
/// no `Host`.
pub struct RequestHead<'a> {
    pub method: &'a Method,
    pub path: &'a str,
    pub headers: &'a HeaderMap,
    pub host: Option<HeaderValue>,
}

/// How a request body is framed on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RequestFraming {
    /// No body.
    Empty,
    /// `Content-Length` bytes.
    Length(u64),
    /// `Transfer-Encoding: chunked`.
    Chunked,
}

impl RequestFraming {
    /// The framing of a request whose `Content-Length` headers say
    /// `length` and whose body announces `exact` bytes (if known) or has
    /// ended. A `Content-Length` sent by the client is kept as is.
    pub fn of(
        length: Option<Result<u64, ()>>,
        exact: Option<u64>,
        end_stream: bool,
    ) -> RequestFraming {
        if let Some(length) = length {
            return match length {
                Ok(0) => RequestFraming::Empty,
                Ok(n) => RequestFraming::Length(n),
                // The client's head was checked when it was read: not
                // reached.
                Err(()) => RequestFraming::Chunked,
            };
        }
        match (end_stream, exact) {
            (true, _) | (false, Some(0)) => RequestFraming::Empty,
            (false, Some(n)) => RequestFraming::Length(n),
            (false, None) => RequestFraming::Chunked,
        }
    }
}

/// Writes `head` (request line, headers, the framing header the headers
/// lack, blank line) to `dst` for a body that announces `exact` bytes (if
/// known) or has ended, and says how the body follows. The client's
/// `Content-Length` is read while the headers are written.
pub fn encode_request_head(
    dst: &mut Vec<u8>,
    head: &RequestHead<'_>,
    exact: Option<u64>,
    end_stream: bool,
) -> RequestFraming {
    dst.extend_from_slice(head.method.as_str().as_bytes());
    dst.push(b' ');
    dst.extend_from_slice(head.path.as_bytes());
    dst.extend_from_slice(b" HTTP/1.1\r\n");
    let mut facts = Facts::default();
    for (name, value) in head.headers {
        if name == header::CONTENT_LENGTH {
            facts.note_length(value.as_bytes());
        }
        push_header(dst, name.as_str().as_bytes(), value.as_bytes());
    }
    if let Some(host) = head
        .host
        .as_ref()
        .filter(|_| !head.headers.contains_key(header::HOST))
    {
        push_header(dst, b"host", host.as_bytes());
    }
    let framing = RequestFraming::of(facts.length, exact, end_stream);
    match framing {
        RequestFraming::Length(n) if facts.length.is_none() => {
            dst.extend_from_slice(b"content-length: ");
            crate::text::push_integer(dst, n);
            dst.extend_from_slice(b"\r\n");
        }
        RequestFraming::Chunked => push_header(dst, b"transfer-encoding", b"chunked"),
        _ => {}
    }
    dst.extend_from_slice(b"\r\n");
    framing
}

pub(crate) fn push_header(dst: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    dst.extend_from_slice(name);
    dst.extend_from_slice(b": ");
    dst.extend_from_slice(value);
    dst.extend_from_slice(b"\r\n");
}

/// Writes the chunk-size line of a chunk of `len` bytes.
pub fn push_chunk_size(dst: &mut Vec<u8>, len: usize) {
    let mut digits = [0u8; 16];
    let mut at = digits.len();
    let mut n = len;
    loop {
        at -= 1;
        digits[at] = b"0123456789abcdef"[n & 15];
        n >>= 4;
        if n == 0 {
            break;
        }
    }
    dst.extend_from_slice(&digits[at..]);
    dst.extend_from_slice(b"\r\n");
}

/// The last chunk and the end of a chunked body (no trailers).
pub const LAST_CHUNK: &[u8] = b"0\r\n\r\n";

/// A parsed response head and what follows it.
#[derive(Debug)]
pub struct ResponseHead {
    pub status: StatusCode,
    pub version: Version,
    /// The end-to-end fields; the connection's own are left out.
    pub fields: NodeFields,
    pub framing: BodyFraming,
    /// The connection can carry another request once the body has ended.
    pub keep_alive: bool,
}

/// How a response body is delimited.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BodyFraming {
    Empty,
    Length(u64),
    Chunked,
    /// Until the node closes the connection.
    UntilClose,
}

/// Parses a response head from the front of `buf`, taking its bytes.
/// `None` while the head is incomplete. Interim (1xx) answers are skipped:
/// the final answer follows them.
pub fn parse_response_head(
    buf: &mut BytesMut,
    method: &Method,
) -> Result<Option<ResponseHead>, WireError> {
    loop {
        if buf.is_empty() {
            return Ok(None);
        }
        let mut headers = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
        let mut response = httparse::Response::new(&mut []);
        let parsed = httparse::ParserConfig::default().parse_response_with_uninit_headers(
            &mut response,
            buf,
            &mut headers,
        );
        let len = match parsed {
            Ok(httparse::Status::Complete(len)) if len <= MAX_HEAD_BYTES => len,
            Ok(httparse::Status::Complete(_)) => return Err(WireError::HeadTooLarge),
            Ok(httparse::Status::Partial) if buf.len() > MAX_HEAD_BYTES => {
                return Err(WireError::HeadTooLarge);
            }
            Ok(httparse::Status::Partial) => return Ok(None),
            Err(httparse::Error::TooManyHeaders) => {
                return Err(WireError::Head("too many headers"));
            }
            Err(_) => return Err(WireError::Head("malformed")),
        };
        let code = response.code.unwrap_or(0);
        let status = StatusCode::from_u16(code).map_err(|_| WireError::Head("status code"))?;
        if status == StatusCode::SWITCHING_PROTOCOLS {
            return Err(WireError::Head("101 without an upgrade asked"));
        }
        if status.is_informational() {
            buf.advance(len);
            continue;
        }
        let version = match response.version {
            Some(0) => Version::HTTP_10,
            _ => Version::HTTP_11,
        };
        let (facts, fields) = read_fields(response.headers, buf)?;
        let head_bytes = buf.split_to(len).freeze();
        return finish_head(status, version, fields.finish(head_bytes), &facts, method).map(Some);
    }
}

/// The framing facts and the end-to-end fields of a parsed head whose
/// bytes are `buf`. The fields are noted where they lie while httparse
/// borrows the buffer; the connection's own fields are read on the way
/// (they decide framing) and left out.
fn read_fields(
    headers: &[httparse::Header<'_>],
    buf: &[u8],
) -> Result<(Facts, Collector), WireError> {
    let mut facts = Facts::default();
    let mut fields = Collector::new(buf);
    let mut names_fields = false;
    for h in headers.iter() {
        let name = h.name.as_bytes();
        let kept = match fields::classify(name) {
            Class::EndToEnd(kind) => Some(kind),
            // A request's field: in an answer, passed on like any other.
            Class::Expect => Some(Kind::Other),
            Class::Connection => {
                names_fields |= facts.note_connection(h.value);
                None
            }
            Class::TransferEncoding => {
                facts.note_coding(h.value);
                None
            }
            Class::HopByHop => None,
        };
        if let Some(kind) = kept {
            if kind == Kind::ContentLength {
                facts.note_length(h.value);
            }
            fields
                .keep(name, h.value, kind)
                .map_err(|_| WireError::Head("field too long"))?;
        }
    }
    // A length next to a transfer coding is not to be trusted, and must
    // not be passed on with it.
    let untrusted_length = facts.coding.is_some() && facts.length.is_some();
    if names_fields || untrusted_length {
        let named = connection_names(headers);
        fields.drop_where(buf, |name, kind| {
            (untrusted_length && kind == Kind::ContentLength)
                || named.iter().any(|n| n.eq_ignore_ascii_case(name))
        });
    }
    Ok((facts, fields))
}

/// What a head's framing headers say (read by the gateway's own HTTP/1.1
/// server for requests too).
#[derive(Default)]
pub(crate) struct Facts {
    /// `Content-Length`: `Err` when its values are not one number.
    pub length: Option<Result<u64, ()>>,
    /// `Transfer-Encoding` was sent; whether its last coding is chunked.
    pub coding: Option<bool>,
    pub close: bool,
    pub keep_alive: bool,
}

impl Facts {
    /// A `Content-Length` value.
    pub fn note_length(&mut self, value: &[u8]) {
        for part in value.split(|&b| b == b',') {
            self.length = match (self.length, parse_decimal(part.trim_ascii())) {
                (Some(Err(())), _) | (_, None) => Some(Err(())),
                (Some(Ok(m)), Some(n)) if m != n => Some(Err(())),
                (_, Some(n)) => Some(Ok(n)),
            };
        }
    }

    /// A `Transfer-Encoding` value.
    pub fn note_coding(&mut self, value: &[u8]) {
        let last = value.rsplit(|&b| b == b',').next().unwrap_or_default();
        self.coding = Some(last.trim_ascii().eq_ignore_ascii_case(b"chunked"));
    }

    /// A `Connection` value: true when it names a field (a token other
    /// than `close` and `keep-alive`).
    pub fn note_connection(&mut self, value: &[u8]) -> bool {
        // Nearly every value is one of these words alone.
        if value.eq_ignore_ascii_case(b"keep-alive") {
            self.keep_alive = true;
            return false;
        }
        if value.eq_ignore_ascii_case(b"close") {
            self.close = true;
            return false;
        }
        let mut names_fields = false;
        for token in value.split(|&b| b == b',').map(<[u8]>::trim_ascii) {
            let close = token.eq_ignore_ascii_case(b"close");
            let keep_alive = token.eq_ignore_ascii_case(b"keep-alive");
            self.close |= close;
            self.keep_alive |= keep_alive;
            names_fields |= !(close || keep_alive || token.is_empty());
        }
        names_fields
    }
}

/// The field names the `Connection` fields of `headers` list.
fn connection_names<'h>(headers: &[httparse::Header<'h>]) -> Vec<&'h [u8]> {
    headers
        .iter()
        .filter(|h| h.name.eq_ignore_ascii_case("connection"))
        .flat_map(|h| h.value.split(|&b| b == b',').map(<[u8]>::trim_ascii))
        .filter(|token| !token.is_empty())
        .collect()
}

/// Decides framing and keep-alive for a parsed head (RFC 9112 §6.3, §9.3).
fn finish_head(
    status: StatusCode,
    version: Version,
    fields: NodeFields,
    facts: &Facts,
    method: &Method,
) -> Result<ResponseHead, WireError> {
    let bodiless = method == Method::HEAD
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED;
    let framing = if bodiless {
        BodyFraming::Empty
    } else if let Some(chunked) = facts.coding {
        if chunked {
            BodyFraming::Chunked
        } else {
            BodyFraming::UntilClose
        }
    } else {
        match facts.length {
            Some(Ok(0)) => BodyFraming::Empty,
            Some(Ok(n)) => BodyFraming::Length(n),
            Some(Err(())) => return Err(WireError::Head("content-length")),
            None => BodyFraming::UntilClose,
        }
    };
    let persistent = match version {
        Version::HTTP_10 => facts.keep_alive && !facts.close,
        _ => !facts.close,
    };
    Ok(ResponseHead {
        status,
        version,
        fields,
        framing,
        keep_alive: persistent && framing != BodyFraming::UntilClose,
    })
}

fn parse_decimal(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() || digits.len() > 19 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(digits.iter().fold(0, |n, d| n * 10 + u64::from(d - b'0')))
}

/// One step of decoding a response body.
#[derive(Debug, PartialEq, Eq)]
pub enum Decoded {
    Data(Bytes),
    /// More bytes are needed from the node.
    NeedMore,
    End,
}

/// Decodes a response body framed by [`BodyFraming`].
#[derive(Debug)]
pub struct Decoder {
    state: State,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Length(u64),
    ChunkSize,
    ChunkData(u64),
    ChunkDataEnd,
    Trailers,
    UntilClose,
    Done,
}

impl Decoder {
    pub fn new(framing: BodyFraming) -> Decoder {
        let state = match framing {
            BodyFraming::Empty | BodyFraming::Length(0) => State::Done,
            BodyFraming::Length(n) => State::Length(n),
            BodyFraming::Chunked => State::ChunkSize,
            BodyFraming::UntilClose => State::UntilClose,
        };
        Decoder { state }
    }

    pub fn is_end(&self) -> bool {
        self.state == State::Done
    }

    /// Bytes still to come, when known.
    pub fn remaining(&self) -> Option<u64> {
        match self.state {
            State::Length(n) => Some(n),
            State::Done => Some(0),
            _ => None,
        }
    }

    /// The next piece of body from the front of `buf`.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Decoded, WireError> {
        loop {
            match self.state {
                State::Done => return Ok(Decoded::End),
                State::Length(n) | State::ChunkData(n) => {
                    if buf.is_empty() {
                        return Ok(Decoded::NeedMore);
                    }
                    let take = buf.len().min(usize::try_from(n).unwrap_or(usize::MAX));
                    let left = n - take as u64;
                    self.state = match (self.state, left) {
                        (State::Length(_), 0) => State::Done,
                        (State::Length(_), _) => State::Length(left),
                        (_, 0) => State::ChunkDataEnd,
                        _ => State::ChunkData(left),
                    };
                    return Ok(Decoded::Data(buf.split_to(take).freeze()));
                }
                State::UntilClose => {
                    if buf.is_empty() {
                        return Ok(Decoded::NeedMore);
                    }
                    return Ok(Decoded::Data(buf.split().freeze()));
                }
                State::ChunkSize => {
                    let Some(line) = take_line(buf)? else {
                        return Ok(Decoded::NeedMore);
                    };
                    let size = chunk_size(&line)?;
                    self.state = if size == 0 {
                        State::Trailers
                    } else {
                        State::ChunkData(size)
                    };
                }
                State::ChunkDataEnd => {
                    if buf.len() < 2 {
                        return Ok(Decoded::NeedMore);
                    }
                    if &buf[..2] != b"\r\n" {
                        return Err(WireError::Chunk("no CRLF after chunk data"));
                    }
                    buf.advance(2);
                    self.state = State::ChunkSize;
                }
                State::Trailers => {
                    // Trailers are read and dropped: the gateway passes no
                    // trailers on (it removes `Trailer` like hyper did).
                    let Some(line) = take_line(buf)? else {
                        return Ok(Decoded::NeedMore);
                    };
                    if line.is_empty() {
                        self.state = State::Done;
                    }
                }
            }
        }
    }

    /// The node closed the connection: the end of a body delimited by the
    /// close, an error for any other body not yet complete.
    pub fn closed(&mut self) -> Result<(), WireError> {
        match self.state {
            State::UntilClose | State::Done => {
                self.state = State::Done;
                Ok(())
            }
            _ => Err(WireError::Incomplete),
        }
    }
}

/// A CRLF-terminated line from the front of `buf` (without the CRLF).
fn take_line(buf: &mut BytesMut) -> Result<Option<BytesMut>, WireError> {
    match buf.iter().position(|&b| b == b'\n') {
        Some(end) if end > 0 && buf[end - 1] == b'\r' => {
            let mut line = buf.split_to(end + 1);
            line.truncate(end - 1);
            Ok(Some(line))
        }
        Some(_) => Err(WireError::Chunk("bare LF")),
        None if buf.len() > MAX_LINE_BYTES => Err(WireError::Chunk("line too long")),
        None => Ok(None),
    }
}

/// The size of a chunk-size line (hex digits, then extensions to ignore).
fn chunk_size(line: &[u8]) -> Result<u64, WireError> {
    let digits = line
        .split(|&b| b == b';')
        .next()
        .unwrap_or_default()
        .trim_ascii();
    if digits.is_empty() || digits.len() > 15 {
        return Err(WireError::Chunk("chunk size"));
    }
    digits.iter().try_fold(0u64, |n, &d| {
        let v = (d as char)
            .to_digit(16)
            .ok_or(WireError::Chunk("chunk size"))?;
        Ok(n * 16 + u64::from(v))
    })
}

#[cfg(test)]
mod tests;
