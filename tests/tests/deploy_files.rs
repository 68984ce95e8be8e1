//! The files under `deploy/`: the systemd unit (checked by
//! `systemd-analyze verify` where it is installed), the Grafana dashboard
//! and the Prometheus alert rules (every metric they name is one the
//! gateway exports), the `cargo deb` metadata that packages them, and
//! `scripts/package.sh`, which builds the package.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use kylin_gateway_tests::support::backend::Backend;
use kylin_gateway_tests::support::gateway::{Gateway, TempDir, static_discovery};
use kylin_gateway_tests::support::http::{client, get, send};
use kylin_gateway_tests::support::{eventually_async, target_bin};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

fn read(relative: &str) -> String {
    let path = repo().join(relative);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn rs_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rs_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// `kgw_…` names at the start of a token in `text`.
fn metric_tokens(text: &str) -> BTreeSet<String> {
    let bytes = text.as_bytes();
    let mut names = BTreeSet::new();
    let mut i = 0;
    while let Some(at) = text[i..].find("kgw_") {
        let start = i + at;
        let boundary = start == 0 || {
            let c = bytes[start - 1];
            !(c.is_ascii_alphanumeric() || c == b'_')
        };
        let end = text[start..]
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .map_or(text.len(), |n| start + n);
        if boundary {
            names.insert(text[start..end].to_string());
        }
        i = end;
    }
    names
}

/// The metric names the gateway's source registers: every string literal
/// `"kgw_…"` outside its unit tests, and which of them are histograms
/// (exported as `_bucket`, `_sum`, `_count`): those of a `histogram!`, and
/// a `const HISTOGRAM` (the gateway's own, `proxy::durations`).
fn exported_metrics() -> (BTreeSet<String>, BTreeSet<String>) {
    let mut files = Vec::new();
    rs_files(&repo().join("gateway/src"), &mut files);
    let (mut names, mut histograms) = (BTreeSet::new(), BTreeSet::new());
    for file in files {
        let stem = file.file_stem().unwrap().to_string_lossy();
        if stem == "tests" || stem.starts_with("tests_") {
            continue;
        }
        let text = std::fs::read_to_string(&file).unwrap();
        for (n, _) in text.match_indices("\"kgw_") {
            let name: String = text[n + 1..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            if text[n + 1 + name.len()..].starts_with('"') {
                let before = text[..n].trim_end();
                if before.ends_with("histogram!(") || before.ends_with("const HISTOGRAM: &str =") {
                    histograms.insert(name.clone());
                }
                names.insert(name);
            }
        }
    }
    assert!(
        names.len() > 20 && names.contains("kgw_requests_total"),
        "found too few metric names in gateway/src: {names:?}"
    );
    assert!(
        histograms.contains("kgw_request_duration_seconds"),
        "{histograms:?}"
    );
    (names, histograms)
}

/// The names in `used` that the gateway does not export.
fn unknown_metrics(used: &BTreeSet<String>) -> Vec<String> {
    let (names, histograms) = exported_metrics();
    used.iter()
        .filter(|name| {
            let base = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|suffix| name.strip_suffix(suffix))
                .filter(|base| histograms.contains(*base));
            !names.contains(*name) && base.is_none()
        })
        .cloned()
        .collect()
}

// ---- Prometheus rules ---------------------------------------------------

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleFile {
    groups: Vec<RuleGroup>,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleGroup {
    name: String,
    #[serde(default)]
    interval: Option<String>,
    rules: Vec<Rule>,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Rule {
    alert: String,
    expr: String,
    #[serde(default, rename = "for")]
    for_: Option<String>,
    #[serde(default)]
    labels: std::collections::BTreeMap<String, String>,
    #[serde(default)]
    annotations: std::collections::BTreeMap<String, String>,
}

/// Prometheus durations: `30s`, `1m`, `1h30m`.
fn seconds(duration: &str) -> u64 {
    let mut total = 0;
    let mut number = String::new();
    for c in duration.chars() {
        if c.is_ascii_digit() {
            number.push(c);
            continue;
        }
        let n: u64 = number
            .parse()
            .unwrap_or_else(|_| panic!("bad duration {duration:?}"));
        number.clear();
        total += n * match c {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            'd' => 86400,
            _ => panic!("bad duration unit in {duration:?}"),
        };
    }
    assert!(number.is_empty(), "duration {duration:?} has no unit");
    total
}

fn rules() -> RuleFile {
    let text = read("deploy/prometheus/kylin-gateway.rules.yml");
    serde_norway::from_str(&text)
        .unwrap_or_else(|e| panic!("deploy/prometheus/kylin-gateway.rules.yml: {e}"))
}

#[test]
fn alert_rules_parse_and_name_only_exported_metrics() {
    let file = rules();
    assert!(!file.groups.is_empty());
    let mut used = BTreeSet::new();
    let mut alerts = BTreeSet::new();
    for group in &file.groups {
        assert!(!group.name.is_empty());
        if let Some(interval) = &group.interval {
            seconds(interval);
        }
        for rule in &group.rules {
            assert!(alerts.insert(rule.alert.clone()), "{} twice", rule.alert);
            assert!(!rule.expr.trim().is_empty(), "{}: empty expr", rule.alert);
            assert_eq!(
                rule.expr.matches('(').count(),
                rule.expr.matches(')').count(),
                "{}: unbalanced parentheses in {}",
                rule.alert,
                rule.expr
            );
            if let Some(for_) = &rule.for_ {
                seconds(for_);
            }
            assert!(
                rule.labels.contains_key("severity"),
                "{}: no severity",
                rule.alert
            );
            assert!(
                rule.annotations.contains_key("summary"),
                "{}: no summary",
                rule.alert
            );
            let names = metric_tokens(&rule.expr);
            assert!(
                !names.is_empty(),
                "{}: no kgw_ metric in {}",
                rule.alert,
                rule.expr
            );
            used.extend(names);
        }
    }
    let unknown = unknown_metrics(&used);
    assert!(
        unknown.is_empty(),
        "the alert rules name metrics the gateway does not export: {unknown:?}"
    );
}

#[test]
fn alert_rules_cover_leader_view_ejection_plugins_and_certificates() {
    let file = rules();
    let all: Vec<&Rule> = file.groups.iter().flat_map(|g| &g.rules).collect();
    let with = |metric: &str| -> &Rule {
        all.iter()
            .find(|r| metric_tokens(&r.expr).contains(metric))
            .unwrap_or_else(|| panic!("no alert on {metric}"))
    };
    let for_s = |rule: &Rule| rule.for_.as_deref().map_or(0, seconds);
    assert_eq!(
        for_s(with("kgw_view_has_leader")),
        60,
        "no leader for more than a minute"
    );
    assert!(for_s(with("kgw_view_stale")) > 0);
    assert_eq!(
        for_s(with("kgw_upstream_ejected")),
        300,
        "a node ejected for more than 5 minutes"
    );
    with("kgw_plugin_failures_total");
    let expiry = with("kgw_tls_cert_expiry_days");
    assert!(expiry.expr.contains("< 14"), "{}", expiry.expr);
}

// ---- Grafana dashboard --------------------------------------------------

fn dashboard() -> serde_json::Value {
    serde_json::from_str(&read("deploy/grafana/kylin-gateway.json"))
        .unwrap_or_else(|e| panic!("deploy/grafana/kylin-gateway.json: {e}"))
}

/// Every panel that is not a row: (title, its queries).
fn dashboard_queries(dashboard: &serde_json::Value) -> Vec<(String, Vec<String>)> {
    let panels = dashboard["panels"].as_array().expect("panels");
    let mut out = Vec::new();
    let mut ids = BTreeSet::new();
    for panel in panels {
        let id = panel["id"].as_u64().expect("panel id");
        assert!(ids.insert(id), "panel id {id} twice");
        for key in ["h", "w", "x", "y"] {
            assert!(panel["gridPos"][key].is_u64(), "panel {id}: gridPos.{key}");
        }
        if panel["type"] == "row" {
            continue;
        }
        let title = panel["title"].as_str().expect("title").to_string();
        let targets = panel["targets"]
            .as_array()
            .unwrap_or_else(|| panic!("panel {title:?} has no targets"));
        assert!(!targets.is_empty(), "panel {title:?} has no targets");
        let exprs: Vec<String> = targets
            .iter()
            .map(|t| {
                let expr = t["expr"].as_str().unwrap_or_default().to_string();
                assert!(
                    !expr.trim().is_empty(),
                    "panel {title:?}: a target without expr"
                );
                assert_eq!(
                    expr.matches('(').count(),
                    expr.matches(')').count(),
                    "panel {title:?}: unbalanced parentheses in {expr}"
                );
                expr
            })
            .collect();
        out.push((title, exprs));
    }
    out
}

#[test]
fn dashboard_parses_and_names_only_exported_metrics() {
    let dashboard = dashboard();
    assert_eq!(dashboard["uid"], "kylin-gateway");
    let panels = dashboard_queries(&dashboard);
    assert!(panels.len() >= 10, "{} panels", panels.len());
    let mut used = BTreeSet::new();
    for (title, exprs) in &panels {
        let names: BTreeSet<String> = exprs.iter().flat_map(|e| metric_tokens(e)).collect();
        assert!(!names.is_empty(), "panel {title:?} queries no kgw_ metric");
        used.extend(names);
    }
    let unknown = unknown_metrics(&used);
    assert!(
        unknown.is_empty(),
        "the dashboard names metrics the gateway does not export: {unknown:?}"
    );
    // What the dashboard is for.
    for metric in [
        "kgw_requests_total",
        "kgw_request_duration_seconds_bucket",
        "kgw_upstream_in_flight",
        "kgw_upstream_ejected",
        "kgw_ejections_total",
        "kgw_view_has_leader",
        "kgw_view_stale",
        "kgw_plugin_calls_total",
        "kgw_plugin_failures_total",
        "kgw_tls_cert_expiry_days",
    ] {
        assert!(
            used.contains(metric),
            "the dashboard does not show {metric}"
        );
    }
}

/// The metrics the dashboard and the rules rely on from the first request
/// on are in a running gateway's `/metrics`, spelled as exported (a
/// histogram as `_bucket`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_gateway_exports_what_the_dashboard_queries() {
    let node = Backend::start("n", 0).await;
    let gateway = Gateway::start(&static_discovery(&[(node.addr, "all", true)]));
    let c = client();
    eventually_async(
        "a query through the gateway",
        Duration::from_secs(30),
        || async {
            send(&c, "POST", &gateway.url("/kylin/api/query"), &[], "{}")
                .await
                .ok()
                .filter(|r| r.status == 200)
        },
    )
    .await;
    let metrics = get(&c, &gateway.admin_url("/metrics"))
        .await
        .unwrap()
        .text();
    let exported = metric_tokens(&metrics);
    let mut queried = BTreeSet::new();
    for (_, exprs) in dashboard_queries(&dashboard()) {
        queried.extend(exprs.iter().flat_map(|e| metric_tokens(e)));
    }
    for metric in [
        "kgw_requests_total",
        "kgw_request_duration_seconds_bucket",
        "kgw_upstream_in_flight",
        "kgw_upstream_ejected",
        "kgw_view_has_leader",
        "kgw_view_stale",
        "kgw_view_nodes",
        "kgw_view_query_nodes",
        "kgw_view_updates_total",
    ] {
        assert!(
            queried.contains(metric),
            "the dashboard does not query {metric}"
        );
        assert!(
            exported.contains(metric),
            "{metric} is not in /metrics:\n{metrics}"
        );
    }
}

// ---- systemd unit -------------------------------------------------------

/// `Key=value` lines of `[section]`.
fn unit_entries(unit: &str, section: &str) -> Vec<(String, String)> {
    let mut current = "";
    let mut out = Vec::new();
    for line in unit.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            current = name;
            continue;
        }
        let (key, value) = line
            .split_once('=')
            .unwrap_or_else(|| panic!("not Key=value: {line}"));
        if current == section {
            out.push((key.trim().to_string(), value.trim().to_string()));
        }
    }
    out
}

