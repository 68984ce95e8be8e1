use super::*;
use crate::upstream::fields::Kind;

fn head(text: &str, method: &Method) -> Result<Option<ResponseHead>, WireError> {
    parse_response_head(&mut BytesMut::from(text), method)
}

fn complete(text: &str) -> ResponseHead {
    head(text, &Method::GET).unwrap().expect("complete head")
}

/// The fields a head passes on, as a map.
fn passed_on(head: ResponseHead) -> HeaderMap {
    head.fields.into_header_map(HeaderMap::new())
}

/// Feeds `wire` to a decoder in pieces of `step` bytes; returns the body
/// and whether it ended.
fn decode_in_steps(
    framing: BodyFraming,
    wire: &[u8],
    step: usize,
) -> Result<(Vec<u8>, bool), WireError> {
    let mut decoder = Decoder::new(framing);
    let mut buf = BytesMut::new();
    let mut body = Vec::new();
    for piece in wire.chunks(step.max(1)) {
        buf.extend_from_slice(piece);
        loop {
            match decoder.decode(&mut buf)? {
                Decoded::Data(data) => body.extend_from_slice(&data),
                Decoded::NeedMore => break,
                Decoded::End => return Ok((body, true)),
            }
        }
    }
    Ok((body, decoder.is_end()))
}

/// `head` as written for a body of `exact` bytes (`None`: unknown), and
/// its framing.
fn encoded(head: &RequestHead<'_>, exact: Option<u64>) -> (String, RequestFraming) {
    let mut out = Vec::new();
    let framing = encode_request_head(&mut out, head, exact, false);
    (String::from_utf8(out).unwrap(), framing)
}

#[test]
fn a_request_head_carries_its_headers_host_and_framing() {
    let mut headers = HeaderMap::new();
    headers.insert("x-forwarded-for", HeaderValue::from_static("10.0.0.1"));
    headers.append("accept", HeaderValue::from_static("a"));
    headers.append("accept", HeaderValue::from_static("b"));
    let request = RequestHead {
        method: &Method::POST,
        path: "/kylin/api/query?x=1",
        headers: &headers,
        host: Some(HeaderValue::from_static("node:7070")),
    };
    assert_eq!(
        encoded(&request, Some(12)),
        (
            "POST /kylin/api/query?x=1 HTTP/1.1\r\nx-forwarded-for: 10.0.0.1\r\naccept: a\r\n\
             accept: b\r\nhost: node:7070\r\ncontent-length: 12\r\n\r\n"
                .to_string(),
            RequestFraming::Length(12)
        )
    );
    let (text, framing) = encoded(&request, None);
    assert!(text.ends_with("transfer-encoding: chunked\r\n\r\n"));
    assert_eq!(framing, RequestFraming::Chunked);
}

#[test]
fn a_request_keeps_its_own_host_and_length() {
    let mut headers = HeaderMap::new();
    headers.insert("host", HeaderValue::from_static("kylin.example"));
    headers.insert("content-length", HeaderValue::from_static("3"));
    let request = RequestHead {
        method: &Method::PUT,
        path: "/",
        headers: &headers,
        host: Some(HeaderValue::from_static("node:7070")),
    };
    // The client's length wins over the body's unknown size, and is not
    // written twice.
    assert_eq!(
        encoded(&request, None),
        (
            "PUT / HTTP/1.1\r\nhost: kylin.example\r\ncontent-length: 3\r\n\r\n".to_string(),
            RequestFraming::Length(3)
        )
    );
}

#[test]
fn request_framing_follows_the_length_or_the_body() {
    assert_eq!(
        RequestFraming::of(None, Some(0), true),
        RequestFraming::Empty
    );
    assert_eq!(
        RequestFraming::of(None, Some(5), false),
        RequestFraming::Length(5)
    );
    assert_eq!(
        RequestFraming::of(None, None, false),
        RequestFraming::Chunked
    );
    assert_eq!(
        RequestFraming::of(Some(Ok(0)), None, false),
        RequestFraming::Empty
    );
    assert_eq!(
        RequestFraming::of(Some(Ok(7)), Some(7), false),
        RequestFraming::Length(7)
    );
}

#[test]
fn chunk_sizes_are_hex() {
    for (len, text) in [
        (0, "0\r\n"),
        (1, "1\r\n"),
        (255, "ff\r\n"),
        (65536, "10000\r\n"),
    ] {
        let mut out = Vec::new();
        push_chunk_size(&mut out, len);
        assert_eq!(out, text.as_bytes());
    }
}

#[test]
fn a_response_head_is_parsed_with_its_framing() {
    let h =
        complete("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 12\r\n\r\n");
    assert_eq!(h.status, 200);
    assert_eq!(h.framing, BodyFraming::Length(12));
    assert!(h.keep_alive);
    assert_eq!(passed_on(h)["content-type"], "application/json");
}

