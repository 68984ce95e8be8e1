//! `query-affinity`: sends the same query of the same project to the same
//! query node, so Kylin's per-node query cache is warm for repeats, while
//! different queries spread. Rendezvous (highest-random-weight) hashing of
//! the key over the healthy query-serving nodes: when a node leaves, only
//! its keys move. The key is (project, whitespace-normalised SQL) from the
//! JSON body of `POST /kylin/api/query`, or just the project (from the body
//! or the `project` query parameter) with `"hash": "project"`.
//!
//! Config (JSON, all optional):
//! `{"hash": "project+sql" | "project", "body_prefix": 16384, "candidates": 3,
//!   "header": "x-kylin-affinity"}`
//! `candidates` is how many nodes of the ranking the gateway gets, in order
//! (it takes the first usable one; more cost a little time per call).
//! `header`, when set, is added to the upstream request with the key's hash
//! (handy to see affinity at work in access logs).

wit_bindgen::generate!({
    path: "../../wit",
    world: "routing-plugin",
});

use std::borrow::Cow;
use std::cell::RefCell;
use std::sync::OnceLock;

use kylin_gateway::plugin::host::log;
use kylin_gateway::plugin::types::{LogLevel, Route, TrafficClass};

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    #[serde(default = "default_hash")]
    hash: String,
    #[serde(default = "default_body_prefix")]
    body_prefix: u32,
    #[serde(default)]
    header: Option<String>,
    #[serde(default = "default_candidates")]
    candidates: usize,
}

fn default_candidates() -> usize {
    3
}

fn default_hash() -> String {
    "project+sql".into()
}

fn default_body_prefix() -> u32 {
    16 * 1024
}

static CONFIG: OnceLock<Config> = OnceLock::new();

thread_local! {
    /// The last view from `view-changed`: (node id, serves queries, id hash).
    static NODES: RefCell<Vec<(String, bool, u64)>> = const { RefCell::new(Vec::new()) };
    /// `route`'s ranking of the nodes, (score, index), kept between calls so
    /// that a call does not allocate it.
    static RANKED: RefCell<Vec<(u64, usize)>> = const { RefCell::new(Vec::new()) };
}

/// The JSON fields of Kylin's `SQLRequest` that matter here.
#[derive(serde::Deserialize)]
struct QueryBody<'a> {
    #[serde(borrow)]
    project: Option<JsonBytes<'a>>,
    #[serde(borrow)]
    sql: Option<JsonBytes<'a>>,
}

/// A JSON string's unescaped bytes, borrowed from the body unless the
/// string had escapes. Not checked for UTF-8: the key hashes bytes, and the
/// check cost about a tenth of a call.
struct JsonBytes<'a>(Cow<'a, [u8]>);

impl<'de: 'a, 'a> serde::Deserialize<'de> for JsonBytes<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Bytes<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> serde::de::Visitor<'de> for Bytes<'a> {
            type Value = JsonBytes<'a>;

            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a string")
            }

            fn visit_borrowed_bytes<E>(self, bytes: &'de [u8]) -> Result<Self::Value, E> {
                Ok(JsonBytes(Cow::Borrowed(bytes)))
            }

            fn visit_bytes<E>(self, bytes: &[u8]) -> Result<Self::Value, E> {
                Ok(JsonBytes(Cow::Owned(bytes.to_vec())))
            }
        }
        deserializer.deserialize_bytes(Bytes(std::marker::PhantomData))
    }
}

struct QueryAffinity;

impl Guest for QueryAffinity {
    fn init(config: String) -> Result<(), String> {
        let config: Config = if config.trim().is_empty() {
            serde_json::from_str("{}")
        } else {
            serde_json::from_str(&config)
        }
        .map_err(|e| format!("query-affinity config: {e}"))?;
        if config.hash != "project+sql" && config.hash != "project" {
            return Err(format!(
                "query-affinity config: hash must be \"project+sql\" or \"project\", not {:?}",
                config.hash
            ));
        }
        CONFIG
            .set(config)
            .map_err(|_| "init called twice".to_string())
    }

    fn needs() -> Needs {
        let config = CONFIG.get().expect("init ran");
        Needs {
            classes: vec![TrafficClass::Query],
            body_prefix_len: config.body_prefix,
            headers: false,
        }
    }

    fn view_changed(view: View) {
        NODES.with_borrow_mut(|nodes| {
            *nodes = view
                .nodes
                .into_iter()
                .map(|n| {
                    let hash = fnv1a(n.id.as_bytes());
                    (n.id, n.serves_query, hash)
                })
                .collect();
        });
    }

    fn route(request: Request, load: ViewLoad) -> Decision {
        let config = CONFIG.get().expect("init ran");
        let Some(key) = affinity_key(&request, config.hash == "project") else {
            return Decision {
                route: Route::Default,
                add_headers: Vec::new(),
            };
        };
        let preferred = NODES.with_borrow(|nodes| {
            RANKED.with_borrow_mut(|ranked| {
                ranked.clear();
                ranked.extend(
                    nodes
                        .iter()
                        .zip(&load.nodes)
                        .enumerate()
                        .filter(|(_, ((_, serves_query, _), live))| *serves_query && live.healthy)
                        .map(|(i, ((_, _, id_hash), _))| (mix(key ^ id_hash), i)),
                );
                ranked.sort_unstable_by(|a, b| b.cmp(a));
                ranked
                    .iter()
                    .take(config.candidates.max(1))
                    .map(|&(_, i)| nodes[i].0.clone())
                    .collect::<Vec<String>>()
            })
        });
        if preferred.is_empty() {
            log(
                LogLevel::Debug,
                "no healthy query node; keeping the built-in choice",
            );
            return Decision {
                route: Route::Default,
                add_headers: Vec::new(),
            };
        }
        let add_headers = match &config.header {
            Some(name) => vec![(name.clone(), format!("{key:016x}"))],
            None => Vec::new(),
        };
        Decision {
            route: Route::Prefer(preferred),
            add_headers,
        }
    }
}

