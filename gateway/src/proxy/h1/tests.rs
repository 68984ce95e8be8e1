use super::head::{Framing, Head, encode_response_head, take_request};
use super::*;
use crate::upstream::wire::parse_response_head;
use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode, Version};
use proptest::prelude::*;

const MAX_HEAD: usize = 16 * 1024;

fn take(buf: &mut BytesMut) -> head::Request {
    match take_request(buf, MAX_HEAD) {
        Head::Ready(request) => request,
        other => panic!("not taken: {other:?}"),
    }
}

/// A request left to hyper, with the buffer as it was.
fn left_whole(wire: &[u8]) -> &'static str {
    let mut buf = BytesMut::from(wire);
    match take_request(&mut buf, MAX_HEAD) {
        Head::Elsewhere(why) => {
            assert_eq!(&buf[..], wire, "{why}: the buffer changed");
            why
        }
        other => panic!("taken: {other:?}"),
    }
}

#[test]
fn a_get_is_taken_with_its_headers_and_the_next_request_stays() {
    let mut buf = BytesMut::from(
        &b"GET /kylin/api/projects?x=1 HTTP/1.1\r\nHost: gw\r\nX-A: 1\r\nx-a: 2\r\n\r\nGET /next"[..],
    );
    let request = take(&mut buf);
    assert_eq!(request.parts.method, Method::GET);
    assert_eq!(request.parts.uri, "/kylin/api/projects?x=1");
    assert_eq!(request.parts.version, Version::HTTP_11);
    assert_eq!(request.parts.headers["host"], "gw");
    let values: Vec<_> = request.parts.headers.get_all("x-a").iter().collect();
    assert_eq!(values, ["1", "2"]);
    assert!(request.body.is_empty());
    assert!(!request.close);
    assert_eq!(&buf[..], b"GET /next");
    assert!(matches!(take_request(&mut buf, MAX_HEAD), Head::Partial));
}

#[test]
fn a_request_with_more_fields_than_fit_inline_keeps_them_all() {
    let mut wire = b"GET / HTTP/1.1\r\nHost: gw\r\n".to_vec();
    for i in 0..40 {
        wire.extend_from_slice(format!("X-Field-{i}: value-{i}\r\n").as_bytes());
    }
    wire.extend_from_slice(b"\r\n");
    let request = take(&mut BytesMut::from(&wire[..]));
    assert_eq!(request.parts.headers.len(), 41);
    for i in 0..40 {
        assert_eq!(
            request.parts.headers[format!("x-field-{i}").as_str()],
            format!("value-{i}").as_str()
        );
    }
}

#[test]
fn a_post_is_taken_with_its_whole_body_only() {
    let wire = b"POST /kylin/api/query HTTP/1.1\r\nContent-Length: 10\r\nConnection: close\r\n\r\n{\"sql\":1}";
    let why = left_whole(wire);
    assert_eq!(why, "body still on its way");
    let mut buf = BytesMut::from(&[&wire[..], b"}"].concat()[..]);
    let request = take(&mut buf);
    assert_eq!(request.body, "{\"sql\":1}}"[..10]);
    assert!(request.close);
    assert!(buf.is_empty());
}

#[test]
fn shapes_hyper_serves_are_left_to_it_untouched() {
    for wire in [
        &b"GET / HTTP/1.0\r\n\r\n"[..],
        b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        b"POST / HTTP/1.1\r\nContent-Length: 1\r\nExpect: 100-continue\r\n\r\nx",
        b"CONNECT example.com:443 HTTP/1.1\r\n\r\n",
        b"POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nxx",
        b"GET / HTTP/1.1\r\nBad Name: x\r\n\r\n",
        b"GET http://[::1/ HTTP/1.1\r\n\r\n",
    ] {
        left_whole(wire);
    }
}

#[test]
fn a_head_over_the_limit_is_left_to_hyper_complete_or_not() {
    let big = format!("GET / HTTP/1.1\r\nX: {}\r\n\r\n", "v".repeat(MAX_HEAD));
    assert_eq!(left_whole(big.as_bytes()), "head too large");
    assert_eq!(
        left_whole(&big.as_bytes()[..MAX_HEAD + 10]),
        "head too large"
    );
    let mut partial = BytesMut::from(&big.as_bytes()[..MAX_HEAD - 1]);
    assert!(matches!(
        take_request(&mut partial, MAX_HEAD),
        Head::Partial
    ));
}

