//! Interop with real Apache Curator (Debian's 5.4 jars, compiled at test
//! time): the gateway discovers nodes that Curator's ServiceDiscovery
//! registered and sends jobs to the node Curator's LeaderSelector elected;
//! and Curator, reading the simulator's znodes, agrees with the gateway
//! about who is there and who leads.

use std::time::Duration;

use kylin_gateway_tests::support::cluster::{
    addresses, leader_address, poll_until, zookeeper_gateway,
};
use kylin_gateway_tests::support::curator::CuratorNode;
use kylin_gateway_tests::support::http::{client, get, send};
use kylin_gateway_tests::support::sim::{SimConfig, SimNode};
use kylin_gateway_tests::support::zookeeper::ZkServer;

const BASE: &str = "/kylin/kylin_metadata";
const WAIT: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_routes_to_curator_nodes_and_jobs_to_curators_leader() {
    let server = ZkServer::start();
    let zk = server.connect_string();
    let mut candidates = [
        CuratorNode::start(&zk, BASE, "curator-1", "all"),
        CuratorNode::start(&zk, BASE, "curator-2", "all"),
    ];
    let query = CuratorNode::start(&zk, BASE, "curator-q", "query");
    let gateway = zookeeper_gateway(&zk, "");
    let c = client();
    poll_until("Curator elected a leader", WAIT, || async {
        candidates.iter().any(CuratorNode::says_leader)
    })
    .await;
    let leader_index = candidates
        .iter()
        .position(CuratorNode::says_leader)
        .unwrap();
    let leader = &candidates[leader_index];
    let standby = &candidates[1 - leader_index];
    let (leader_name, standby_name) = (leader.name.clone(), standby.name.clone());
    let leader_id = format!("127.0.0.1:{}", leader.port);
    let standby_id = format!("127.0.0.1:{}", standby.port);
    poll_until(
        "gateway sees Curator's three nodes and its leader",
        WAIT,
        || async {
            addresses(&c, &gateway).await.len() == 3
                && leader_address(&c, &gateway).await.as_deref() == Some(leader_id.as_str())
        },
    )
    .await;
    let curator_view = get(&c, &query.url("/curator/leader")).await.unwrap().json();
    assert_eq!(curator_view["leader"], leader_id.as_str(), "{curator_view}");

    for _ in 0..5 {
        let reply = send(
            &c,
            "PUT",
            &gateway.url("/kylin/api/cubes/c/build"),
            &[],
            "{}",
        )
        .await
        .unwrap();
        assert_eq!(reply.status, 200);
        assert_eq!(reply.json()["node"], leader_name.as_str());
        assert_eq!(reply.json()["curator"], true);
    }
    let active = get(
        &c,
        &format!("http://{leader_id}/kylin/api/service_discovery/state/is_active_job_node"),
    )
    .await
    .unwrap();
    assert_eq!(active.text(), "true");
    for _ in 0..10 {
        let reply = send(&c, "POST", &gateway.url("/kylin/api/query"), &[], "{}")
            .await
            .unwrap();
        assert_eq!(reply.status, 200);
    }

    // Curator's leader stops cleanly: the gateway follows Curator's re-election.
    let sent = std::time::Instant::now();
    candidates[leader_index].process_signal_term();
    let switched = poll_until("gateway follows Curator's new leader", WAIT, || async {
        leader_address(&c, &gateway).await.as_deref() == Some(standby_id.as_str())
    })
    .await;
    let released = candidates[leader_index]
        .logged_since(sent, "selector closed")
        .map(|(at, _)| switched.saturating_duration_since(at));
    println!(
        "Curator leader SIGTERM → gateway leader switch: {:?} (from LeaderSelector.close(): {released:?})",
        switched - sent
    );
    candidates[leader_index].terminate();
    let reply = send(&c, "PUT", &gateway.url("/kylin/api/jobs/j/resume"), &[], "")
        .await
        .unwrap();
    assert_eq!(reply.json()["node"], standby_name.as_str());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curator_agrees_with_the_gateway_about_the_simulators() {
    let server = ZkServer::start();
    let zk = server.connect_string();
    let mut sims = Vec::new();
    let first = SimNode::start(&zk, &SimConfig::new("sim-1", "all"));
    first.wait_leading(WAIT);
    sims.push(first);
    sims.push(SimNode::start(&zk, &SimConfig::new("sim-2", "all")));
    sims.push(SimNode::start(
        &zk,
        &SimConfig::new("sim-3", "query").curator5(),
    ));
    let observer = CuratorNode::start(&zk, BASE, "observer", "query");
    let gateway = zookeeper_gateway(&zk, "");
    let c = client();
    poll_until("gateway sees all four", WAIT, || async {
        addresses(&c, &gateway).await.len() == 4
    })
    .await;

    for round in 0..2 {
        let gateway_leader = leader_address(&c, &gateway)
            .await
            .expect("gateway has a leader");
        assert_eq!(gateway_leader, sims[0].addr(), "round {round}");
        let curator = get(&c, &observer.url("/curator/leader"))
            .await
            .unwrap()
            .json();
        assert_eq!(
            curator["leader"],
            gateway_leader.as_str(),
            "round {round}: {curator}"
        );
        let instances = get(&c, &observer.url("/curator/instances"))
            .await
            .unwrap()
            .json();
        let mut curator_addresses: Vec<String> = instances
            .as_array()
            .unwrap()
            .iter()
            .map(|i| format!("{}:{}", i["address"].as_str().unwrap(), i["port"]))
            .collect();
        curator_addresses.sort();
        poll_until("gateway and Curator list the same nodes", WAIT, || async {
            addresses(&c, &gateway).await == curator_addresses
        })
        .await;
        if round == 1 {
            break;
        }
        // Move leadership (sim-1 stops) and compare again.
        sims.remove(0).terminate();
        let next = sims[0].addr();
        poll_until("both follow the next leader", WAIT, || async {
            leader_address(&c, &gateway).await == Some(next.clone())
                && get(&c, &observer.url("/curator/leader"))
                    .await
                    .is_ok_and(|r| r.json()["leader"] == next.as_str())
        })
        .await;
    }
}