/// The hash of (project, normalised SQL), or of the project alone; `None`
/// when the request names no project.
fn affinity_key(request: &Request, project_only: bool) -> Option<u64> {
    let body: Option<QueryBody> = serde_json::from_slice(&request.body_prefix).ok();
    let (body_project, sql) = match body {
        Some(body) => (body.project, body.sql),
        None => (None, None),
    };
    let project = match body_project {
        Some(JsonBytes(project)) => project,
        None => Cow::Owned(query_param(request.query.as_deref()?, "project")?.into_bytes()),
    };
    let mut hash = fnv1a(&project);
    if !project_only && let Some(JsonBytes(sql)) = sql {
        hash = hash_normalised_sql(hash ^ 0xff, &sql);
    }
    Some(hash)
}

/// Hashes `sql` as if every run of ASCII whitespace were one space and the
/// ends trimmed, so reformatted copies of a query share a key (without
/// building the normalised string; byte-wise, as SQL layout whitespace is
/// ASCII). Case is kept: SQL literals are case-sensitive.
fn hash_normalised_sql(mut hash: u64, sql: &[u8]) -> u64 {
    let mut pending_space = false;
    let mut started = false;
    for &b in sql {
        if b.is_ascii_whitespace() {
            pending_space = started;
            continue;
        }
        if pending_space {
            hash = fnv1a_byte(hash, b' ');
            pending_space = false;
        }
        started = true;
        hash = fnv1a_byte(hash, b);
    }
    hash
}

/// The first value of `name` in a raw query string (`%XX` and `+` decoded).
fn query_param(query: &str, name: &str) -> Option<String> {
    query.split('&').find_map(|pair| {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        (key == name).then(|| percent_decode(value))
    })
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let escaped = match (bytes[i], bytes.get(i + 1), bytes.get(i + 2)) {
            (b'%', Some(&hi), Some(&lo)) => hex(hi).zip(hex(lo)).map(|(h, l)| h << 4 | l),
            _ => None,
        };
        match (escaped, bytes[i]) {
            (Some(b), _) => {
                out.push(b);
                i += 3;
            }
            (None, b'+') => {
                out.push(b' ');
                i += 1;
            }
            (None, b) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn hex(digit: u8) -> Option<u8> {
    (digit as char).to_digit(16).map(|d| d as u8)
}

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;

fn fnv1a(bytes: &[u8]) -> u64 {
    fnv1a_continue(FNV_OFFSET, bytes)
}

fn fnv1a_continue(hash: u64, bytes: &[u8]) -> u64 {
    bytes.iter().fold(hash, |hash, &b| fnv1a_byte(hash, b))
}

fn fnv1a_byte(hash: u64, byte: u8) -> u64 {
    (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3)
}

/// SplitMix64's finaliser: spreads (key ^ node) so rendezvous scores are
/// independent per node.
fn mix(mut x: u64) -> u64 {
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

export!(QueryAffinity);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn whitespace_is_normalised_but_case_kept() {
        let h = |sql: &str| hash_normalised_sql(0, sql.as_bytes());
        assert_eq!(h("  select *\n\tFROM  t "), h("select * FROM t"));
        assert_ne!(h("select * from t"), h("select * FROM t"));
        assert_ne!(h("select a"), h("selecta"));
    }

    fn request_with(body: &str, query: Option<&str>) -> Request {
        Request {
            method: "POST".into(),
            path: "/kylin/api/query".into(),
            query: query.map(Into::into),
            headers: Vec::new(),
            class: TrafficClass::Query,
            client: "10.0.0.1:5000".into(),
            body_prefix: body.as_bytes().to_vec(),
            now_unix_ms: 0,
        }
    }

    #[test]
    fn the_key_reads_escaped_json_strings_as_their_text() {
        let key = |body| affinity_key(&request_with(body, None), false);
        let plain = key(r#"{"project":"learn_kylin","sql":"select \"A\" from t"}"#);
        assert!(plain.is_some());
        assert_eq!(
            key(r#"{"limit":5,"project":"learn\u005fkylin","sql":"select \u0022A\" from t"}"#),
            plain
        );
        assert_ne!(
            key(r#"{"project":"learn_kylin","sql":"select A from t"}"#),
            plain
        );
        assert_eq!(
            key(r#"{"project":"learn_kylin","sql":"select \"A\"\n from  t"}"#),
            plain,
            "an escaped newline is whitespace like any other"
        );
    }

    #[test]
    fn the_project_comes_from_the_query_string_when_the_body_names_none() {
        let key = |body, query| affinity_key(&request_with(body, query), true);
        let from_body = key(r#"{"project":"learn_kylin"}"#, None);
        assert!(from_body.is_some());
        assert_eq!(
            key(r#"{"sql":"select 1"}"#, Some("project=learn%5Fkylin")),
            from_body
        );
        assert_eq!(key("not json", Some("project=learn_kylin")), from_body);
        assert_eq!(
            key(r#"{"project":7}"#, None),
            None,
            "a project that is no string"
        );
        assert_eq!(key("{}", Some("limit=1")), None);
    }

    #[test]
    fn query_param_decodes() {
        assert_eq!(
            query_param("a=1&project=learn%5Fkylin", "project").as_deref(),
            Some("learn_kylin")
        );
        assert_eq!(query_param("a=1", "project"), None);
    }
}