#[test]
fn the_head_bytes_are_taken_and_the_body_bytes_left() {
    let mut buf = BytesMut::from("HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nhi");
    let h = parse_response_head(&mut buf, &Method::GET)
        .unwrap()
        .unwrap();
    assert_eq!(h.framing, BodyFraming::Length(2));
    assert_eq!(&buf[..], b"hi");
}

#[test]
fn a_partial_head_waits_and_a_huge_one_is_refused() {
    assert!(
        head("HTTP/1.1 200 OK\r\ncontent-le", &Method::GET)
            .unwrap()
            .is_none()
    );
    let huge = format!("HTTP/1.1 200 OK\r\nx: {}", "a".repeat(MAX_HEAD_BYTES));
    assert_eq!(
        head(&huge, &Method::GET).unwrap_err(),
        WireError::HeadTooLarge
    );
    // Also when it arrived whole.
    assert_eq!(
        head(&format!("{huge}\r\n\r\n"), &Method::GET).unwrap_err(),
        WireError::HeadTooLarge
    );
}

#[test]
fn interim_answers_are_skipped() {
    let h = complete(
        "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nlink: x\r\n\r\nHTTP/1.1 201 Created\r\ncontent-length: 0\r\n\r\n",
    );
    assert_eq!(h.status, 201);
    assert_eq!(h.framing, BodyFraming::Empty);
    assert!(!passed_on(h).contains_key("link"));
}

#[test]
fn bodiless_answers_have_no_body_whatever_they_announce() {
    let h = head(
        "HTTP/1.1 200 OK\r\ncontent-length: 99\r\n\r\n",
        &Method::HEAD,
    )
    .unwrap()
    .unwrap();
    assert_eq!(h.framing, BodyFraming::Empty);
    assert_eq!(
        passed_on(h)["content-length"],
        "99",
        "HEAD keeps its length"
    );
    assert_eq!(
        complete("HTTP/1.1 204 No Content\r\n\r\n").framing,
        BodyFraming::Empty
    );
    assert_eq!(
        complete("HTTP/1.1 304 Not Modified\r\ncontent-length: 5\r\n\r\n").framing,
        BodyFraming::Empty
    );
}

#[test]
fn chunked_wins_over_a_length_which_is_dropped() {
    let h = complete(
        "HTTP/1.1 200 OK\r\ncontent-length: 5\r\ntransfer-encoding: gzip, chunked\r\n\r\n",
    );
    assert_eq!(h.framing, BodyFraming::Chunked);
    assert!(h.keep_alive);
    assert!(!passed_on(h).contains_key("content-length"));
    let h = complete("HTTP/1.1 200 OK\r\ntransfer-encoding: gzip\r\n\r\n");
    assert_eq!(h.framing, BodyFraming::UntilClose);
    assert!(!h.keep_alive);
}

#[test]
fn lengths_must_agree() {
    assert_eq!(
        complete("HTTP/1.1 200 OK\r\ncontent-length: 3, 3\r\n\r\n").framing,
        BodyFraming::Length(3)
    );
    for bad in ["3, 4", "-1", "0x10", "", "99999999999999999999"] {
        let text = format!("HTTP/1.1 200 OK\r\ncontent-length: {bad}\r\n\r\n");
        assert_eq!(
            head(&text, &Method::GET).unwrap_err(),
            WireError::Head("content-length"),
            "{bad}"
        );
    }
}

#[test]
fn keep_alive_follows_version_and_connection() {
    assert!(
        !complete("HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 0\r\n\r\n").keep_alive
    );
    assert!(
        !complete("HTTP/1.1 200 OK\r\nConnection: Keep-Alive, CLOSE\r\ncontent-length: 0\r\n\r\n")
            .keep_alive
    );
    assert!(!complete("HTTP/1.0 200 OK\r\ncontent-length: 0\r\n\r\n").keep_alive);
    assert!(
        complete("HTTP/1.0 200 OK\r\nconnection: keep-alive\r\ncontent-length: 0\r\n\r\n")
            .keep_alive
    );
    assert!(
        !complete("HTTP/1.1 200 OK\r\n\r\n").keep_alive,
        "a body until close"
    );
}

#[test]
fn malformed_heads_are_errors() {
    for bad in [
        "HTTP/1.1 2000 OK\r\n\r\n",
        "HTTP/2 200 OK\r\n\r\n",
        "garbage\r\n\r\n",
        "HTTP/1.1 101 Switching\r\n\r\n",
    ] {
        assert!(head(bad, &Method::GET).is_err(), "{bad:?}");
    }
    let many: String = (0..=MAX_HEADERS).map(|i| format!("x{i}: v\r\n")).collect();
    let text = format!("HTTP/1.1 200 OK\r\n{many}\r\n");
    assert_eq!(
        head(&text, &Method::GET).unwrap_err(),
        WireError::Head("too many headers")
    );
}

