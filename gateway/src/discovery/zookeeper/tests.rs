use std::net::SocketAddr;

use super::election::{
    Candidate, Election, leader_info, leader_znode, lock_sequence, map_participant,
};
use super::instance::{MalformedInstance, modes_from_description, parse_instance};
use super::paths::Paths;
use super::state::Known;
use crate::config::Layout;
use crate::view::{Modes, Node};

const UUID: &str = "4b7e0c1a-8d7f-4a83-9d0e-6f1f0f7f6a11";

fn parse(json: &str) -> Result<super::instance::Instance, MalformedInstance> {
    parse_instance(UUID, json.as_bytes(), Modes::ALL)
}

#[test]
fn paths_per_layout() {
    let auto = Paths::new("/kylin/kylin_metadata", Layout::Auto);
    assert_eq!(
        auto.services,
        [
            "/kylin/kylin_metadata/service/kylin",
            "/kylin/kylin_metadata/service/cluster_servers",
            "/kylin/kylin_metadata/services/all",
            "/kylin/kylin_metadata/services/job",
            "/kylin/kylin_metadata/services/query",
        ]
    );
    assert!(auto.elects);
    assert_eq!(auto.election, "/kylin/kylin_metadata/job_engine/leader");
    assert_eq!(
        auto.legacy_lock,
        "/kylin/kylin_metadata/job_engine/global_job_engine_lock"
    );
    for layout in [Layout::Kap24, Layout::Kylin30] {
        assert_eq!(
            Paths::new("/kylin/p", layout).services,
            ["/kylin/p/service/kylin"]
        );
    }
    let v31 = Paths::new("/kylin/p", Layout::Kylin31);
    assert_eq!(v31.services, ["/kylin/p/service/cluster_servers"]);
    // A base of `/` (everything under the connect string's chroot).
    assert_eq!(
        Paths::new("/", Layout::Kylin31).election,
        "/job_engine/leader"
    );
}

#[test]
fn kylin_31_instance() {
    let i = parse(&format!(
        r#"{{"name":"cluster_servers","id":"{UUID}","address":"node1","port":7070,"sslPort":null,"payload":{{"description":"query"}},"registrationTimeUTC":1700000000000,"serviceType":"DYNAMIC","uriSpec":null,"enabled":true}}"#
    ))
    .unwrap();
    assert_eq!(&*i.id, UUID);
    assert_eq!(&*i.host, "node1");
    assert_eq!(i.port, 7070);
    assert_eq!(i.ssl_port, None);
    assert_eq!(i.modes, Modes::QUERY);
    assert!(i.enabled);
}

#[test]
fn kap_24_instance_without_enabled_gets_default_mode() {
    let json = r#"{"name":"kylin","id":"abc","address":"node1","port":7070,"sslPort":null,"payload":{"description":"node1:7070"},"registrationTimeUTC":1700000000000,"serviceType":"DYNAMIC","uriSpec":null}"#;
    let i = parse_instance("abc", json.as_bytes(), Modes::QUERY).unwrap();
    assert_eq!(
        i.modes,
        Modes::QUERY,
        "host:port names no mode: the default"
    );
    assert!(i.enabled, "a missing enabled field means enabled");
    let i = parse_instance("abc", json.as_bytes(), Modes::ALL).unwrap();
    assert_eq!(i.modes, Modes::ALL);
}

#[test]
fn curator5_class_in_payload_and_enabled_false() {
    let i = parse(
        r#"{"name":"cluster_servers","id":"x","address":"10.0.0.5","port":7070,"sslPort":7443,"payload":{"@class":"java.util.LinkedHashMap","description":"job"},"registrationTimeUTC":1,"serviceType":"DYNAMIC","uriSpec":null,"enabled":false}"#,
    )
    .unwrap();
    assert_eq!(i.modes, Modes::JOB);
    assert!(!i.enabled);
    assert_eq!(i.ssl_port, Some(7443));
}

