//! Gateways in a fleet, as end-to-end tests drive them: a gateway process
//! in the fleet of a real ZooKeeper, `/admin/fleet` and `/admin/plugins`
//! readers, and the `kylin-gateway plugin` store commands.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use super::backend::Backend;
use super::eventually_async;
use super::gateway::{Gateway, static_discovery};
use super::http::{TestClient, get};
use super::process::{run_with_deadline, target_bin};
use super::zookeeper::{self, ZkServer};

pub const BASE: &str = "/kylin/kylin_metadata";
pub const SESSION_MS: u64 = 2000;

/// A gateway in front of `backend`, in the fleet of `zk`, with `extra` TOML.
pub fn fleet_gateway(zk: &ZkServer, backend: &Backend, extra: &str) -> Gateway {
    Gateway::start(&format!(
        "{}\n[fleet]\nconnect = \"{}\"\nsession_timeout_ms = {SESSION_MS}\n\n{extra}\n",
        static_discovery(&[(backend.addr, "all", true)]),
        zk.connect_string()
    ))
}

pub async fn fleet(c: &TestClient, gateway: &Gateway) -> serde_json::Value {
    get(c, &gateway.admin_url("/admin/fleet"))
        .await
        .unwrap()
        .json()
}

/// Waits until `gateway` sees `count` gateways, returning when it did.
pub async fn sees(c: &TestClient, gateway: &Gateway, count: u64, within: Duration) -> Instant {
    eventually_async(
        &format!("{count} gateways in the fleet"),
        within,
        || async { (fleet(c, gateway).await["gateways"] == count).then(Instant::now) },
    )
    .await
}

/// `kylin-gateway plugin ARGS --zk ...`, to its end.
pub fn plugin_command(zk: &ZkServer, args: &[&str]) -> std::process::Output {
    let mut command = Command::new(target_bin("kylin-gateway"));
    command
        .arg("plugin")
        .args(args)
        .args(["--zk", &zk.connect_string(), "--base", BASE]);
    run_with_deadline(
        "kylin-gateway plugin",
        &mut command,
        Duration::from_secs(60),
    )
}

pub fn publish(zk: &ZkServer, file: &Path, config: &str) -> std::process::Output {
    let file = file.to_str().unwrap();
    plugin_command(
        zk,
        &["publish", file, "--name", "routing", "--config", config],
    )
}

pub fn sha256_of(path: &Path) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(std::fs::read(path).unwrap())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The `routing` plugin as `/admin/plugins` shows it.
pub async fn routing(c: &TestClient, gateway: &Gateway) -> serde_json::Value {
    get(c, &gateway.admin_url("/admin/plugins"))
        .await
        .unwrap()
        .json()[0]
        .clone()
}

/// Waits until `gateway` runs `sha256` as `routing`.
pub async fn runs(
    c: &TestClient,
    gateway: &Gateway,
    sha256: &str,
    within: Duration,
) -> serde_json::Value {
    eventually_async(&format!("routing at {sha256}"), within, || async {
        let plugin = routing(c, gateway).await;
        (plugin["sha256"] == sha256).then_some(plugin)
    })
    .await
}

/// The pointer `routing` as the store holds it.
pub async fn pointer(zk: &ZkServer) -> serde_json::Value {
    let client = zookeeper::client(&zk.connect_string()).await;
    let (data, _) = client
        .get_data(&format!("{BASE}/gateway/plugins/names/routing"))
        .await
        .unwrap();
    serde_json::from_slice(&data).unwrap()
}
