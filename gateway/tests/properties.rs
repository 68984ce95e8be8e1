//! Property tests standing in for fuzzing (`cargo fuzz` needs a nightly
//! toolchain, which this project's machines do not have): every parser that
//! reads what another party wrote — Curator instance JSON and election
//! znode names from ZooKeeper, request paths from clients, the operator's
//! config — is fed seeds of real shapes (from Kylin's and Curator's source,
//! `../shared/kylin-zookeeper.md`), mutations of them and arbitrary input.
//! It must never panic, and what it accepts must make sense. Bounded:
//! [`cases`] per property, a few seconds in all, run by `cargo test`; a
//! longer hunt sets `KGW_PROPTEST_CASES` (e.g. 200000).
//! A failing case is shrunk by proptest and printed; fix it, and keep it as
//! a regression test beside the parser.

use http::Method;
use kylin_gateway::classify::{Classifier, TrafficClass};
use kylin_gateway::discovery::zookeeper::election::{leader_znode, lock_sequence};
use kylin_gateway::discovery::zookeeper::instance::parse_instance;
use kylin_gateway::view::Modes;
use proptest::prelude::*;

/// Cases per property: `KGW_PROPTEST_CASES`, or 2,000.
fn cases() -> u32 {
    std::env::var("KGW_PROPTEST_CASES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(2000)
}

/// Instance documents as the Kylin and Curator versions write them.
const INSTANCE_SEEDS: &[&str] = &[
    // Kylin 3.1 (Curator 2.12+): enabled, mode in the description.
    r#"{"name":"cluster_servers","id":"7f6c1b0e-3a52-4d3e-9d7a-1f2e3d4c5b6a","address":"node1","port":7070,"sslPort":null,"payload":{"description":"all"},"registrationTimeUTC":1700000000000,"serviceType":"DYNAMIC","uriSpec":null,"enabled":true}"#,
    // KAP 2.4 / Kylin 3.0: host:port description, no enabled.
    r#"{"name":"kylin","id":"7f6c1b0e","address":"node1","port":7070,"sslPort":null,"payload":{"description":"node1:7070"},"registrationTimeUTC":1700000000000,"serviceType":"DYNAMIC","uriSpec":null}"#,
    // Kylin 3.0 host:port:mode.
    r#"{"name":"kylin","id":"a","address":"10.0.0.5","port":7070,"payload":{"description":"10.0.0.5:7070:query"}}"#,
    // Curator 5 serializer: @class in the payload, sslPort set, disabled.
    r#"{"name":"cluster_servers","id":"x","address":"10.0.0.5","port":7070,"sslPort":7443,"payload":{"@class":"java.util.LinkedHashMap","description":"job"},"registrationTimeUTC":1,"serviceType":"DYNAMIC","uriSpec":null,"enabled":false}"#,
    // Kylin 3.1.1 comma list.
    r#"{"name":"cluster_servers","id":"b","address":"node2","port":7070,"payload":{"description":"query,job"}}"#,
    // Kylin 5 (Spring Cloud ZooKeeper ZookeeperInstance payload).
    r#"{"name":"job","id":"c","address":"host1","port":7070,"sslPort":null,"payload":{"@class":"org.springframework.cloud.zookeeper.discovery.ZookeeperInstance","id":"kylin-1","name":"job","metadata":{"instance_status":"UP"}},"registrationTimeUTC":1700000000000,"serviceType":"DYNAMIC","uriSpec":{"parts":[{"value":"scheme","variable":true},{"value":"://","variable":false}]}}"#,
];

/// One edit of a seed: cut a range out, splice bytes in, or both.
fn mutated(seeds: &'static [&'static str]) -> impl Strategy<Value = Vec<u8>> {
    (
        prop::sample::select(seeds),
        any::<prop::sample::Index>(),
        0usize..16,
        prop::collection::vec(
            prop_oneof![
                prop::sample::select(b"{}[]\":,-.0123456789eE nultrfas\\".to_vec()),
                any::<u8>()
            ],
            0..8,
        ),
    )
        .prop_map(|(seed, at, cut, splice)| {
            let mut bytes = seed.as_bytes().to_vec();
            let at = at.index(bytes.len() + 1);
            let end = (at + cut).min(bytes.len());
            bytes.splice(at..end, splice);
            bytes
        })
}

