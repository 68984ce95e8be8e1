//! The simulator's znode shapes against the forms recorded in
//! `kylin-zookeeper.md` (read from Kylin's and Curator's source).

use super::znodes::*;

fn registration(layout: Layout, description: &str, curator5: bool) -> String {
    String::from_utf8(instance_json(&Registration {
        layout,
        id: "6f7d1c52-0000-4000-8000-000000000001",
        address: "node1",
        port: 7070,
        ssl_port: None,
        description,
        curator5,
        enabled: true,
        registration_time_utc: 1_700_000_000_000,
    }))
    .unwrap()
}

#[test]
fn kylin_31_instance_matches_curator_212_serializer() {
    assert_eq!(
        registration(Layout::Kylin31, "all", false),
        r#"{"name":"cluster_servers","id":"6f7d1c52-0000-4000-8000-000000000001","address":"node1","port":7070,"sslPort":null,"payload":{"description":"all"},"registrationTimeUTC":1700000000000,"serviceType":"DYNAMIC","uriSpec":null,"enabled":true}"#
    );
}

#[test]
fn kap_24_instance_has_no_enabled_field() {
    assert_eq!(
        registration(Layout::Kap24, "node1:7070", false),
        r#"{"name":"kylin","id":"6f7d1c52-0000-4000-8000-000000000001","address":"node1","port":7070,"sslPort":null,"payload":{"description":"node1:7070"},"registrationTimeUTC":1700000000000,"serviceType":"DYNAMIC","uriSpec":null}"#
    );
}

#[test]
fn curator5_payload_names_its_class_first_and_omits_enabled_true() {
    let json = registration(Layout::Kylin31, "query", true);
    assert!(
        json.contains(r#""payload":{"@class":"java.util.LinkedHashMap","description":"query"}"#),
        "{json}"
    );
    assert!(json.ends_with(r#""uriSpec":null}"#), "{json}");
}

#[test]
fn descriptions_follow_the_release() {
    assert_eq!(Layout::Kap24.description("h", 7070, "all"), "h:7070");
    assert_eq!(Layout::Kylin30.description("h", 7070, "job"), "h:7070:job");
    assert_eq!(
        Layout::Kylin31.description("h", 7070, "query,job"),
        "query,job"
    );
    assert_eq!(Layout::Kap24.election_data("10.0.0.5", 7070), "10.0.0.5");
    assert_eq!(
        Layout::Kylin31.election_data("10.0.0.5", 7070),
        "10.0.0.5:7070"
    );
}

#[test]
fn paths_per_layout() {
    assert_eq!(
        service_dir("/kylin/kylin_metadata", Layout::Kylin31),
        "/kylin/kylin_metadata/service/cluster_servers"
    );
    assert_eq!(
        service_dir("/kylin/kylin_metadata/", Layout::Kylin30),
        "/kylin/kylin_metadata/service/kylin"
    );
    assert_eq!(leader_dir("/kylin/m"), "/kylin/m/job_engine/leader");
    assert_eq!(protected_lock_prefix("/d", "u-1"), "/d/_c_u-1-lock-");
}

#[test]
fn candidates_sort_by_sequence_not_by_name() {
    let sorted = sort_candidates(vec![
        "_c_ffff-lock-0000000007".into(),
        "_c_0000-lock-0000000012".into(),
        "lock-0000000003".into(),
        "not-a-lock".into(),
    ]);
    assert_eq!(
        sorted,
        vec![
            "lock-0000000003",
            "_c_ffff-lock-0000000007",
            "_c_0000-lock-0000000012"
        ]
    );
    assert!(is_protected_by("_c_ab-lock-0000000001", "ab"));
    assert!(!is_protected_by("_c_abc-lock-0000000001", "ab"));
}

#[test]
fn uuids_have_javas_shape() {
    let uuid = random_uuid();
    assert_eq!(uuid.len(), 36);
    assert_eq!(&uuid[14..15], "4");
    assert_eq!(uuid.matches('-').count(), 4);
    assert_ne!(uuid, random_uuid());
}

/// Kylin 5 (Spring Cloud ZooKeeper over Curator 5): the issue's JSON, the
/// mode as service name and directory, status `UP` (or `OUT_OF_SERVICE`).
#[test]
fn kylin_5_instance_matches_spring_cloud_zookeeper() {
    let mut r = Registration {
        layout: Layout::Kylin5,
        id: "6f7d1c52-0000-4000-8000-000000000001",
        address: "node1",
        port: 7070,
        ssl_port: None,
        description: "job",
        curator5: true,
        enabled: true,
        registration_time_utc: 1_700_000_000_000,
    };
    let text = String::from_utf8(spring_instance_json(&r, "job")).unwrap();
    assert_eq!(
        text,
        r#"{"name":"job","id":"6f7d1c52-0000-4000-8000-000000000001","address":"node1","port":7070,"sslPort":null,"payload":{"@class":"org.springframework.cloud.zookeeper.discovery.ZookeeperInstance","id":"job-7070","name":"job","metadata":{"instance_status":"UP"}},"registrationTimeUTC":1700000000000,"serviceType":"DYNAMIC","uriSpec":{"parts":[{"value":"scheme","variable":true},{"value":"://","variable":false},{"value":"address","variable":true},{"value":":","variable":false},{"value":"port","variable":true}]}}"#
    );
    r.enabled = false;
    let json: serde_json::Value = serde_json::from_slice(&spring_instance_json(&r, "job")).unwrap();
    assert_eq!(
        json["payload"]["metadata"]["instance_status"],
        "OUT_OF_SERVICE"
    );
    assert_eq!(
        instance_dir("/kylin/k5", Layout::Kylin5, "query"),
        "/kylin/k5/services/query"
    );
    assert!(!Layout::Kylin5.elects());
}