#[test]
fn systemd_unit_runs_reloads_drains_and_is_sandboxed() {
    let unit = read("deploy/kylin-gateway.service");
    let service = unit_entries(&unit, "Service");
    let get = |key: &str| -> &str {
        service
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
            .unwrap_or_else(|| panic!("[Service] has no {key}="))
    };
    assert_eq!(
        get("ExecStart"),
        "/usr/bin/kylin-gateway --config /etc/kylin-gateway/gateway.toml"
    );
    assert_eq!(get("ExecReload"), "/bin/kill -HUP $MAINPID");
    assert_eq!(get("KillSignal"), "SIGTERM");
    assert_eq!(get("Restart"), "on-failure");
    for (key, value) in [
        ("NoNewPrivileges", "yes"),
        ("ProtectSystem", "strict"),
        ("ProtectHome", "yes"),
        ("PrivateTmp", "yes"),
        ("CapabilityBoundingSet", "CAP_NET_BIND_SERVICE"),
        ("AmbientCapabilities", "CAP_NET_BIND_SERVICE"),
    ] {
        assert_eq!(get(key), value, "{key}");
    }
    assert!(
        service
            .iter()
            .any(|(k, v)| k == "DynamicUser" && v == "yes")
            || service.iter().any(|(k, _)| k == "User"),
        "the service runs as root"
    );
    let nofile: u64 = get("LimitNOFILE").parse().expect("LimitNOFILE");
    assert!(
        nofile >= 20_000,
        "LimitNOFILE={nofile}: below two listeners' max_connections"
    );
    // SIGKILL must not come before the drain deadline (default 30 s).
    let stop: u64 = get("TimeoutStopSec")
        .parse()
        .expect("TimeoutStopSec in seconds");
    assert!(
        stop > 30,
        "TimeoutStopSec={stop} does not outlast shutdown.drain_timeout_ms"
    );
    assert!(
        !unit_entries(&unit, "Install").is_empty(),
        "no [Install] section"
    );
}

