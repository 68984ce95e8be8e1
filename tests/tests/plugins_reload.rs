//! Hot reload: on `POST /admin/plugins/reload`, SIGHUP and file change, a
//! new version replaces the old atomically while requests keep flowing, and
//! a file that does not load leaves the old version serving.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use kylin_gateway_tests::support::backend::Backend;
use kylin_gateway_tests::support::eventually_async;
use kylin_gateway_tests::support::gateway::{Gateway, TempDir};
use kylin_gateway_tests::support::http::{TestClient, client, get, send};
use kylin_gateway_tests::support::plugins::{built, plugin_toml, runtime_toml};

fn cluster_toml(nodes: &[Backend]) -> String {
    let mut toml = "[discovery]\nkind = \"static\"\n".to_string();
    for (i, node) in nodes.iter().enumerate() {
        toml.push_str(&format!(
            "[[discovery.nodes]]\naddress = \"{}\"\nid = \"{}\"\nmode = \"all\"\nleader = {}\n",
            node.addr,
            node.name,
            i == 0
        ));
    }
    toml
}

/// Replaces `target` with a copy of `source` in one rename, as deploy
/// tools do.
fn install(source: &Path, target: &Path) {
    let staging = target.with_extension("staging");
    std::fs::copy(source, &staging).unwrap();
    std::fs::rename(&staging, target).unwrap();
}

async fn ready(c: &TestClient, gateway: &Gateway) {
    eventually_async("ready", Duration::from_secs(10), || async {
        get(c, &gateway.admin_url("/readyz"))
            .await
            .ok()
            .filter(|r| r.status == 200)
    })
    .await;
}

/// Whether the misbehave plugin (calm: it adds `x-misbehave`) served a
/// query, rather than query-affinity.
async fn served_by_misbehave(c: &TestClient, gateway: &Gateway) -> bool {
    let reply = send(
        c,
        "POST",
        &gateway.url("/kylin/api/query"),
        &[],
        r#"{"project":"p","sql":"select 1"}"#,
    )
    .await
    .unwrap();
    assert_eq!(reply.status, 200, "{}", reply.text());
    reply.json()["headers"]["x-misbehave"] == "calm"
}

async fn plugin_status(c: &TestClient, gateway: &Gateway) -> serde_json::Value {
    get(c, &gateway.admin_url("/admin/plugins"))
        .await
        .unwrap()
        .json()[0]
        .clone()
}

/// The hex SHA-256 of a file: the version `/admin/plugins` reports.
fn sha256_of(path: &Path) -> serde_json::Value {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(std::fs::read(path).unwrap());
    digest
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<String>()
        .into()
}

/// Calls of the plugin so far, and its failures of every kind: a plugin
/// that fails falls back to the built-in routing, which (for
/// query-affinity with its default config, which adds no header) looks
/// just like it working.
fn calls_and_failures(status: &serde_json::Value) -> (u64, u64) {
    let failures = status["stats"]["failures"]
        .as_object()
        .unwrap_or_else(|| panic!("no failure counters: {status}"))
        .values()
        .map(|n| n.as_u64().unwrap())
        .sum();
    (status["stats"]["calls"].as_u64().unwrap(), failures)
}

/// Runs one query and checks that the plugin decided it without failing.
async fn decides_cleanly(c: &TestClient, gateway: &Gateway) {
    let (calls, failures) = calls_and_failures(&plugin_status(c, gateway).await);
    served_by_misbehave(c, gateway).await;
    let status = plugin_status(c, gateway).await;
    assert_eq!(
        calls_and_failures(&status),
        (calls + 1, failures),
        "not one clean call: {status}"
    );
    assert_eq!(failures, 0, "{status}");
}

