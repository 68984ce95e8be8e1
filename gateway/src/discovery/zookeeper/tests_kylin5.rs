//! Kylin 5's paths, Spring Cloud ZooKeeper JSON and the no-election view.

use super::election::Election;
use super::instance::MalformedInstance;
use super::kylin5::{self, NO_ELECTION, parse_spring_instance};
use super::paths::Paths;
use super::state::Known;
use crate::config::Layout;
use crate::view::{JobRouting, Modes};

const BASE: &str = "/kylin/kylin_metadata_jdbc_postgresql___localhost_5432_kylin";

fn spring_json(mode: &str, id: &str, port: u16, status: &str) -> String {
    format!(
        r#"{{"name":"{mode}","id":"{id}","address":"127.0.0.1","port":{port},"sslPort":null,"payload":{{"@class":"org.springframework.cloud.zookeeper.discovery.ZookeeperInstance","id":"kylin-{mode}-1","name":"{mode}","metadata":{{"instance_status":"{status}"}}}},"registrationTimeUTC":1700000000000,"serviceType":"DYNAMIC","uriSpec":{{"parts":[{{"value":"scheme","variable":true}},{{"value":"://","variable":false}}]}}}}"#
    )
}

#[test]
fn kylin5_paths_are_the_three_mode_directories_and_no_election() {
    let paths = Paths::new(BASE, Layout::Kylin5);
    let dirs: Vec<String> = ["all", "job", "query"]
        .iter()
        .map(|m| format!("{BASE}/services/{m}"))
        .collect();
    assert_eq!(paths.services, dirs);
    assert_eq!(
        paths.kylin5_services,
        [
            (dirs[0].clone(), Modes::ALL),
            (dirs[1].clone(), Modes::JOB),
            (dirs[2].clone(), Modes::QUERY)
        ]
    );
    assert!(!paths.elects);
    // `auto` reads Kylin 5 under its own base and 3.x under the other.
    let auto = Paths::with_kylin5_base("/kylin/kylin_metadata", BASE, Layout::Auto);
    assert_eq!(
        auto.services[1],
        "/kylin/kylin_metadata/service/cluster_servers"
    );
    assert_eq!(auto.services[2], format!("{BASE}/services/all"));
    assert!(Paths::new(BASE, Layout::Kylin31).kylin5_services.is_empty());
}

#[test]
fn spring_instances_take_their_mode_from_the_directory() {
    let i = parse_spring_instance(
        "u1",
        spring_json("job", "u1", 7070, "UP").as_bytes(),
        Modes::JOB,
    )
    .unwrap();
    assert_eq!(&*i.id, "u1");
    assert_eq!(&*i.host, "127.0.0.1");
    assert_eq!(i.port, 7070);
    assert_eq!(i.modes, Modes::JOB);
    assert!(i.enabled);
    // The directory wins over what the document names.
    let i = parse_spring_instance(
        "u1",
        spring_json("all", "u1", 1, "UP").as_bytes(),
        Modes::QUERY,
    )
    .unwrap();
    assert_eq!(i.modes, Modes::QUERY);
}

#[test]
fn a_status_other_than_up_is_not_routed() {
    for (status, enabled) in [
        ("UP", true),
        ("up", true),
        ("OUT_OF_SERVICE", false),
        ("DOWN", false),
    ] {
        let json = spring_json("all", "u", 1, status);
        let i = parse_spring_instance("u", json.as_bytes(), Modes::ALL).unwrap();
        assert_eq!(i.enabled, enabled, "{status}");
    }
    // Lenient: no metadata, no payload, `enabled:false` still honoured.
    let bare = r#"{"name":"query","id":"u","address":"h","port":7070}"#;
    assert!(
        parse_spring_instance("u", bare.as_bytes(), Modes::QUERY)
            .unwrap()
            .enabled
    );
    let disabled = r#"{"id":"u","address":"h","port":7070,"enabled":false,"payload":{"metadata":{"instance_status":"UP"}}}"#;
    assert!(
        !parse_spring_instance("u", disabled.as_bytes(), Modes::ALL)
            .unwrap()
            .enabled
    );
}

#[test]
fn malformed_spring_instances_are_errors_not_panics() {
    for (data, expected) in [
        (&b"\xff"[..], "not JSON"),
        (b"[1]", "not a JSON object"),
        (br#"{"port":7070}"#, "no address"),
        (br#"{"address":"h","port":"x"}"#, "no usable port"),
    ] {
        let error: MalformedInstance = parse_spring_instance("u", data, Modes::ALL).unwrap_err();
        assert!(error.to_string().contains(expected), "{error}");
    }
}

#[test]
fn job_routing_per_layout() {
    let leader = Election::Leader {
        znode: "_c_x-lock-0000000001".into(),
        data: Some("h:7070".into()),
        owner: 1,
    };
    use JobRouting::{AnyJobNode, Leader};
    assert_eq!(
        kylin5::job_routing(Layout::Kylin5, false, &Election::Absent),
        AnyJobNode
    );
    assert_eq!(
        kylin5::job_routing(Layout::Auto, true, &Election::Absent),
        AnyJobNode
    );
    assert_eq!(
        kylin5::job_routing(Layout::Auto, false, &Election::Absent),
        Leader
    );
    assert_eq!(
        kylin5::job_routing(Layout::Auto, true, &leader),
        Leader,
        "an election wins"
    );
    assert_eq!(
        kylin5::job_routing(Layout::Kylin31, true, &Election::Absent),
        Leader
    );
}

#[test]
fn known_builds_a_kylin5_view_without_leader() {
    let paths = Paths::new(BASE, Layout::Auto);
    let mut known = Known::new(Modes::ALL).with_layout(Layout::Auto, &paths);
    let view = known.build_view(None, "/e", false);
    assert_eq!(
        view.job_routing,
        JobRouting::Leader,
        "nothing of Kylin 5 seen yet"
    );
    for (mode, id, port) in [("all", "a", 1), ("job", "j", 2), ("query", "q", 3)] {
        let dir = format!("{BASE}/services/{mode}");
        known.set_children(&dir, Some(vec![id.into()]));
        let json = spring_json(mode, id, port, "UP");
        known.store_instance(&format!("{dir}/{id}"), json.as_bytes(), 1, 1);
    }
    known.store_instance(&format!("{BASE}/services/query/bad"), b"{", 2, 2);
    let view = known.build_view(None, "/e", false);
    assert_eq!(view.job_routing, JobRouting::AnyJobNode);
    assert_eq!(view.leader.node_id, None);
    assert_eq!(view.leader.reason.as_deref(), Some(NO_ELECTION));
    let modes: Vec<(&str, Modes)> = view.nodes.iter().map(|n| (&*n.id, n.modes)).collect();
    assert_eq!(
        modes,
        [("a", Modes::ALL), ("j", Modes::JOB), ("q", Modes::QUERY)]
    );
    // The directories vanish (containers deleted): back to leader routing.
    for mode in ["all", "job", "query"] {
        known.set_children(&format!("{BASE}/services/{mode}"), None);
    }
    assert_eq!(known.job_routing(), JobRouting::Leader);
}