#[test]
fn systemd_analyze_verifies_the_unit() {
    let Ok(version) = Command::new("systemd-analyze").arg("--version").output() else {
        println!("SKIPPED: systemd-analyze is not installed (Debian package systemd)");
        return;
    };
    assert!(version.status.success());
    // verify checks that ExecStart's binary exists: point it at the one
    // these tests built; everything else is the unit as shipped.
    let binary = target_bin("kylin-gateway");
    assert!(binary.exists(), "{} not built", binary.display());
    let unit = read("deploy/kylin-gateway.service")
        .replace("/usr/bin/kylin-gateway", binary.to_str().unwrap());
    let dir = TempDir::new("kgw-unit");
    let file = dir.path.join("kylin-gateway.service");
    std::fs::write(&file, unit).unwrap();
    let output = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&file)
        .output()
        .expect("run systemd-analyze verify");
    let stderr = String::from_utf8_lossy(&output.stderr);
    // Unknown keys and bad values are warnings ("…, ignoring") with exit
    // status 0: any line about the unit fails the test.
    let about_unit: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("kylin-gateway.service"))
        .collect();
    assert!(
        output.status.success() && about_unit.is_empty(),
        "systemd-analyze verify: {}\n{stderr}",
        output.status
    );
}

// ---- cargo deb ------------------------------------------------------------