async fn reload(c: &TestClient, gateway: &Gateway) -> serde_json::Value {
    let reply = send(
        c,
        "POST",
        &gateway.admin_url("/admin/plugins/reload"),
        &[],
        "",
    )
    .await
    .unwrap();
    assert_eq!(reply.status, 200);
    reply.json()[0].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn reloads_under_continuous_load_drop_nothing() {
    let files = built();
    let nodes = vec![Backend::start("a", 0).await, Backend::start("b", 0).await];
    let dir = TempDir::new("kgw-reload");
    let plugin = dir.path.join("plugin.wasm");
    install(&files.misbehave, &plugin);
    // The same (empty) config suits both components: misbehave is calm,
    // query-affinity uses its defaults.
    let gateway = Arc::new(Gateway::start(&format!(
        "{}\n{}\n{}",
        cluster_toml(&nodes),
        runtime_toml(false),
        plugin_toml("swapped", &plugin, "", "fallback"),
    )));
    let c = client();
    ready(&c, &gateway).await;

    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let mut load = Vec::new();
    for worker in 0..4 {
        let (stop, ok, failed, gateway) =
            (stop.clone(), ok.clone(), failed.clone(), gateway.clone());
        load.push(tokio::spawn(async move {
            let c = client();
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                i += 1;
                let body = format!(r#"{{"project":"p","sql":"select {worker}, {i}"}}"#);
                match send(&c, "POST", &gateway.url("/kylin/api/query"), &[], body).await {
                    Ok(reply) if reply.status == 200 => ok.fetch_add(1, Ordering::Relaxed),
                    Ok(reply) => {
                        eprintln!("failed: {} {}", reply.status, reply.text());
                        failed.fetch_add(1, Ordering::Relaxed)
                    }
                    Err(error) => {
                        eprintln!("failed: {error:#}");
                        failed.fetch_add(1, Ordering::Relaxed)
                    }
                };
            }
        }));
    }

    assert_eq!(
        plugin_status(&c, &gateway).await["sha256"],
        sha256_of(&files.misbehave)
    );
    for round in 0..6 {
        let (next, is_misbehave) = if round % 2 == 0 {
            (&files.query_affinity, false)
        } else {
            (&files.misbehave, true)
        };
        let expected = sha256_of(next);
        install(next, &plugin);
        if round % 3 == 2 {
            gateway.process.signal("HUP");
            eventually_async("SIGHUP reload", Duration::from_secs(30), || async {
                (plugin_status(&c, &gateway).await["sha256"] == expected).then_some(())
            })
            .await;
        } else {
            let outcome = reload(&c, &gateway).await;
            assert_eq!(outcome["outcome"], "reloaded", "{outcome}");
            assert_eq!(plugin_status(&c, &gateway).await["sha256"], expected);
        }
        // The swap is visible to the next request.
        assert_eq!(
            served_by_misbehave(&c, &gateway).await,
            is_misbehave,
            "round {round}"
        );
        // Let the load run on the new version for a while: the plugin
        // decides those requests itself (at most the 4 in flight were
        // decided before), without a failure.
        let (calls, _) = calls_and_failures(&plugin_status(&c, &gateway).await);
        let before = ok.load(Ordering::Relaxed);
        eventually_async(
            "requests on the new version",
            Duration::from_secs(30),
            || async { (ok.load(Ordering::Relaxed) >= before + 40).then_some(()) },
        )
        .await;
        let status = plugin_status(&c, &gateway).await;
        let (calls_now, failures) = calls_and_failures(&status);
        assert!(calls_now >= calls + 36, "round {round}: {status}");
        assert_eq!(failures, 0, "round {round}: {status}");
        assert_eq!(status["sha256"], expected, "round {round}");
    }
    stop.store(true, Ordering::Relaxed);
    for task in load {
        task.await.unwrap();
    }
    assert_eq!(
        failed.load(Ordering::Relaxed),
        0,
        "requests failed during reloads"
    );
    assert!(ok.load(Ordering::Relaxed) >= 240);
    let status = plugin_status(&c, &gateway).await;
    assert_eq!(status["stats"]["failures"]["trap"], 0, "{status}");
    assert_eq!(status["stats"]["failures"]["instantiate"], 0, "{status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_that_does_not_load_keeps_the_old_plugin_and_says_why() {
    let files = built();
    let nodes = vec![Backend::start("a", 0).await];
    let dir = TempDir::new("kgw-broken");
    let plugin = dir.path.join("plugin.wasm");
    install(&files.misbehave, &plugin);
    let gateway = Gateway::start(&format!(
        "{}\n{}\n{}",
        cluster_toml(&nodes),
        runtime_toml(false),
        plugin_toml("kept", &plugin, "", "fallback"),
    ));
    let c = client();
    ready(&c, &gateway).await;
    let sha = plugin_status(&c, &gateway).await["sha256"].clone();

    let garbage = dir.path.join("garbage");
    std::fs::write(&garbage, b"\0asm but not really").unwrap();
    for (broken, why) in [
        (garbage.as_path(), "not a valid component"),
        (files.other_world.as_path(), "does not implement world"),
    ] {
        install(broken, &plugin);
        let outcome = reload(&c, &gateway).await;
        assert_eq!(outcome["outcome"], "failed", "{outcome}");
        assert!(
            outcome["error"].as_str().unwrap().contains(why),
            "{outcome}"
        );
        let status = plugin_status(&c, &gateway).await;
        assert_eq!(status["sha256"], sha, "the old version still runs");
        assert!(
            status["last_reload_error"].as_str().unwrap().contains(why),
            "{status}"
        );
        assert!(
            served_by_misbehave(&c, &gateway).await,
            "old plugin still routes"
        );
    }

    install(&files.query_affinity, &plugin);
    assert_eq!(reload(&c, &gateway).await["outcome"], "reloaded");
    let status = plugin_status(&c, &gateway).await;
    assert!(status["last_reload_error"].is_null(), "{status}");
    assert_eq!(status["sha256"], sha256_of(&files.query_affinity));
    assert!(!served_by_misbehave(&c, &gateway).await);
    decides_cleanly(&c, &gateway).await;
    assert_eq!(reload(&c, &gateway).await["outcome"], "unchanged");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_plugin_file_is_reloaded_without_being_asked() {
    let files = built();
    let nodes = vec![Backend::start("a", 0).await];
    let dir = TempDir::new("kgw-watch");
    let plugin = dir.path.join("plugin.wasm");
    install(&files.misbehave, &plugin);
    let gateway = Gateway::start(&format!(
        "{}\n{}\n{}",
        cluster_toml(&nodes),
        runtime_toml(true),
        plugin_toml("watched", &plugin, "", "fallback"),
    ));
    let c = client();
    ready(&c, &gateway).await;
    assert!(served_by_misbehave(&c, &gateway).await);
    install(&files.query_affinity, &plugin);
    let expected = sha256_of(&files.query_affinity);
    eventually_async("file watcher reload", Duration::from_secs(30), || async {
        (plugin_status(&c, &gateway).await["sha256"] == expected).then_some(())
    })
    .await;
    assert!(!served_by_misbehave(&c, &gateway).await);
    decides_cleanly(&c, &gateway).await;
}

/// Cache entries under `dir` (not wasmtime's `.stats` usage files) with
/// their modification times.
fn cache_entries(dir: &Path) -> Vec<(std::path::PathBuf, std::time::SystemTime)> {
    files_under(dir)
        .into_iter()
        .filter(|p| p.extension().is_none_or(|e| e != "stats"))
        .map(|p| {
            let modified = std::fs::metadata(&p).and_then(|m| m.modified()).unwrap();
            (p, modified)
        })
        .collect()
}

/// Every regular file under `dir`, recursively.
fn files_under(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut found = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                pending.push(path);
            } else {
                found.push(path);
            }
        }
    }
    found.sort();
    found
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compiled_components_are_cached_on_disk_across_restarts() {
    let files = built();
    let nodes = vec![Backend::start("a", 0).await];
    let dir = TempDir::new("kgw-cache");
    let cache = dir.path.join("cache");
    let config = format!(
        "{}\n[plugin_runtime]\ndeadline_ms = 100\nwatch_files = false\ncache_dir = \"{}\"\n{}",
        cluster_toml(&nodes),
        cache.display(),
        plugin_toml("cached", &files.query_affinity, "", "fallback"),
    );
    let c = client();
    let first = Gateway::start(&config);
    ready(&c, &first).await;
    let entries = kylin_gateway_tests::support::eventually(
        "a compiled component in the cache",
        Duration::from_secs(10),
        || {
            let entries = cache_entries(&cache);
            (!entries.is_empty()).then_some(entries)
        },
    );
    drop(first);

    // A restart finds the entry (same bytes, same engine) instead of
    // compiling and writing it again, and says so: wasmtime's cache
    // records every hit in the entry's `.stats` file (`usages`: 1 from the
    // write, +1 per hit). Without a hit the entries would be unchanged as
    // well if the restart did not use the cache at all.
    let second = Gateway::start(&config);
    ready(&c, &second).await;
    assert!(!served_by_misbehave(&c, &second).await);
    decides_cleanly(&c, &second).await;
    assert_eq!(cache_entries(&cache), entries, "the restart compiled again");
    let stats: Vec<_> = entries
        .iter()
        .map(|(path, _)| {
            let mut name = path.file_name().unwrap().to_os_string();
            name.push(".stats");
            path.with_file_name(name)
        })
        .collect();
    kylin_gateway_tests::support::eventually(
        "a cache hit recorded",
        Duration::from_secs(10),
        || {
            stats
                .iter()
                .any(|p| std::fs::read_to_string(p).is_ok_and(|t| usages(&t) >= 2))
                .then_some(())
        },
    );
}

/// `usages = N` of a wasmtime cache `.stats` file.
fn usages(stats: &str) -> u64 {
    stats
        .lines()
        .find_map(|l| {
            l.trim()
                .strip_prefix("usages")?
                .trim()
                .strip_prefix('=')?
                .trim()
                .parse()
                .ok()
        })
        .unwrap_or(0)
}
