//! The `zookeeper` provider: Curator service discovery and LeaderSelector
//! election as Kylin writes them. (Being built: see the ZooKeeper issue.)

use crate::config::ZookeeperSettings;
use crate::view::ViewPublisher;

/// Follows ZooKeeper until the process exits.
pub async fn run(settings: ZookeeperSettings, publisher: ViewPublisher) {
    let _ = (settings, publisher);
    tracing::error!("zookeeper discovery is not built yet");
    std::future::pending::<()>().await
}