#[test]
fn a_length_body_ends_at_its_length_in_any_split() {
    for step in [1, 2, 3, 7, 100] {
        let (body, ended) = decode_in_steps(BodyFraming::Length(5), b"hello", step).unwrap();
        assert_eq!(body, b"hello");
        assert!(ended);
    }
    let mut decoder = Decoder::new(BodyFraming::Length(3));
    let mut buf = BytesMut::from("abcNEXT");
    assert_eq!(
        decoder.decode(&mut buf).unwrap(),
        Decoded::Data(Bytes::from_static(b"abc"))
    );
    assert_eq!(decoder.decode(&mut buf).unwrap(), Decoded::End);
    assert_eq!(&buf[..], b"NEXT", "the next answer's bytes stay");
}

#[test]
fn a_chunked_body_is_decoded_in_any_split() {
    let wire = b"5;ext=1\r\nhello\r\nA\r\n, chunked!\r\n0\r\nx-trailer: t\r\n\r\nNEXT";
    for step in [1, 2, 3, 5, 8, 13, 200] {
        let (body, ended) = decode_in_steps(BodyFraming::Chunked, wire, step).unwrap();
        assert_eq!(body, b"hello, chunked!", "step {step}");
        assert!(ended, "step {step}");
    }
}

#[test]
fn bad_chunks_are_errors() {
    for bad in [
        &b"zz\r\n"[..],
        b"5\r\nhelloXX",
        b"5\nhello",
        b"1234567890abcdef0\r\n",
    ] {
        assert!(
            decode_in_steps(BodyFraming::Chunked, bad, 100).is_err(),
            "{bad:?}"
        );
    }
    let long = vec![b'1'; MAX_LINE_BYTES + 1];
    assert_eq!(
        decode_in_steps(BodyFraming::Chunked, &long, 100000).unwrap_err(),
        WireError::Chunk("line too long")
    );
}

#[test]
fn a_close_ends_only_a_body_delimited_by_it() {
    let mut until_close = Decoder::new(BodyFraming::UntilClose);
    assert!(until_close.closed().is_ok());
    assert!(until_close.is_end());
    assert_eq!(
        Decoder::new(BodyFraming::Length(3)).closed().unwrap_err(),
        WireError::Incomplete
    );
    assert_eq!(
        Decoder::new(BodyFraming::Chunked).closed().unwrap_err(),
        WireError::Incomplete
    );
    assert!(Decoder::new(BodyFraming::Empty).closed().is_ok());
}

/// A body chunk-encoded with the given chunk sizes.
fn chunked(body: &[u8], sizes: &[usize]) -> Vec<u8> {
    let mut wire = Vec::new();
    let mut rest = body;
    let mut sizes = sizes.iter().cycle();
    while !rest.is_empty() {
        let n = (*sizes.next().unwrap()).clamp(1, rest.len());
        push_chunk_size(&mut wire, n);
        wire.extend_from_slice(&rest[..n]);
        wire.extend_from_slice(b"\r\n");
        rest = &rest[n..];
    }
    wire.extend_from_slice(LAST_CHUNK);
    wire
}

#[test]
fn the_connections_own_fields_are_left_out_and_the_rest_kept_in_order() {
    let h = complete(
        "HTTP/1.1 200 OK\r\nServer: nginx\r\nConnection: X-Trace\r\n\
         X-Trace: 1\r\nKeep-Alive: timeout=5\r\nDate: Wed, 02 Dec 2026 16:00:00 GMT\r\n\
         Set-Cookie: JSESSIONID=a; Path=/\r\nUpgrade: h2c\r\nTE: trailers\r\n\
         Proxy-Connection: x\r\nTrailer: y\r\nContent-Type: text/plain\r\n\
         Transfer-Encoding: chunked\r\nContent-Length: 5\r\nProxy-Authenticate: z\r\n\r\n",
    );
    let kept: Vec<_> = h
        .fields
        .iter()
        .map(|(name, value, kind)| {
            let text = |b: &[u8]| String::from_utf8(b.to_vec()).unwrap();
            (text(name), text(value), kind)
        })
        .collect();
    let expected = [
        ("Server", "nginx", Kind::Other),
        ("Date", "Wed, 02 Dec 2026 16:00:00 GMT", Kind::Date),
        ("Set-Cookie", "JSESSIONID=a; Path=/", Kind::SetCookie),
        ("Content-Type", "text/plain", Kind::Other),
    ];
    let expected: Vec<_> = expected
        .iter()
        .map(|(n, v, k)| (n.to_string(), v.to_string(), *k))
        .collect();
    assert_eq!(
        kept, expected,
        "names as the node spelled them, in its order"
    );
    assert!(h.fields.sets_cookie("JSESSIONID"));
    assert!(!h.fields.sets_cookie("JSESSION"));
    assert_eq!(h.framing, BodyFraming::Chunked);
}