/// A JSON value of the kinds a field may wrongly hold.
fn json_scalar() -> impl Strategy<Value = serde_json::Value> {
    prop_oneof![
        Just(serde_json::Value::Null),
        any::<bool>().prop_map(serde_json::Value::from),
        // Ports at and past the edges, as numbers and as strings.
        prop::sample::select(vec![0i64, -1, 1, 7070, 65535, 65536, i64::MAX])
            .prop_map(serde_json::Value::from),
        prop::sample::select(vec![
            "0",
            "7070",
            " 7070 ",
            "-1",
            "65536",
            "7070.0",
            "node1:7070"
        ])
        .prop_map(serde_json::Value::from),
        any::<i64>().prop_map(serde_json::Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(serde_json::Value::from),
        "[a-z0-9.:,_ -]{0,24}".prop_map(serde_json::Value::from),
        Just(serde_json::json!({})),
        Just(serde_json::json!([])),
    ]
}

/// A Curator document with every known field present or not, and each
/// holding a right or a wrong kind of value.
fn instance_document() -> impl Strategy<Value = serde_json::Value> {
    let field = |name: &'static str| prop::option::of(json_scalar()).prop_map(move |v| (name, v));
    (
        field("address"),
        field("port"),
        field("sslPort"),
        field("enabled"),
        field("id"),
        prop::option::of(prop_oneof![
            json_scalar(),
            json_scalar().prop_map(|d| serde_json::json!({ "description": d })),
            json_scalar().prop_map(|s| serde_json::json!({ "metadata": { "instance_status": s } })),
        ]),
    )
        .prop_map(|(a, b, c, d, e, payload)| {
            let mut doc = serde_json::Map::new();
            for (name, value) in [a, b, c, d, e] {
                if let Some(value) = value {
                    doc.insert(name.to_string(), value);
                }
            }
            if let Some(payload) = payload {
                doc.insert("payload".into(), payload);
            }
            serde_json::Value::Object(doc)
        })
}

/// What an accepted instance must look like, whatever the input.
fn check_instance(data: &[u8]) -> Result<(), TestCaseError> {
    if let Ok(instance) = parse_instance("znode", data, Modes::ALL) {
        prop_assert!(!instance.host.trim().is_empty(), "empty host from {data:?}");
        prop_assert!(instance.port != 0, "port 0 from {data:?}");
        prop_assert!(!instance.id.is_empty());
        prop_assert!(
            instance.modes.query || instance.modes.job,
            "no mode from {data:?}"
        );
    }
    Ok(())
}

#[test]
fn every_instance_seed_parses() {
    for seed in INSTANCE_SEEDS {
        let instance = parse_instance("znode", seed.as_bytes(), Modes::ALL)
            .unwrap_or_else(|e| panic!("{seed}: {e}"));
        assert_eq!(instance.port, 7070, "{seed}");
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases()))]

    #[test]
    fn instance_parser_survives_mutated_seeds(data in mutated(INSTANCE_SEEDS)) {
        check_instance(&data)?;
    }

    #[test]
    fn instance_parser_survives_wrongly_typed_fields(doc in instance_document()) {
        check_instance(doc.to_string().as_bytes())?;
    }

    #[test]
    fn instance_parser_survives_arbitrary_bytes(data in prop::collection::vec(any::<u8>(), 0..256)) {
        check_instance(&data)?;
    }

    #[test]
    fn lock_sequence_reads_back_what_curator_writes(
        prefix in "(_c_[0-9a-f-]{0,36}-)?",
        sequence in 0u64..10_000_000_000,
    ) {
        let name = format!("{prefix}lock-{sequence:010}");
        prop_assert_eq!(lock_sequence(&name), Some(sequence));
    }

    #[test]
    fn lock_sequence_survives_arbitrary_names(name in any::<String>()) {
        if let Some(sequence) = lock_sequence(&name) {
            let (_, digits) = name.rsplit_once("lock-").expect("a lock name");
            prop_assert!(digits.bytes().all(|b| b.is_ascii_digit()));
            prop_assert_eq!(digits.parse::<u64>().ok(), Some(sequence));
        }
    }

    #[test]
    fn the_leader_is_the_lowest_sequence_whatever_the_names(
        children in prop::collection::vec(
            prop_oneof![
                (0u64..1000).prop_map(|n| format!("_c_{n:x}-lock-{n:010}")),
                (0u64..1000).prop_map(|n| format!("lock-{n:010}")),
                "[a-z_-]{0,12}",
            ],
            0..12,
        )
    ) {
        let lowest = children.iter().filter_map(|c| lock_sequence(c)).min();
        let leader = leader_znode(&children);
        prop_assert_eq!(leader.and_then(lock_sequence), lowest);
    }
}

