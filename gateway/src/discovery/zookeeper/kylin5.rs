//! Kylin 5's registrations and what they mean for routing. Kylin 5
//! registers with Spring Cloud ZooKeeper discovery (`@EnableDiscoveryClient`;
//! `spring.application.name: ${kylin.server.mode:all}`,
//! `spring.cloud.zookeeper.discovery.root:
//! /kylin/${kylin.metadata.url.unique-id}/services`): one EPHEMERAL znode per
//! node at `<base>/services/<mode>/<uuid>`, `<mode>` one of `all`, `job`,
//! `query` (the service name is the server mode), parents Curator
//! CONTAINER znodes. The data is Curator's `ServiceInstance` with a Spring
//! `ZookeeperInstance` payload:
//!
//! ```json
//! {"name":"job","id":"<uuid>","address":"host1","port":7070,"sslPort":null,
//!  "payload":{"@class":"org.springframework.cloud.zookeeper.discovery.ZookeeperInstance",
//!             "id":"<context id>","name":"job","metadata":{"instance_status":"UP"}},
//!  "registrationTimeUTC":1700000000000,"serviceType":"DYNAMIC","uriSpec":{"parts":[]}}
//! ```
//!
//! (worked out from the classes, not captured live: parsed leniently).
//! `address` is the host name unless Spring's `prefer-ip-address` is set.
//!
//! Kylin 5 elects no job-engine leader in ZooKeeper: job ownership is per
//! project ("epochs" in the metastore's `<identifier>_epoch` table), and
//! every non-GET API call but queries is forwarded by Kylin itself to the
//! project's owner, so any `all`/`job` node is a correct target for job
//! traffic; a `query` node would cost a hop, or fail when it may not forward
//! (`kylin.query.request-forward-enabled=false`).

use super::election::Election;
use super::instance::{Instance, MalformedInstance, json_object, parse_document};
use crate::config::Layout;
use crate::view::{JobRouting, Modes};

/// Kylin 5's service names (the server modes) and the roles each gives.
pub const SERVICES: [(&str, Modes); 3] = [
    ("all", Modes::ALL),
    ("job", Modes::JOB),
    ("query", Modes::QUERY),
];

/// `/admin/leader`'s reason on a cluster without election.
pub const NO_ELECTION: &str = "Kylin 5: per-project epochs; jobs go to any job-capable node";

/// Spring's `instance_status` of a node that takes traffic.
const STATUS_UP: &str = "UP";

/// Parses a Kylin 5 instance znode under `services/<mode>`. The mode is the
/// directory's (`dir_mode`), whatever the document says; a
/// `payload.metadata.instance_status` other than `UP` (Spring's
/// `OUT_OF_SERVICE`, ...) is treated like `enabled: false`. A missing
/// status is `UP`.
pub fn parse_spring_instance(
    znode_name: &str,
    data: &[u8],
    dir_mode: Modes,
) -> Result<Instance, MalformedInstance> {
    let doc = json_object(data)?;
    let mut instance = parse_document(znode_name, &doc, dir_mode)?;
    instance.modes = dir_mode;
    let status = doc
        .get("payload")
        .and_then(|p| p.get("metadata"))
        .and_then(|m| m.get("instance_status"))
        .and_then(|s| s.as_str());
    if status.is_some_and(|s| !s.trim().eq_ignore_ascii_case(STATUS_UP)) {
        instance.enabled = false;
    }
    Ok(instance)
}

/// Where job traffic goes. `kylin-5` never elects; `auto` takes the
/// cluster for a Kylin 5 one while one of its `services/<mode>`
/// directories exists and no `LeaderSelector` leader is elected (an
/// elected leader means a 3.x/4.0 cluster, whatever else lingers); the
/// other layouts always elect.
pub fn job_routing(layout: Layout, kylin5_dirs_exist: bool, election: &Election) -> JobRouting {
    let elected = matches!(election, Election::Leader { .. });
    match layout {
        Layout::Kylin5 => JobRouting::AnyJobNode,
        Layout::Auto if kylin5_dirs_exist && !elected => JobRouting::AnyJobNode,
        _ => JobRouting::Leader,
    }
}