/// The head written for an answer with `status` and `headers` to a
/// `method` request, and how it was written.
fn encoded(
    method: Method,
    status: StatusCode,
    headers: &HeaderMap,
    exact: Option<u64>,
    close: bool,
) -> (String, head::Written) {
    let mut response = http::Response::new(ResponseBody::full(Bytes::new()));
    *response.status_mut() = status;
    *response.headers_mut() = headers.clone();
    let mut out = Vec::new();
    let written = encode_response_head(&mut out, &method, &Answer::from(response), exact, close);
    (String::from_utf8(out).unwrap(), written)
}

/// The head written for a node's answer `node_head` to a `method`
/// request, with `added` from the gateway.
fn encoded_from_node(method: Method, node_head: &str, added: HeaderMap) -> (String, Framing) {
    let mut buf = BytesMut::from(node_head);
    let head = parse_response_head(&mut buf, &method).unwrap().unwrap();
    let mut answer = Answer::from_node(
        head.status,
        head.version,
        head.fields,
        ResponseBody::full(Bytes::new()),
    );
    answer.parts.headers = added;
    let mut out = Vec::new();
    let written = encode_response_head(&mut out, &method, &answer, None, false);
    (String::from_utf8(out).unwrap(), written.framing)
}

#[test]
fn a_node_answer_is_written_from_its_own_bytes() {
    let node = "HTTP/1.1 200 OK\r\nServer: nginx\r\nDate: Tue, 01 Dec 2026 00:00:00 GMT\r\n\
                Content-Length: 12\r\nConnection: keep-alive\r\nSet-Cookie: JSESSIONID=a\r\n\r\n";
    let mut added = HeaderMap::new();
    added.append("set-cookie", HeaderValue::from_static("KYLIN_GW_NODE=ab"));
    let (text, framing) = encoded_from_node(Method::GET, node, added);
    assert_eq!(framing, Framing::Length(12));
    assert_eq!(
        text,
        "HTTP/1.1 200 OK\r\nServer: nginx\r\nDate: Tue, 01 Dec 2026 00:00:00 GMT\r\n\
         Set-Cookie: JSESSIONID=a\r\nset-cookie: KYLIN_GW_NODE=ab\r\ncontent-length: 12\r\n\r\n",
        "the node's fields as spelled, the connection's left out, one length and one date"
    );

    // A HEAD answer keeps the length a GET's body would have.
    let (text, framing) = encoded_from_node(Method::HEAD, node, HeaderMap::new());
    assert_eq!(framing, Framing::Bodiless);
    assert_eq!(text.matches("content-length: 12").count(), 1, "{text}");

    // A chunked node answer of unknown length goes on chunked.
    let chunked = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n";
    let (text, framing) = encoded_from_node(Method::GET, chunked, HeaderMap::new());
    assert_eq!(framing, Framing::Chunked);
    assert!(text.contains("transfer-encoding: chunked\r\n"), "{text}");
    assert!(
        !text.to_ascii_lowercase().contains("content-length"),
        "{text}"
    );
    assert_eq!(text.matches("date: ").count(), 1, "{text}");
}

#[test]
fn an_answer_head_carries_its_framing_a_date_and_close_when_closing() {
    let mut headers = HeaderMap::new();
    headers.insert("content-type", HeaderValue::from_static("application/json"));
    headers.insert("transfer-encoding", HeaderValue::from_static("chunked"));
    let (text, written) = encoded(Method::GET, StatusCode::OK, &headers, Some(5), true);
    assert_eq!(written.framing, Framing::Length(5));
    assert!(written.close);
    assert!(text.starts_with("HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"));
    assert!(text.contains("\r\ncontent-length: 5\r\n"), "{text}");
    assert!(!text.contains("transfer-encoding"), "{text}");
    assert!(text.contains("\r\ndate: "), "{text}");
    assert!(text.ends_with("\r\nconnection: close\r\n\r\n"), "{text}");

    // The headers' length wins over the body's hint; one of each header.
    headers.remove("transfer-encoding");
    headers.insert("content-length", HeaderValue::from_static("7"));
    headers.insert(
        "date",
        HeaderValue::from_static("Tue, 01 Dec 2026 00:00:00 GMT"),
    );
    let (text, written) = encoded(Method::GET, StatusCode::OK, &headers, None, false);
    assert_eq!(
        written,
        head::Written {
            framing: Framing::Length(7),
            close: false
        }
    );
    assert_eq!(text.matches("content-length: 7").count(), 1, "{text}");
    assert_eq!(text.matches("date").count(), 1, "{text}");
    assert!(!text.contains("connection"), "{text}");

    headers.remove("content-length");
    let (text, written) = encoded(Method::POST, StatusCode::OK, &headers, None, false);
    assert_eq!(written.framing, Framing::Chunked);
    assert!(
        text.contains("\r\ntransfer-encoding: chunked\r\n"),
        "{text}"
    );
    assert!(!text.contains("content-length"), "{text}");

    // An answer that says it closes the connection, closes it.
    headers.insert("connection", HeaderValue::from_static("keep-alive, Close"));
    let (text, written) = encoded(Method::GET, StatusCode::OK, &headers, Some(0), false);
    assert!(written.close);
    assert_eq!(text.matches("connection").count(), 1, "{text}");
}

