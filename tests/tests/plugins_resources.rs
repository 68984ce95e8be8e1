//! What plugins cost the process and how their deadline is charged: the
//! address space the instance pool reserves, and a CPU-time deadline that a
//! busy machine's preemption does not trip.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use kylin_gateway_tests::support::backend::Backend;
use kylin_gateway_tests::support::gateway::{
    Gateway, Launch, leader_then_query_nodes, metric_value,
};
use kylin_gateway_tests::support::http::{TestClient, client, get, send};
use kylin_gateway_tests::support::plugins::{built, plugin_toml};

const GIB: u64 = 1 << 30;

/// One test at a time: the busy-machine test's CPU hogs would slow the
/// other's start-up (three plugins compiled by a debug build) past its
/// deadline.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

async fn ready(c: &TestClient, gateway: &Gateway) {
    kylin_gateway_tests::support::eventually_async("ready", Duration::from_secs(20), || async {
        get(c, &gateway.admin_url("/readyz"))
            .await
            .ok()
            .filter(|r| r.status == 200)
    })
    .await;
}

async fn metrics(c: &TestClient, gateway: &Gateway) -> String {
    get(c, &gateway.admin_url("/metrics")).await.unwrap().text()
}

fn query_body(i: usize) -> String {
    serde_json::json!({"project": "learn_kylin", "sql": format!("select {i} from kylin_sales")})
        .to_string()
}

/// The pool reserved 4 GiB of address space per slot for 1,000 slots (a
/// 4 TB `VmSize`), which `ulimit -v` refuses. Sized to its use, and
/// bounds-checked where 4 GiB slots do not fit, three plugins start under a
/// 64 GiB limit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_plugins_start_under_a_64_gib_address_space_limit() {
    let _serial = SERIAL.lock().await;
    let files = built();
    let nodes = Backend::start_each(&["a", "b"]).await;
    let gateway = Gateway::launch(
        &Launch {
            address_space_limit: Some(64 * GIB),
            log_to_file: true,
            rust_log: Some("plugin=info,warn".into()),
            ..Launch::default()
        },
        &format!(
            "{}\n[plugin_runtime]\ndeadline_ms = 100\nwatch_files = false\n{}{}{}",
            leader_then_query_nodes(&nodes),
            // No window: job requests pass.
            plugin_toml(
                "window",
                &files.maintenance_window,
                r#"{"windows": []}"#,
                "reject"
            ),
            // 0 %: queries go on to the next plugin.
            plugin_toml(
                "canary",
                &files.canary,
                r#"{"nodes": ["b"], "percent": 0}"#,
                "reject"
            ),
            plugin_toml("affinity", &files.query_affinity, "", "reject"),
        ),
    );
    let c = client();
    ready(&c, &gateway).await;
    // on_error = "reject": a plugin that could not get an instance would
    // answer 503, so 200s show all three ran.
    for i in 0..20 {
        let reply = send(
            &c,
            "POST",
            &gateway.url("/kylin/api/query"),
            &[],
            query_body(i),
        )
        .await
        .unwrap();
        assert_eq!(reply.status, 200, "{}", reply.text());
        let job = send(
            &c,
            "PUT",
            &gateway.url("/kylin/api/cubes/c/rebuild"),
            &[],
            "{}",
        )
        .await
        .unwrap();
        assert_eq!(job.status, 200, "{}", job.text());
    }
    let metrics = metrics(&c, &gateway).await;
    for plugin in ["window", "canary", "affinity"] {
        let label = format!("plugin=\"{plugin}\"");
        let calls = metric_value(&metrics, "kgw_plugin_calls_total", &[&label]);
        assert!(calls >= Some(20.0), "{plugin} was called: {calls:?}");
    }
    assert!(
        gateway
            .log()
            .contains("plugin memories bounded by bounds checks"),
        "{}",
        gateway.log()
    );
    let status = get(&c, &gateway.admin_url("/admin/plugins"))
        .await
        .unwrap()
        .json();
    for plugin in status.as_array().unwrap() {
        assert_eq!(plugin["memory_bounds"], "bounds checks", "{status}");
    }
    let vm_size = gateway.status_kib("VmSize:") * 1024;
    assert!(
        vm_size < 64 * GIB,
        "VmSize {} GiB with three plugins",
        vm_size / GIB
    );
}

/// Threads that keep both cores busy until dropped, so the gateway's
/// threads are preempted in the middle of plugin calls.
struct CpuHogs {
    stop: Arc<AtomicBool>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl CpuHogs {
    fn start(count: usize) -> CpuHogs {
        let stop = Arc::new(AtomicBool::new(false));
        let threads = (0..count)
            .map(|_| {
                let stop = stop.clone();
                std::thread::spawn(move || {
                    let mut x = 0u64;
                    while !stop.load(Ordering::Relaxed) {
                        x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(7));
                    }
                })
            })
            .collect();
        CpuHogs { stop, threads }
    }
}

impl Drop for CpuHogs {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

/// A wall-clock deadline failed calls of a well-behaved plugin whose
/// thread was preempted mid-call (12 of 201,566 under wrk on two cores).
/// Charged in CPU time, none fails, however busy the machine, while a
/// plugin that loops is still cut off (`plugins_hostile`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_machine_does_not_fail_a_well_behaved_plugin_on_its_deadline() {
    const CALLS: f64 = 3000.0;
    let _serial = SERIAL.lock().await;
    let files = built();
    let nodes = Backend::start_each(&["a", "b", "c"]).await;
    // 5 ms of CPU is far more than a call takes, even in the debug build;
    // preempted for longer than that, a call did fail a wall-clock deadline.
    let gateway = Gateway::start(&format!(
        "{}\n[plugin_runtime]\ndeadline_ms = 5\nwatch_files = false\n{}",
        leader_then_query_nodes(&nodes),
        plugin_toml("affinity", &files.query_affinity, "", "fallback"),
    ));
    let c = client();
    ready(&c, &gateway).await;
    let _hogs = CpuHogs::start(6);
    let started = Instant::now();
    let calls = loop {
        let mut batch = tokio::task::JoinSet::new();
        for i in 0..32 {
            let (c, url) = (c.clone(), gateway.url("/kylin/api/query"));
            batch.spawn(async move { send(&c, "POST", &url, &[], query_body(i)).await });
        }
        while let Some(reply) = batch.join_next().await {
            assert_eq!(reply.unwrap().unwrap().status, 200);
        }
        let metrics = metrics(&c, &gateway).await;
        let calls = metric_value(&metrics, "kgw_plugin_calls_total", &[]).unwrap_or(0.0);
        if calls >= CALLS || started.elapsed() > Duration::from_secs(60) {
            break calls;
        }
    };
    let metrics = metrics(&c, &gateway).await;
    let deadline = metric_value(
        &metrics,
        "kgw_plugin_failures_total",
        &["kind=\"deadline\""],
    );
    assert_eq!(deadline, Some(0.0), "deadline failures in {calls} calls");
    assert!(calls >= CALLS / 3.0, "only {calls} calls in a minute");
}
