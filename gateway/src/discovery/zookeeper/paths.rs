//! Where each layout keeps its znodes: the Curator service-discovery
//! directories and the job-engine election directory under the base path
//! (paths are relative to the connect string's chroot).

use crate::config::Layout;

/// The znode directories one provider watches.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Paths {
    /// Curator `ServiceDiscovery` directories: `<base>/service/<name>`, one
    /// per service name the layout uses (`kylin`, `cluster_servers`).
    pub services: Vec<String>,
    /// Curator `LeaderSelector` directory: `<base>/job_engine/leader`.
    pub election: String,
    /// The older schedulers' single lock, only read to explain a missing
    /// election.
    pub legacy_lock: String,
}

impl Paths {
    pub fn new(base: &str, layout: Layout) -> Paths {
        let names: &[&str] = match layout {
            Layout::Auto => &["kylin", "cluster_servers"],
            Layout::Kap24 | Layout::Kylin30 => &["kylin"],
            Layout::Kylin31 => &["cluster_servers"],
        };
        Paths {
            services: names
                .iter()
                .map(|name| join(base, &format!("service/{name}")))
                .collect(),
            election: join(base, "job_engine/leader"),
            legacy_lock: join(base, "job_engine/global_job_engine_lock"),
        }
    }
}

/// Joins an absolute base and a relative path (`/` + `a` → `/a`).
pub fn join(base: &str, relative: &str) -> String {
    format!("{}/{relative}", base.trim_end_matches('/'))
}
