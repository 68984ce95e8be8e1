//! Where each layout keeps its znodes: the Curator service-discovery
//! directories (Kylin 3.x/KAP `service/<name>`, Kylin 5 `services/<mode>`)
//! and the job-engine election directory under the base path (paths are
//! relative to the connect string's chroot).

use super::kylin5;
use crate::config::Layout;
use crate::view::Modes;

/// The znode directories one provider watches.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Paths {
    /// Every instance directory: Curator `ServiceDiscovery`'s
    /// `<base>/service/<name>`, one per service name the layout uses
    /// (`kylin`, `cluster_servers`), then Kylin 5's
    /// `<kylin5 base>/services/<mode>`.
    pub services: Vec<String>,
    /// The Kylin 5 directories among `services`, each with the mode its
    /// name gives the instances in it.
    pub kylin5_services: Vec<(String, Modes)>,
    /// Curator `LeaderSelector` directory: `<base>/job_engine/leader`.
    pub election: String,
    /// The older schedulers' single lock, only read to explain a missing
    /// election.
    pub legacy_lock: String,
    /// Whether the layout elects a job-engine leader (all but Kylin 5).
    pub elects: bool,
}

impl Paths {
    /// The paths of `layout` with Kylin 5 under the same base.
    pub fn new(base: &str, layout: Layout) -> Paths {
        Paths::with_kylin5_base(base, base, layout)
    }

    /// The paths of `layout`: Kylin 3.x/KAP directories under `base`, Kylin
    /// 5's under `kylin5_base` (they differ when derived from a JDBC
    /// `kylin.metadata.url`).
    pub fn with_kylin5_base(base: &str, kylin5_base: &str, layout: Layout) -> Paths {
        let names: &[&str] = match layout {
            Layout::Auto => &["kylin", "cluster_servers"],
            Layout::Kap24 | Layout::Kylin30 => &["kylin"],
            Layout::Kylin31 => &["cluster_servers"],
            Layout::Kylin5 => &[],
        };
        let kylin5_services: Vec<(String, Modes)> = match layout {
            Layout::Auto | Layout::Kylin5 => kylin5::SERVICES
                .iter()
                .map(|(mode, modes)| (join(kylin5_base, &format!("services/{mode}")), *modes))
                .collect(),
            _ => Vec::new(),
        };
        let services = names
            .iter()
            .map(|name| join(base, &format!("service/{name}")))
            .chain(kylin5_services.iter().map(|(dir, _)| dir.clone()))
            .collect();
        Paths {
            services,
            kylin5_services,
            election: join(base, "job_engine/leader"),
            legacy_lock: join(base, "job_engine/global_job_engine_lock"),
            elects: layout != Layout::Kylin5,
        }
    }
}

/// Joins an absolute base and a relative path (`/` + `a` → `/a`).
pub fn join(base: &str, relative: &str) -> String {
    format!("{}/{relative}", base.trim_end_matches('/'))
}