#[test]
fn cargo_deb_assets_exist_and_ship_the_unit_and_config() {
    let manifest: toml::Value = toml::from_str(&read("gateway/Cargo.toml")).unwrap();
    let deb = &manifest["package"]["metadata"]["deb"];
    let assets = deb["assets"]
        .as_array()
        .expect("[package.metadata.deb] assets");
    let mut targets = BTreeSet::new();
    for asset in assets {
        let asset = asset.as_array().expect("[source, target, mode]");
        let source = asset[0].as_str().unwrap();
        let target = asset[1].as_str().unwrap();
        // cargo deb reads sources relative to the package's directory and
        // substitutes the built binary for target/release/.
        if !source.starts_with("target/release/") {
            let path = repo().join("gateway").join(source);
            assert!(
                path.exists(),
                "asset {source}: {} does not exist",
                path.display()
            );
        }
        targets.insert(target.to_string());
    }
    for target in [
        "usr/bin/",
        "lib/systemd/system/kylin-gateway.service",
        "etc/kylin-gateway/gateway.toml",
    ] {
        assert!(
            targets.contains(target),
            "the package does not install {target}: {targets:?}"
        );
    }
    let conf = deb["conf-files"].as_array().expect("conf-files");
    assert!(
        conf.iter()
            .any(|c| c.as_str() == Some("/etc/kylin-gateway/gateway.toml")),
        "the config is not a conffile (an upgrade would overwrite it)"
    );
}

#[test]
fn package_script_packages_the_given_build_and_leaves_target_release_alone() {
    let Ok(version) = Command::new("cargo").args(["deb", "--version"]).output() else {
        println!("SKIPPED: cargo is not on PATH");
        return;
    };
    if !version.status.success() {
        println!("SKIPPED: cargo-deb is not installed (cargo install cargo-deb)");
        return;
    }
    // The build these tests made stands in for a profile-guided one; the
    // script's staging and the package go to a target directory of the
    // test's own.
    let binary = target_bin("kylin-gateway");
    assert!(binary.exists(), "{} not built", binary.display());
    let dir = TempDir::new("kgw-package");
    let output = Command::new(repo().join("scripts/package.sh"))
        .env("PGO_BIN", &binary)
        .env("CARGO_TARGET_DIR", &dir.path)
        .output()
        .expect("run scripts/package.sh");
    assert!(
        output.status.success(),
        "scripts/package.sh: {}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    let debs: Vec<PathBuf> = std::fs::read_dir(dir.path.join("debian"))
        .expect("target/debian")
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "deb"))
        .collect();
    assert_eq!(debs.len(), 1, "one package: {debs:?}");
    let unpacked = dir.path.join("unpacked");
    let status = Command::new("dpkg-deb")
        .arg("-x")
        .arg(&debs[0])
        .arg(&unpacked)
        .status()
        .expect("run dpkg-deb");
    assert!(status.success());
    let packaged = std::fs::read(unpacked.join("usr/bin/kylin-gateway")).unwrap();
    assert!(
        packaged == std::fs::read(&binary).unwrap(),
        "the package holds another binary than PGO_BIN"
    );
    assert!(
        unpacked
            .join("lib/systemd/system/kylin-gateway.service")
            .exists()
    );
    assert!(
        !dir.path.join("release").exists(),
        "the script wrote into the target directory's release/"
    );
}