#[test]
fn bodiless_answers_keep_their_length_and_send_no_body() {
    let mut headers = HeaderMap::new();
    headers.insert("content-length", HeaderValue::from_static("1234"));
    for (method, status) in [
        (Method::HEAD, StatusCode::OK),
        (Method::GET, StatusCode::NO_CONTENT),
        (Method::GET, StatusCode::NOT_MODIFIED),
    ] {
        let (text, written) = encoded(method, status, &headers, Some(0), false);
        assert_eq!(written.framing, Framing::Bodiless);
        assert!(text.contains("content-length: 1234"), "{text}");
    }
}

fn settings(release_after: Option<u64>) -> Settings {
    Settings {
        max_head: MAX_HEAD,
        idle_timeout: Duration::from_secs(10),
        release_after: release_after.map(Duration::from_secs),
    }
}

#[test]
fn the_timer_times_out_a_wait_releases_once_and_never_touches_a_busy_connection() {
    let start = Instant::now();
    let at = |s: u64| start + Duration::from_secs(s);
    let waiting = Waiting {
        since: Some(start),
        releasable: true,
    };
    let s = settings(Some(2));
    assert_eq!(on_timer(at(1), waiting, &s), TimerAction::Reset(at(2)));
    assert_eq!(on_timer(at(2), waiting, &s), TimerAction::Release);
    let released = Waiting {
        releasable: false,
        ..waiting
    };
    // Not releasable: checked again within a period all the same (a
    // request may be answered meanwhile, and its wait may release).
    assert_eq!(on_timer(at(2), released, &s), TimerAction::Reset(at(4)));
    assert_eq!(on_timer(at(9), released, &s), TimerAction::Reset(at(10)));
    assert_eq!(on_timer(at(10), released, &s), TimerAction::TimeOut);
    assert_eq!(on_timer(at(11), waiting, &s), TimerAction::TimeOut);
    // Never released: only the timeout is due.
    assert_eq!(
        on_timer(at(3), waiting, &settings(None)),
        TimerAction::Reset(at(10))
    );
    // A request in flight has no deadline here.
    let busy = Waiting::default();
    assert_eq!(on_timer(at(50), busy, &s), TimerAction::Reset(at(52)));
}

proptest! {
    /// Whatever a client sends is taken, waited for or left to hyper, never
    /// a panic; what is not taken stays in the buffer as it was.
    #[test]
    fn any_bytes_are_taken_or_left_whole(wire in proptest::collection::vec(any::<u8>(), 0..512),
                                         prefix in prop_oneof![Just(&b""[..]), Just(&b"GET / HTTP/1.1\r\n"[..]), Just(&b"POST /q HTTP/1.1\r\nContent-Length: 3\r\n"[..])]) {
        let wire = [prefix, &wire[..]].concat();
        let mut buf = BytesMut::from(&wire[..]);
        match take_request(&mut buf, 256) {
            Head::Ready(request) => {
                prop_assert!(buf.len() + request.body.len() < wire.len());
                prop_assert!(wire.ends_with(&buf));
            }
            Head::Partial | Head::Elsewhere(_) => prop_assert_eq!(&buf[..], &wire[..]),
        }
    }
}

#[test]
fn common_names_are_the_names_http_parses() {
    for name in [
        "host",
        "Host",
        "ACCEPT",
        "cookie",
        "User-Agent",
        "connection",
        "Content-Type",
        "authorization",
        "Content-Length",
        "accept-encoding",
        "Accept-Language",
    ] {
        let parsed = HeaderName::from_bytes(name.as_bytes()).unwrap();
        assert_eq!(head::common_name(name.as_bytes()), Some(parsed), "{name}");
    }
    for other in ["hostx", "x-host", "accept-charset", "content-types", ""] {
        assert_eq!(head::common_name(other.as_bytes()), None, "{other}");
    }
    // An `Expect` in any case leaves the request to hyper.
    let mut buf = BytesMut::from(
        "POST / HTTP/1.1\r\nhost: gw\r\nEXPECT: 100-continue\r\ncontent-length: 1\r\n\r\nx",
    );
    assert!(matches!(
        take_request(&mut buf, MAX_HEAD),
        Head::Elsewhere("expect")
    ));
}