/// Path segments Kylin's REST API uses, and some that it does not.
const SEGMENTS: &[&str] = &[
    "kylin",
    "api",
    "query",
    "prestate",
    "async_query",
    "cubes",
    "models",
    "jobs",
    "segments",
    "rebuild",
    "build",
    "projects",
    "tables",
    "sampling_jobs",
    "snapshots",
    "indices",
    "status",
    "resume",
    "cancel",
    "user",
    "admin",
    "",
    ".",
    "..",
    "%2F",
    "%00",
    "x",
];

fn request_path() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::collection::vec(prop::sample::select(SEGMENTS), 0..8)
            .prop_map(|segments| format!("/{}", segments.join("/"))),
        any::<String>(),
    ]
}

fn method() -> impl Strategy<Value = Method> {
    prop_oneof![
        prop::sample::select(vec![
            Method::GET,
            Method::POST,
            Method::PUT,
            Method::DELETE,
            Method::HEAD,
            Method::OPTIONS,
            Method::PATCH,
        ]),
        "[A-Z]{1,10}".prop_map(|m| Method::from_bytes(m.as_bytes()).unwrap()),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases()))]

    /// Deterministic, and a request sent twice by a retry (replay-safe) is
    /// never one that starts or changes a job.
    #[test]
    fn classification_is_total_and_replay_never_resends_a_job(
        method in method(),
        path in request_path(),
    ) {
        let classifier = Classifier::new(Vec::new(), "/kylin/api");
        let class = classifier.classify(&method, &path);
        prop_assert_eq!(class, classifier.classify(&method, &path));
        if classifier.replay_safe(&method, &path) && class == TrafficClass::Job {
            prop_assert!(
                method == Method::GET || method == Method::HEAD || method == Method::OPTIONS,
                "{method} {path} is a job and would be resent"
            );
        }
    }
}

/// The documented example config, line by line: a mutation replaces or
/// drops one line, or splices text into it.
fn mutated_config() -> impl Strategy<Value = String> {
    let example = include_str!("../../gateway.example.toml");
    let lines: Vec<String> = example.lines().map(String::from).collect();
    (
        any::<prop::sample::Index>(),
        prop_oneof![
            Just(String::new()),
            "[a-z_.]{1,20} = [-0-9]{1,12}",
            "[a-z_.]{1,20} = \"[ -~]{0,20}\"",
            "\\[[a-z_.]{1,16}\\]",
            "[ -~]{0,30}",
        ],
    )
        .prop_map(move |(at, line)| {
            let mut lines = lines.clone();
            let at = at.index(lines.len());
            lines[at] = line;
            lines.join("\n")
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases() / 4))]

    /// A bad config is one line naming what is wrong; never a panic.
    #[test]
    fn config_errors_are_one_line(text in mutated_config()) {
        if let Err(error) = kylin_gateway::config::parse(&text) {
            let message = error.to_string();
            prop_assert!(!message.contains('\n'), "{message}");
            prop_assert!(!message.is_empty());
        }
    }

    #[test]
    fn config_parser_survives_arbitrary_text(text in any::<String>()) {
        if let Err(error) = kylin_gateway::config::parse(&text) {
            prop_assert!(!error.to_string().contains('\n'));
        }
    }
}
