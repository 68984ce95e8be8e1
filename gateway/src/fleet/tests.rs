use super::record::{FleetView, GatewayRecord, Listening, random_id};
use super::store::{self, Manifest, Pointer, StorePaths, Version};
use crate::plugin::PluginRecord;

fn record(id: &str, plugins: &[(&str, Option<&str>)]) -> GatewayRecord {
    let listen = Listening {
        http: Some("0.0.0.0:7070".parse().unwrap()),
        https: None,
        admin: "127.0.0.1:7071".parse().unwrap(),
    };
    let mut record = GatewayRecord::new(id, "gw-host", listen, 1_700_000_000_000);
    record.payload.plugins = plugins
        .iter()
        .map(|(name, sha)| PluginRecord {
            name: name.to_string(),
            source: "zookeeper".into(),
            sha256: sha.map(str::to_string),
            error: None,
        })
        .collect();
    record
}

fn version(sha: &str) -> Version {
    Version {
        sha256: sha.into(),
        config: String::new(),
        published_at_ms: 1,
    }
}

#[test]
fn the_record_is_curator_service_instance_json() {
    let json: serde_json::Value =
        serde_json::from_slice(&record("a", &[("routing", Some("ab"))]).to_json()).unwrap();
    assert_eq!(json["name"], "kylin_gateway");
    assert_eq!(json["id"], "a");
    assert_eq!(json["address"], "gw-host");
    assert_eq!(json["port"], 7070);
    assert_eq!(json["sslPort"], serde_json::Value::Null);
    assert_eq!(json["serviceType"], "DYNAMIC");
    assert_eq!(json["registrationTimeUTC"], 1_700_000_000_000u64);
    assert_eq!(json["payload"]["@class"], "java.util.LinkedHashMap");
    assert_eq!(json["payload"]["plugins"][0]["sha256"], "ab");
    let back = GatewayRecord::parse(&record("a", &[]).to_json()).unwrap();
    assert_eq!(back, record("a", &[]));
}

#[test]
fn a_gateway_whose_plugins_differ_from_most_is_flagged() {
    let view = FleetView {
        members: vec![
            record("a", &[("routing", Some("v2"))]),
            record("b", &[("routing", Some("v2"))]),
            record("c", &[("routing", Some("v1"))]),
        ],
        malformed: vec![],
    };
    assert_eq!(view.differing(), vec!["c"]);
    let json = view.to_json("a", true);
    assert_eq!(json["consistent"], false);
    assert_eq!(json["members"][2]["plugins_differ"], true);
    assert_eq!(json["members"][0]["self"], true);
}

#[test]
fn a_gateway_that_refused_a_version_is_flagged_even_if_it_runs_the_same() {
    let mut refused = record("b", &[("routing", Some("v1"))]);
    refused.payload.plugins[0].error = Some("init failed".into());
    let view = FleetView {
        members: vec![record("a", &[("routing", Some("v1"))]), refused],
        malformed: vec![],
    };
    assert_eq!(view.differing(), vec!["b"]);
}

#[test]
fn a_refusing_gateway_is_never_the_reference() {
    let mut refused = record("a", &[("routing", None)]);
    refused.payload.plugins[0].error = Some("init failed".into());
    let view = FleetView {
        members: vec![refused, record("b", &[("routing", Some("v1"))])],
        malformed: vec![],
    };
    assert_eq!(view.differing(), vec!["a"]);
}

#[test]
fn an_even_split_picks_the_same_reference_everywhere() {
    let view = FleetView {
        members: vec![
            record("a", &[("routing", Some("v2"))]),
            record("b", &[("routing", Some("v1"))]),
        ],
        malformed: vec![],
    };
    assert_eq!(view.differing(), vec!["a"]);
    assert_eq!(FleetView::default().gateways(), 1);
}

#[test]
fn a_pointer_keeps_its_history_newest_first_and_bounded() {
    let mut pointer = Pointer::moved_to(None, version("v1"), 3);
    for sha in ["v2", "v3", "v4"] {
        pointer = Pointer::moved_to(Some(pointer), version(sha), 3);
    }
    assert_eq!(pointer.current.sha256, "v4");
    let history: Vec<&str> = pointer.history.iter().map(|v| v.sha256.as_str()).collect();
    assert_eq!(history, ["v3", "v2"]);
    // Publishing the running version again does not list it twice.
    let again = Pointer::moved_to(Some(pointer.clone()), version("v4"), 3);
    let history: Vec<&str> = again.history.iter().map(|v| v.sha256.as_str()).collect();
    assert_eq!(history, ["v3", "v2"]);
    let back = pointer.rolled_back().unwrap();
    assert_eq!(back.current.sha256, "v3");
    assert_eq!(back.history.len(), 1);
    assert!(back.rolled_back().unwrap().rolled_back().is_none());
}

#[test]
fn chunks_reassemble_only_to_the_published_bytes() {
    let bytes: Vec<u8> = (0..store::CHUNK_BYTES * 2 + 10).map(|i| i as u8).collect();
    let chunks: Vec<Vec<u8>> = store::chunks(&bytes).map(<[u8]>::to_vec).collect();
    assert_eq!(chunks.len(), 3);
    let manifest = Manifest {
        sha256: crate::digest::sha256_hex(&bytes),
        size: bytes.len(),
        chunks: 3,
        published_at_ms: 0,
    };
    assert_eq!(store::assemble(&manifest, chunks.clone()).unwrap(), bytes);
    let mut corrupt = chunks.clone();
    corrupt[1][0] ^= 1;
    assert!(
        store::assemble(&manifest, corrupt)
            .unwrap_err()
            .contains("sha256")
    );
    assert!(
        store::assemble(&manifest, chunks[..2].to_vec())
            .unwrap_err()
            .contains("chunks")
    );
}

#[test]
fn store_paths_are_under_the_base() {
    let paths = StorePaths::new("/kylin/kylin_metadata");
    assert_eq!(
        paths.pointer("routing"),
        "/kylin/kylin_metadata/gateway/plugins/names/routing"
    );
    assert_eq!(
        paths.chunk("ab", 2),
        "/kylin/kylin_metadata/gateway/plugins/sha256/ab/00002"
    );
}

#[test]
fn random_ids_look_like_curator_uuids() {
    let id = random_id();
    assert_eq!(id.len(), 36, "{id}");
    assert_eq!(id.matches('-').count(), 4, "{id}");
    assert_ne!(id, random_id());
}
