//! `canary`: sends a share of query traffic, and every request carrying a
//! chosen header, to a named subset of nodes (say, the ones running a new
//! Kylin release), so a rollout can be watched on a slice of real traffic.
//! The share is exact per instance (an error-diffusion counter, no
//! randomness); with `"sticky": "client"` it is chosen per client address
//! instead, so one client stays on one side.
//!
//! Config (JSON):
//! `{"nodes": ["node-a"], "percent": 10, "header": "x-kylin-canary",
//!   "classes": ["query"], "sticky": "none" | "client", "tag": "x-kylin-canary-routed"}`
//! A request with `header` present (any value but `0`/`false`) always goes
//! to the canary; with the value `0` or `false` it never does. `tag`, when
//! set, is added to upstream requests sent to the canary.

wit_bindgen::generate!({
    path: "../../wit",
    world: "routing-plugin",
});

use std::cell::Cell;
use std::sync::OnceLock;

use kylin_gateway::plugin::types::{Route, TrafficClass};

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    nodes: Vec<String>,
    #[serde(default)]
    percent: f64,
    #[serde(default)]
    header: Option<String>,
    #[serde(default = "default_classes")]
    classes: Vec<String>,
    #[serde(default)]
    sticky: Option<String>,
    #[serde(default)]
    tag: Option<String>,
}

fn default_classes() -> Vec<String> {
    vec!["query".into()]
}

struct Settings {
    config: Config,
    classes: Vec<TrafficClass>,
    sticky_client: bool,
}

static SETTINGS: OnceLock<Settings> = OnceLock::new();

thread_local! {
    /// Ids of the last view from `view-changed`, in view order.
    static NODE_IDS: std::cell::RefCell<Vec<String>> = const { std::cell::RefCell::new(Vec::new()) };

    /// Error-diffusion accumulator, in percent of one request.
    static CREDIT: Cell<f64> = const { Cell::new(0.0) };
}

struct Canary;

impl Guest for Canary {
    fn init(config: String) -> Result<(), String> {
        let config: Config =
            serde_json::from_str(&config).map_err(|e| format!("canary config: {e}"))?;
        if config.nodes.is_empty() {
            return Err("canary config: nodes must name at least one node".into());
        }
        if !(0.0..=100.0).contains(&config.percent) {
            return Err(format!(
                "canary config: percent must be within 0..=100, not {}",
                config.percent
            ));
        }
        let classes = config
            .classes
            .iter()
            .map(|c| match c.as_str() {
                "query" => Ok(TrafficClass::Query),
                "job" => Ok(TrafficClass::Job),
                "other" => Ok(TrafficClass::Other),
                other => Err(format!("canary config: unknown class {other:?}")),
            })
            .collect::<Result<Vec<_>, _>>()?;
        let sticky_client = match config.sticky.as_deref() {
            None | Some("none") => false,
            Some("client") => true,
            Some(other) => {
                return Err(format!(
                    "canary config: sticky must be none or client, not {other:?}"
                ));
            }
        };
        SETTINGS
            .set(Settings {
                config: Config {
                    header: config.header.as_ref().map(|h| h.to_ascii_lowercase()),
                    ..config
                },
                classes,
                sticky_client,
            })
            .map_err(|_| "init called twice".to_string())
    }

    fn needs() -> Needs {
        Needs {
            classes: SETTINGS.get().expect("init ran").classes.clone(),
            body_prefix_len: 0,
            headers: true,
        }
    }

    fn view_changed(view: View) {
        NODE_IDS.with_borrow_mut(|ids| *ids = view.nodes.into_iter().map(|n| n.id).collect());
    }

    fn route(request: Request, load: ViewLoad) -> Decision {
        let settings = SETTINGS.get().expect("init ran");
        let config = &settings.config;
        let forced = config.header.as_ref().and_then(|name| {
            request
                .headers
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| !(v == "0" || v.eq_ignore_ascii_case("false")))
        });
        let to_canary = match forced {
            Some(choice) => choice,
            None if settings.sticky_client => {
                let ip = request
                    .client
                    .rsplit_once(':')
                    .map_or(&*request.client, |(ip, _)| ip);
                (fnv1a(ip.as_bytes()) % 10_000) as f64 / 100.0 < config.percent
            }
            None => CREDIT.with(|credit| {
                let next = credit.get() + config.percent;
                if next >= 100.0 {
                    credit.set(next - 100.0);
                    true
                } else {
                    credit.set(next);
                    false
                }
            }),
        };
        if !to_canary {
            return Decision {
                route: Route::Default,
                add_headers: Vec::new(),
            };
        }
        let healthy: Vec<String> = NODE_IDS.with_borrow(|ids| {
            config
                .nodes
                .iter()
                .filter(|wanted| {
                    ids.iter()
                        .zip(&load.nodes)
                        .any(|(id, live)| id == *wanted && live.healthy)
                })
                .cloned()
                .collect()
        });
        if healthy.is_empty() {
            // The canary is down: serve from the rest rather than fail.
            return Decision {
                route: Route::Default,
                add_headers: Vec::new(),
            };
        }
        Decision {
            route: Route::Prefer(healthy),
            add_headers: config
                .tag
                .iter()
                .map(|name| (name.clone(), "1".to_string()))
                .collect(),
        }
    }
}

fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, &b| {
        (hash ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

export!(Canary);