#[test]
fn a_length_is_kept_without_a_coding_and_the_gateways_headers_follow() {
    let h = complete(
        "HTTP/1.1 200 OK\r\ncontent-length: 2\r\nset-cookie: a=1\r\nconnection: close\r\nx-empty:\r\n\r\n",
    );
    assert!(!h.keep_alive);
    assert!(!h.fields.sets_cookie("JSESSIONID"));
    let mut added = HeaderMap::new();
    added.append(header::SET_COOKIE, HeaderValue::from_static("b=2"));
    added.append(header::SET_COOKIE, HeaderValue::from_static("c=3"));
    added.append("x-gw", HeaderValue::from_static("1"));
    let map = h.fields.into_header_map(added);
    let cookies: Vec<_> = map.get_all(header::SET_COOKIE).iter().collect();
    assert_eq!(cookies, ["a=1", "b=2", "c=3"]);
    assert_eq!(map["content-length"], "2");
    assert_eq!(map["x-gw"], "1");
    assert!(!map.contains_key(header::CONNECTION));
    assert_eq!(map["x-empty"], "", "an empty value is a field too");
    assert_eq!(map.len(), 6);
}

proptest::proptest! {
    /// Every field a node head passes on reaches hyper's map: httparse
    /// accepts exactly the names and values `http` does, so none is lost
    /// on the way from the node's bytes to a map.
    #[test]
    fn every_field_passed_on_fits_a_header_map(
        fields in proptest::collection::vec(
            (proptest::string::bytes_regex("[!-~]{1,12}").unwrap(),
             proptest::collection::vec(proptest::prop_oneof![
                 8 => 0x20u8..0x7f, 2 => 0x80u8..=0xff, 1 => proptest::strategy::Just(b'\t'),
                 1 => proptest::prelude::any::<u8>(),
             ], 0..24)),
            0..8,
        ),
    ) {
        let mut text = b"HTTP/1.1 200 OK\r\n".to_vec();
        for (name, value) in &fields {
            text.extend_from_slice(name);
            text.extend_from_slice(b": ");
            text.extend_from_slice(value);
            text.extend_from_slice(b"\r\n");
        }
        text.extend_from_slice(b"content-length: 0\r\n\r\n");
        if let Ok(Some(head)) = parse_response_head(&mut BytesMut::from(&text[..]), &Method::GET) {
            let passed = head.fields.iter().count();
            proptest::prop_assert_eq!(passed_on(head).len(), passed);
        }
    }
}

proptest::proptest! {
    /// Whatever a node sends, parsing and decoding it returns (an answer or
    /// an error) and never panics.
    #[test]
    fn any_bytes_from_a_node_are_parsed_or_refused(
        wire in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..600),
        prefix in proptest::sample::select(vec![
            "", "HTTP/1.1 200 OK\r\n", "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n",
            "HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\n",
        ]),
        step in 1usize..50,
    ) {
        let mut bytes = prefix.as_bytes().to_vec();
        bytes.extend_from_slice(&wire);
        let mut buf = BytesMut::new();
        let mut decoder = None;
        for piece in bytes.chunks(step) {
            buf.extend_from_slice(piece);
            if decoder.is_none() {
                match parse_response_head(&mut buf, &Method::GET) {
                    Ok(Some(head)) => decoder = Some(Decoder::new(head.framing)),
                    Ok(None) => continue,
                    Err(_) => return Ok(()),
                }
            }
            let decoder = decoder.as_mut().unwrap();
            loop {
                match decoder.decode(&mut buf) {
                    Ok(Decoded::Data(data)) => proptest::prop_assert!(!data.is_empty()),
                    Ok(Decoded::NeedMore) => break,
                    Ok(Decoded::End) | Err(_) => return Ok(()),
                }
            }
        }
        if let Some(mut decoder) = decoder {
            let _ = decoder.closed();
        }
    }

    /// A chunked body, cut into chunks of any sizes and read in pieces of
    /// any size, decodes to itself.
    #[test]
    fn chunked_bodies_decode_to_what_was_encoded(
        body in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..2000),
        sizes in proptest::collection::vec(1usize..300, 1..8),
        step in 1usize..400,
    ) {
        let (decoded, ended) = decode_in_steps(BodyFraming::Chunked, &chunked(&body, &sizes), step).unwrap();
        proptest::prop_assert_eq!(decoded, body);
        proptest::prop_assert!(ended);
    }
}
