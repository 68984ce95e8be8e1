//! The failover benchmark behind `bench/failover.sh`: real ZooKeeper,
//! simulated Kylin nodes and the gateway; several clients send job requests
//! back to back while the leader is stopped cleanly, then crashed, `runs`
//! times over. Prints, per failover, the gap from the stop or kill until
//! the new leader's first answer and the failed requests, then the worst
//! case. A write in flight while the leader was dying is answered 502 (it
//! may have been applied, so it is not resent): such writes are counted
//! apart. Exits 1 if any other request failed.
//!
//! `failover [RUNS] [SESSION_MS] [CLIENTS]` (defaults 5, 4000, 6).

use std::time::{Duration, Instant};

use kylin_gateway_tests::support::cluster::zookeeper_gateway;
use kylin_gateway_tests::support::failover::{
    Answer, Candidates, Death, JobClients, JobNode, cut_by_a_crash, put_down, wait_leader_first,
};
use kylin_gateway_tests::support::http::client;
use kylin_gateway_tests::support::sim::{SimConfig, SimNode};
use kylin_gateway_tests::support::zookeeper::ZkServer;

/// One failover as the clients saw it.
struct Failover {
    death: Death,
    at: Instant,
    /// For a crash: from the kill until the process was reaped.
    dying: Option<(Instant, Instant)>,
    successor: String,
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    // `run` drops what it started (ZooKeeper, nodes, the gateway: their
    // guards stop the processes) before the exit code is chosen.
    let failed = runtime.block_on(run());
    std::process::exit(i32::from(failed > 0));
}

/// Runs the failovers and returns how many requests failed.
async fn run() -> usize {
    let arg = |n: usize, default: u64| {
        std::env::args()
            .nth(n)
            .map_or(default, |a| a.parse().expect("a number"))
    };
    let (runs, session_ms, clients) = (arg(1, 5) as usize, arg(2, 4_000), arg(3, 6) as usize);
    let server = ZkServer::start();
    let zk = server.connect_string();
    let connect = zk.clone();
    let registry = "/kylin/kylin_metadata/service/cluster_servers";
    let mut candidates = Candidates::new(&zk, registry, "c-", move |id| {
        SimNode::start(
            &connect,
            &SimConfig::new(id, "all")
                .id(id)
                .session_timeout_ms(session_ms),
        )
    });
    candidates.add();
    candidates.queue[0].wait_leading(Duration::from_secs(30));
    candidates.add();
    let _query = SimNode::start(&zk, &SimConfig::new("query", "query").id("q"));
    let gateway = zookeeper_gateway(&zk, "");
    let c = client();
    wait_leader_first(&c, &gateway, &candidates).await;
    println!(
        "{runs} runs (clean stop, then crash) with {clients} job clients; node session {session_ms} ms"
    );
    let job_clients = JobClients::start_many(&gateway, clients.div_ceil(3));
    let mut failovers = Vec::new();
    for _ in 0..runs {
        for death in [Death::CleanStop, Death::Crash] {
            wait_leader_first(&c, &gateway, &candidates).await;
            let mut dying = candidates.queue.pop_front().expect("a leader");
            let (at, dying_window) = put_down(&mut dying, death);
            let successor = candidates.leader().name().to_string();
            failovers.push(Failover {
                death,
                at,
                dying: dying_window,
                successor,
            });
            drop(dying);
            candidates.add();
        }
    }
    wait_leader_first(&c, &gateway, &candidates).await;
    let answers = job_clients.finish().await;
    report(&failovers, &answers)
}

/// Prints a line per failover and the worst case; returns the failures
/// (writes cut by a crash apart).
fn report(failovers: &[Failover], answers: &[Answer]) -> usize {
    let crashes: Vec<(Instant, Instant)> = failovers.iter().filter_map(|f| f.dying).collect();
    println!(
        "{:>3}  {:<10}  {:>10}  {:>8}  {:>6}  {:>10}",
        "#", "how", "gap (ms)", "requests", "failed", "cut writes"
    );
    let mut worst = [Duration::ZERO; 2];
    let (mut total_failed, mut total_cut) = (0, 0);
    for (i, failover) in failovers.iter().enumerate() {
        let until = failovers.get(i + 1).map(|f| f.at);
        let window: Vec<&Answer> = answers
            .iter()
            .filter(|a| a.at >= failover.at && until.is_none_or(|u| a.at < u))
            .collect();
        let gap = window
            .iter()
            .find(|a| a.ok() && a.node == failover.successor)
            .map(|a| a.at - failover.at);
        let cut = window
            .iter()
            .filter(|a| cut_by_a_crash(a, &crashes))
            .count();
        let failed = window.iter().filter(|a| !a.ok()).count() - cut;
        total_failed += failed;
        total_cut += cut;
        let slot = usize::from(failover.death == Death::Crash);
        worst[slot] = worst[slot].max(gap.unwrap_or(Duration::MAX));
        println!(
            "{:>3}  {:<10}  {:>10}  {:>8}  {:>6}  {:>10}",
            i + 1,
            format!("{:?}", failover.death),
            gap.map_or("never".into(), |g| format!(
                "{:.1}",
                g.as_secs_f64() * 1000.0
            )),
            window.len(),
            failed,
            cut
        );
    }
    println!(
        "worst gap: clean stop {:.1} ms, crash {:.1} ms; {} requests, {total_failed} failed, {total_cut} writes cut by a crash (502)",
        worst[0].as_secs_f64() * 1000.0,
        worst[1].as_secs_f64() * 1000.0,
        answers.len()
    );
    total_failed
}