#[test]
fn every_description_form() {
    let cases = [
        ("all", Some(Modes::ALL)),
        ("query", Some(Modes::QUERY)),
        ("job", Some(Modes::JOB)),
        ("query,job", Some(Modes::ALL)),
        (" QUERY ", Some(Modes::QUERY)),
        ("node1:7070:query", Some(Modes::QUERY)),
        ("node1:7070:all", Some(Modes::ALL)),
        ("node1:7070:job", Some(Modes::JOB)),
        ("node1:7070", None),
        ("stream_coordinator", None),
        ("", None),
    ];
    for (description, expected) in cases {
        assert_eq!(
            modes_from_description(description.trim()),
            expected,
            "{description:?}"
        );
        let json = format!(
            r#"{{"id":"i","address":"h","port":1,"payload":{{"description":"{description}"}}}}"#
        );
        let i = parse_instance("i", json.as_bytes(), Modes::JOB).unwrap();
        assert_eq!(i.modes, expected.unwrap_or(Modes::JOB), "{description:?}");
    }
    // No payload at all, or a payload of another shape.
    for payload in [
        "",
        r#","payload":null"#,
        r#","payload":{"other":1}"#,
        r#","payload":"query""#,
    ] {
        let json = format!(r#"{{"id":"i","address":"h","port":1{payload}}}"#);
        let i = parse_instance("i", json.as_bytes(), Modes::JOB).unwrap();
        let expected = if payload.contains("\"query\"") {
            Modes::QUERY
        } else {
            Modes::JOB
        };
        assert_eq!(i.modes, expected, "{payload}");
    }
}

#[test]
fn missing_fields_fall_back_to_description_or_fail() {
    // Port missing but described as host:port (KAP 2.4 / 3.0).
    let i = parse(r#"{"id":"i","address":"node1","payload":{"description":"node1:7071:query"}}"#)
        .unwrap();
    assert_eq!((i.port, i.modes), (7071, Modes::QUERY));
    // Address and id missing: description and znode name.
    let i = parse(r#"{"port":7070,"payload":{"description":"node2:7070"}}"#).unwrap();
    assert_eq!((&*i.host, &*i.id), ("node2", UUID));
    // Port as a string is tolerated.
    assert_eq!(
        parse(r#"{"address":"h","port":"7072"}"#).unwrap().port,
        7072
    );
    assert_eq!(
        parse(r#"{"id":"i","address":"node1","payload":{"description":"query"}}"#),
        Err(MalformedInstance::NoPort)
    );
    assert_eq!(
        parse(r#"{"address":"h","port":0}"#),
        Err(MalformedInstance::NoPort)
    );
    assert_eq!(
        parse(r#"{"address":"h","port":70000}"#),
        Err(MalformedInstance::NoPort)
    );
    assert_eq!(parse(r#"{"port":7070}"#), Err(MalformedInstance::NoAddress));
    // A description's port 0 is no port either (found by the property
    // test `instance_parser_survives_wrongly_typed_fields`).
    assert!(parse(r#"{"payload":{"description":"a:0"}}"#).is_err());
    assert_eq!(
        parse(r#"{"address":"a","payload":{"description":"a:0:query"}}"#),
        Err(MalformedInstance::NoPort)
    );
    assert_eq!(
        parse(r#"{"address":"","port":7070}"#),
        Err(MalformedInstance::NoAddress)
    );
}

#[test]
fn malformed_data() {
    assert!(matches!(
        parse("{not json"),
        Err(MalformedInstance::NotJson(_))
    ));
    assert!(matches!(parse(""), Err(MalformedInstance::NotJson(_))));
    assert!(matches!(
        parse_instance("i", &[0xff, 0xfe], Modes::ALL),
        Err(MalformedInstance::NotJson(_))
    ));
    assert_eq!(parse("[1,2]"), Err(MalformedInstance::NotObject));
    assert_eq!(parse("\"node1:7070\""), Err(MalformedInstance::NotObject));
}

#[test]
fn lock_sequences() {
    assert_eq!(lock_sequence("lock-0000000007"), Some(7));
    assert_eq!(
        lock_sequence(&format!("_c_{UUID}-lock-0000000012")),
        Some(12)
    );
    assert_eq!(lock_sequence("lock-9"), Some(9));
    assert_eq!(lock_sequence("lock-"), None);
    assert_eq!(lock_sequence("lock-00x1"), None);
    assert_eq!(lock_sequence("latch-0000000001"), None);
    assert_eq!(lock_sequence("global_job_engine_lock"), None);
}

#[test]
fn leader_is_lowest_sequence_not_lowest_name() {
    let children: Vec<String> = [
        // Protected names sort by uuid, not sequence: "_c_0..." < "_c_f...".
        "_c_0000-lock-0000000011",
        "_c_ffff-lock-0000000010",
        "lock-12",
        "latch-0000000001",
        "something-else",
    ]
    .map(String::from)
    .to_vec();
    assert_eq!(leader_znode(&children), Some("_c_ffff-lock-0000000010"));
    // Different widths: 9 < 10 numerically.
    let children = ["lock-0000000010", "_c_a-lock-9"]
        .map(String::from)
        .to_vec();
    assert_eq!(leader_znode(&children), Some("_c_a-lock-9"));
    let none = ["latch-1", "foo"].map(String::from).to_vec();
    assert_eq!(leader_znode(&none), None);
    assert_eq!(leader_znode(&[]), None);
}

fn node(id: &str, host: &str, port: u16, addr: Option<&str>, modes: Modes) -> Node {
    Node {
        id: id.into(),
        host: host.into(),
        port,
        ssl_port: None,
        modes,
        enabled: true,
        addr: addr.map(|a| a.parse::<SocketAddr>().unwrap()),
        resolve_error: None,
    }
}

fn leader(znode: &str, data: &str, owner: i64) -> Election {
    Election::Leader {
        znode: znode.into(),
        data: Some(data.into()),
        owner,
    }
}

#[test]
fn leader_mapped_by_host_port() {
    let nodes = [
        node(
            "a",
            "node1.example",
            7070,
            Some("10.0.0.1:7070"),
            Modes::ALL,
        ),
        node(
            "b",
            "node2.example",
            7070,
            Some("10.0.0.2:7070"),
            Modes::ALL,
        ),
    ];
    let candidates: Vec<_> = nodes
        .iter()
        .map(|node| Candidate { node, owner: 0 })
        .collect();
    let info = leader_info(
        &leader("_c_x-lock-1", "node2.example:7070", 5),
        &candidates,
        None,
        "/e",
    );
    assert_eq!(info.node_id.as_deref(), Some("b"));
    assert_eq!(info.reason, None);
    assert_eq!(info.participant.as_deref(), Some("node2.example:7070"));
    assert_eq!(info.znode.as_deref(), Some("_c_x-lock-1"));
    // The participant may name the resolved IP rather than the hostname.
    let info = leader_info(
        &leader("lock-1", "10.0.0.1:7070", 0),
        &candidates,
        None,
        "/e",
    );
    assert_eq!(info.node_id.as_deref(), Some("a"));
    // Same host, wrong port: no match.
    let info = leader_info(
        &leader("lock-1", "node1.example:9999", 0),
        &candidates,
        None,
        "/e",
    );
    assert_eq!(info.node_id, None);
    assert!(
        info.reason
            .unwrap()
            .contains("matches no discovered instance")
    );
}

#[test]
fn leader_mapped_by_bare_ip_prefers_job_capable_then_lowest_id() {
    let nodes = [
        node("c", "host1", 7072, Some("10.0.0.1:7072"), Modes::ALL),
        node("a", "host1", 7070, Some("10.0.0.1:7070"), Modes::QUERY),
        node("b", "host1", 7071, Some("10.0.0.1:7071"), Modes::ALL),
        node("d", "host2", 7070, Some("10.0.0.2:7070"), Modes::ALL),
    ];
    let candidates: Vec<_> = nodes
        .iter()
        .map(|node| Candidate { node, owner: 0 })
        .collect();
    let info = leader_info(&leader("lock-3", "10.0.0.1", 0), &candidates, None, "/e");
    assert_eq!(info.node_id.as_deref(), Some("b"));
    let note = info.reason.unwrap();
    assert!(note.contains("matches 3 instances"), "{note}");
    assert!(note.contains("job-capable, then lowest id"), "{note}");
    // Deterministic whatever the candidate order.
    let mut reversed = candidates.clone();
    reversed.reverse();
    let again = leader_info(&leader("lock-3", "10.0.0.1", 0), &reversed, None, "/e");
    assert_eq!(again.node_id.as_deref(), Some("b"));
    // A bare IP equal to the advertised host needs no resolution.
    let kap = [node("k", "10.1.1.1", 7070, None, Modes::ALL)];
    let c: Vec<_> = kap
        .iter()
        .map(|node| Candidate { node, owner: 0 })
        .collect();
    let info = leader_info(
        &leader("_c_u-lock-0000000000", "10.1.1.1", 0),
        &c,
        None,
        "/e",
    );
    assert_eq!(info.node_id.as_deref(), Some("k"));
}

#[test]
fn leader_session_resolves_ambiguity_and_default_host_address() {
    let nodes = [
        node("a", "host1", 7070, Some("10.0.0.1:7070"), Modes::ALL),
        node("b", "host1", 7071, Some("10.0.0.1:7071"), Modes::ALL),
    ];
    let candidates = [
        Candidate {
            node: &nodes[0],
            owner: 0x11,
        },
        Candidate {
            node: &nodes[1],
            owner: 0x22,
        },
    ];
    let mapped = map_participant("10.0.0.1", 0x22, &candidates).unwrap();
    assert_eq!(&*mapped.id, "b");
    assert!(mapped.note.unwrap().contains("same ZooKeeper session"));
    // Kylin's default kylin.server.host-address is localhost:7070 on every
    // node: only the session says who it is.
    let mapped = map_participant("localhost:7070", 0x11, &candidates).unwrap();
    assert_eq!(&*mapped.id, "a");
    assert!(mapped.note.unwrap().contains("session 0x11"));
    assert_eq!(map_participant("localhost:7070", 0x33, &candidates), None);
    assert_eq!(map_participant("", 0, &candidates), None);
}

#[test]
fn no_leader_reasons_and_pinning() {
    let nodes = [node("a", "node1", 7070, Some("10.0.0.1:7070"), Modes::ALL)];
    let candidates: Vec<_> = nodes
        .iter()
        .map(|node| Candidate { node, owner: 0 })
        .collect();
    let absent = leader_info(&Election::Absent, &candidates, None, "/k/job_engine/leader");
    assert_eq!(absent.node_id, None);
    assert!(
        absent
            .reason
            .unwrap()
            .contains("no job-engine election under /k/job_engine/leader")
    );
    let legacy = leader_info(&Election::LegacyLock, &candidates, None, "/e");
    assert!(legacy.reason.unwrap().contains("global_job_engine_lock"));
    let vanished = Election::Leader {
        znode: "lock-1".into(),
        data: None,
        owner: 0,
    };
    assert!(
        leader_info(&vanished, &candidates, None, "/e")
            .reason
            .unwrap()
            .contains("vanished")
    );
    // leader_address pins the leader when the election names nobody.
    let pinned = leader_info(&Election::Absent, &candidates, Some("node1:7070"), "/e");
    assert_eq!(pinned.node_id.as_deref(), Some("a"));
    assert!(
        pinned
            .reason
            .unwrap()
            .starts_with("pinned by discovery.leader_address")
    );
    let pinned = leader_info(
        &leader("lock-1", "ghost:1", 0),
        &candidates,
        Some("10.0.0.1"),
        "/e",
    );
    assert_eq!(pinned.node_id.as_deref(), Some("a"));
    let unmatched = leader_info(&Election::Absent, &candidates, Some("ghost:1"), "/e");
    assert_eq!(unmatched.node_id, None);
    assert!(
        unmatched
            .reason
            .unwrap()
            .contains("matches no instance either")
    );
    // A mapped election wins over the pin.
    let nodes2 = [nodes[0].clone(), node("b", "node2", 7070, None, Modes::ALL)];
    let c2: Vec<_> = nodes2
        .iter()
        .map(|node| Candidate { node, owner: 0 })
        .collect();
    let info = leader_info(
        &leader("lock-1", "node2:7070", 0),
        &c2,
        Some("node1:7070"),
        "/e",
    );
    assert_eq!(info.node_id.as_deref(), Some("b"));
}

fn instance_json(id: &str, host: &str, port: u16, description: &str) -> String {
    format!(
        r#"{{"name":"kylin","id":"{id}","address":"{host}","port":{port},"payload":{{"description":"{description}"}}}}"#
    )
}

#[test]
fn known_builds_sorted_view_skipping_malformed_and_duplicates() {
    let dir = "/k/service/kylin";
    let other = "/k/service/cluster_servers";
    let mut known = Known::new(Modes::ALL);
    let paths = known.set_children(dir, Some(vec!["z".into(), "m".into(), "bad".into()]));
    assert_eq!(
        paths,
        [format!("{dir}/bad"), format!("{dir}/m"), format!("{dir}/z")]
    );
    known.store_instance(
        &format!("{dir}/z"),
        instance_json("z", "127.0.0.1", 1, "all").as_bytes(),
        10,
        1,
    );
    known.store_instance(
        &format!("{dir}/m"),
        instance_json("m", "node-m", 2, "query").as_bytes(),
        11,
        2,
    );
    known.store_instance(&format!("{dir}/bad"), b"{oops", 12, 3);
    // The same id registered under the other service name counts once.
    known.set_children(other, Some(vec!["z".into()]));
    known.store_instance(
        &format!("{other}/z"),
        instance_json("z", "elsewhere", 9, "all").as_bytes(),
        13,
        4,
    );
    let view = known.build_view(None, "/k/job_engine/leader", false);
    let ids: Vec<&str> = view.nodes.iter().map(|n| &*n.id).collect();
    assert_eq!(ids, ["m", "z"]);
    assert_eq!(
        &*view.nodes[1].host, "elsewhere",
        "first path in order wins"
    );
    assert_eq!(view.source, "zookeeper");
    // Unresolved until the resolver answers; then routable.
    assert!(
        view.nodes
            .iter()
            .all(|n| n.addr.is_none() && n.resolve_error.is_some())
    );
    let mut unresolved = known.unresolved();
    unresolved.sort();
    assert_eq!(unresolved.len(), 2);
    known.resolved(("node-m".into(), 2), Err("cannot resolve 'node-m'".into()));
    known.resolved(("elsewhere".into(), 9), Ok("127.0.0.9:9".parse().unwrap()));
    let view = known.build_view(None, "/e", true);
    assert!(view.stale);
    assert_eq!(
        view.nodes[0].resolve_error.as_deref(),
        Some("cannot resolve 'node-m'")
    );
    assert_eq!(view.nodes[1].addr, Some("127.0.0.9:9".parse().unwrap()));
    assert!(known.unresolved().is_empty());
    // A failed refresh keeps the known address.
    known.resolved(("elsewhere".into(), 9), Err("DNS down".into()));
    let view = known.build_view(None, "/e", false);
    assert_eq!(view.nodes[1].addr, Some("127.0.0.9:9".parse().unwrap()));
    // A removed child leaves the view; the duplicate takes over.
    known.set_children(dir, Some(vec!["m".into()]));
    known.set_children(other, None);
    let ids: Vec<String> = known
        .build_view(None, "/e", false)
        .nodes
        .iter()
        .map(|n| n.id.to_string())
        .collect();
    assert_eq!(ids, ["m"]);
}

#[test]
fn known_reparses_only_new_versions() {
    let mut known = Known::new(Modes::ALL);
    let path = "/k/service/kylin/a";
    known.set_children("/k/service/kylin", Some(vec!["a".into()]));
    known.store_instance(path, instance_json("a", "h", 1, "all").as_bytes(), 5, 1);
    // Same mzxid: the cached parse stands, whatever the bytes.
    known.store_instance(path, b"ignored", 5, 1);
    assert_eq!(known.build_view(None, "/e", false).nodes.len(), 1);
    // A new version that is malformed drops the node, not the view.
    known.store_instance(path, b"{", 6, 1);
    assert!(known.build_view(None, "/e", false).nodes.is_empty());
    known.store_instance(path, instance_json("a", "h", 1, "query").as_bytes(), 7, 1);
    let view = known.build_view(None, "/e", false);
    assert_eq!(view.nodes[0].modes, Modes::QUERY);
    known.remove_instance(path);
    assert!(known.build_view(None, "/e", false).nodes.is_empty());
}

#[test]
fn known_maps_leader_with_sessions() {
    let mut known = Known::new(Modes::ALL);
    let dir = "/k/service/kylin";
    known.set_children(dir, Some(vec!["a".into(), "b".into()]));
    known.store_instance(
        &format!("{dir}/a"),
        instance_json("a", "127.0.0.1", 7070, "all").as_bytes(),
        1,
        0xa,
    );
    known.store_instance(
        &format!("{dir}/b"),
        instance_json("b", "127.0.0.1", 7071, "all").as_bytes(),
        2,
        0xb,
    );
    known.election = leader("_c_q-lock-0000000004", "127.0.0.1", 0xb);
    let view = known.build_view(None, "/e", false);
    assert_eq!(view.leader.node_id.as_deref(), Some("b"));
    assert_eq!(view.leader_node().map(|n| n.port), Some(7071));
}

#[test]
fn malformed_znode_counted_once_per_version() {
    let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
    let handle = recorder.handle();
    let count = || {
        handle
            .render()
            .lines()
            .find(|l| l.starts_with(super::MALFORMED_METRIC))
            .and_then(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
            .unwrap_or(0)
    };
    metrics::with_local_recorder(&recorder, || {
        let mut known = Known::new(Modes::ALL);
        let path = "/k/service/kylin/bad";
        known.set_children("/k/service/kylin", Some(vec!["bad".into()]));
        known.store_instance(path, b"{", 1, 1);
        known.store_instance(path, b"{", 1, 1);
        assert_eq!(count(), 1, "a re-read of the same version is not counted");
        known.store_instance(path, b"[]", 2, 1);
        assert_eq!(count(), 2, "a new malformed version is");
        // Leaving forgets the path: a znode of the same name that appears
        // later is warned about afresh.
        known.set_children("/k/service/kylin", Some(vec![]));
        known.set_children("/k/service/kylin", Some(vec!["bad".into()]));
        known.store_instance(path, b"[]", 2, 1);
        assert_eq!(count(), 3);
    });
}

const GRACE: std::time::Duration = std::time::Duration::from_millis(250);

/// A service directory with instances `(id, port, owner session)`, all on
/// 127.0.0.1 in `all` mode, read with `grace`.
fn known_with(grace: std::time::Duration, nodes: &[(&str, u16, i64)]) -> Known {
    let mut known = Known::new(Modes::ALL).with_removal_grace(grace);
    let dir = "/k/service/kylin";
    known.set_children(dir, Some(nodes.iter().map(|n| n.0.to_string()).collect()));
    for (i, (id, port, owner)) in nodes.iter().enumerate() {
        let json = instance_json(id, "127.0.0.1", *port, "all");
        known.store_instance(
            &format!("{dir}/{id}"),
            json.as_bytes(),
            i as i64 + 1,
            *owner,
        );
    }
    known
}

fn ids(known: &Known) -> Vec<String> {
    let view = known.build_view(None, "/e", false);
    view.nodes.iter().map(|n| n.id.to_string()).collect()
}

fn leader_id(known: &Known) -> Option<String> {
    known
        .build_view(None, "/e", false)
        .leader
        .node_id
        .map(|id| id.to_string())
}

#[test]
fn departed_instance_stays_for_the_grace_then_leaves() {
    let dir = "/k/service/kylin";
    let mut known = known_with(GRACE, &[("a", 7070, 0xa), ("b", 7071, 0xb)]);
    let left = std::time::Instant::now();
    known.set_children(dir, Some(vec!["a".into()]));
    assert_eq!(ids(&known), ["a", "b"], "b is in its grace");
    assert_eq!(known.departing(), 1);
    let until = known.next_departure().expect("b departs");
    assert!(until >= left + GRACE && until <= std::time::Instant::now() + GRACE);
    assert!(!known.expire_departed(until - std::time::Duration::from_millis(1)));
    assert_eq!(ids(&known), ["a", "b"]);
    assert!(
        known.expire_departed(until),
        "the grace ends at its deadline"
    );
    assert_eq!(ids(&known), ["a"]);
    assert_eq!(known.next_departure(), None);
    // A read that finds the znode gone (NoNode) departs the same way.
    known.remove_instance(&format!("{dir}/a"));
    assert_eq!(ids(&known), ["a"]);
    assert!(known.expire_departed(std::time::Instant::now() + GRACE));
    assert!(ids(&known).is_empty());
}

#[test]
fn recreated_instance_within_the_grace_never_leaves() {
    let dir = "/k/service/kylin";
    let path = format!("{dir}/b");
    let mut known = known_with(GRACE, &[("a", 7070, 0xa), ("b", 7071, 0xb)]);
    known.set_children(dir, Some(vec!["a".into()]));
    assert_eq!(ids(&known), ["a", "b"], "b is routable in the gap");
    // Curator's delete-then-create: the same path, a new version.
    known.set_children(dir, Some(vec!["a".into(), "b".into()]));
    let json = instance_json("b", "127.0.0.1", 7072, "query");
    known.store_instance(&path, json.as_bytes(), 9, 0xb);
    assert_eq!(known.next_departure(), None, "the new znode replaced it");
    assert!(!known.expire_departed(std::time::Instant::now() + 2 * GRACE));
    let view = known.build_view(None, "/e", false);
    assert_eq!(ids(&known), ["a", "b"]);
    assert_eq!(view.nodes[1].port, 7072, "the new data is used");
    // The same id under another service name (the `auto` layout) too.
    known.remove_instance(&path);
    let other = "/k/service/cluster_servers";
    known.set_children(other, Some(vec!["b".into()]));
    known.store_instance(&format!("{other}/b"), json.as_bytes(), 10, 0xc);
    assert_eq!(known.next_departure(), None);
}

#[test]
fn zero_grace_removes_at_once() {
    let dir = "/k/service/kylin";
    let mut known = known_with(std::time::Duration::ZERO, &[("a", 7070, 1), ("b", 7071, 2)]);
    known.set_children(dir, Some(vec!["a".into()]));
    assert_eq!(ids(&known), ["a"]);
    assert_eq!(known.next_departure(), None);
}

#[test]
fn departed_instance_leads_only_while_its_own_session_holds_the_lock() {
    let dir = "/k/service/kylin";
    // KAP 2.4: the lock's data is a bare IP that both instances share.
    let mut known = known_with(GRACE, &[("a", 7070, 0xa), ("b", 7071, 0xb)]);
    known.election = leader("_c_x-lock-0000000001", "127.0.0.1", 0xa);
    assert_eq!(leader_id(&known).as_deref(), Some("a"));
    // a's instance is re-registered; its session still holds the lock.
    known.set_children(dir, Some(vec!["b".into()]));
    assert_eq!(
        leader_id(&known).as_deref(),
        Some("a"),
        "the election says a"
    );
    // a's lock is gone and b's is lowest: b leads now, not after the grace.
    known.election = leader("_c_y-lock-0000000002", "127.0.0.1", 0xb);
    assert_eq!(leader_id(&known).as_deref(), Some("b"));
    assert_eq!(ids(&known), ["a", "b"], "a is still in its grace");
    // No lock at all: nobody leads, the departed instance included.
    known.election = Election::Absent;
    assert_eq!(leader_id(&known), None);
}

#[test]
fn departed_instance_is_never_mapped_by_address_alone() {
    let dir = "/k/service/kylin";
    let mut known = known_with(GRACE, &[("a", 7070, 0xa), ("b", 7071, 0xb)]);
    known.set_children(dir, Some(vec!["b".into()]));
    // A lock naming a's host:port, owned by a session that registered
    // nothing (a restarted process not read yet): not a's.
    known.election = leader("_c_z-lock-0000000003", "127.0.0.1:7070", 0xc);
    assert_eq!(leader_id(&known), None);
    // Nor is a departed instance the pinned leader.
    let view = known.build_view(Some("127.0.0.1:7070"), "/e", false);
    assert_eq!(view.leader.node_id, None);
    let view = known.build_view(Some("127.0.0.1:7071"), "/e", false);
    assert_eq!(view.leader.node_id.as_deref(), Some("b"));
}
