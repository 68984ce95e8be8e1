//! `kylin-gateway plugin publish | rollback | list`: the operator's side
//! of the plugin store. Each returns the text to print; the binary prints
//! it and picks the exit code.

use std::fmt::Write as _;
use std::time::Duration;

use zookeeper_client::{Client, Error};

use super::record::{GatewayRecord, SERVICE_NAME};
use super::store::{self, Pointer, StoreError, StorePaths};

/// Where the store is: `--zk`, `--base`, `--auth`.
pub struct Target<'a> {
    pub connect: &'a str,
    pub base: &'a str,
    /// `digest:user:password`.
    pub auth: Option<&'a str>,
}

impl Target<'_> {
    async fn connect(&self) -> Result<(Client, StorePaths), String> {
        let auth = crate::config::digest_auth("--auth", self.auth).map_err(|e| e.to_string())?;
        let client = crate::discovery::zookeeper::connect_to(
            self.connect,
            Duration::from_secs(10),
            Duration::from_secs(10),
            auth.as_deref(),
        )
        .await
        .map_err(|e| format!("cannot connect to ZooKeeper {}: {e}", self.connect))?;
        Ok((client, StorePaths::new(self.base)))
    }
}

/// Stores a checked component and points `name` at it.
pub async fn publish(
    target: &Target<'_>,
    name: &str,
    bytes: &[u8],
    config: &str,
    keep: usize,
) -> Result<String, String> {
    let (client, paths) = target.connect().await?;
    let previous = store::pointer(&client, &paths, name)
        .await
        .map_err(|e| e.to_string())?;
    let moved = store::publish(
        &client,
        &paths,
        name,
        bytes,
        config,
        keep,
        target.auth.is_some(),
    )
    .await
    .map_err(|e| e.to_string())?;
    let mut out = format!(
        "published {name}: sha256 {} ({} bytes in {} chunks)\n",
        moved.current.sha256,
        bytes.len(),
        bytes.len().div_ceil(store::CHUNK_BYTES)
    );
    if let Some((previous, _)) = previous {
        let _ = writeln!(out, "previous: sha256 {}", previous.current.sha256);
    }
    Ok(out)
}

/// Points `name` back at its previous version.
pub async fn rollback(target: &Target<'_>, name: &str) -> Result<String, String> {
    let (client, paths) = target.connect().await?;
    let moved = store::rollback(&client, &paths, name, target.auth.is_some())
        .await
        .map_err(|e: StoreError| e.to_string())?;
    Ok(format!(
        "rolled back {name}: now sha256 {} (published at {} ms)\n",
        moved.current.sha256, moved.current.published_at_ms
    ))
}

/// Every published name with its versions, and which gateway runs which.
pub async fn list(target: &Target<'_>) -> Result<String, String> {
    let (client, paths) = target.connect().await?;
    let names = store::names(&client, &paths)
        .await
        .map_err(|e| e.to_string())?;
    let gateways = read_fleet(&client, target.base)
        .await
        .map_err(|e| format!("reading the fleet: {e}"))?;
    let records: Vec<(String, Vec<crate::plugin::PluginRecord>)> = gateways
        .into_iter()
        .map(|g| (format!("{} ({})", g.id, g.address), g.payload.plugins))
        .collect();
    let mut out = String::new();
    if names.is_empty() {
        out.push_str("no plugins published\n");
    }
    for (name, pointer) in &names {
        describe(&mut out, name, pointer, &store::running(&records, name));
    }
    Ok(out)
}

fn describe(out: &mut String, name: &str, pointer: &Pointer, running: &[(String, Option<String>)]) {
    let _ = writeln!(out, "{name}");
    let _ = writeln!(
        out,
        "  current  {}  config {:?}  published_at_ms {}",
        pointer.current.sha256, pointer.current.config, pointer.current.published_at_ms
    );
    for version in &pointer.history {
        let _ = writeln!(
            out,
            "  earlier  {}  config {:?}  published_at_ms {}",
            version.sha256, version.config, version.published_at_ms
        );
    }
    for (gateway, sha256) in running {
        let state = match sha256.as_deref() {
            Some(sha) if sha == pointer.current.sha256 => "current",
            Some(_) => "OTHER",
            None => "none",
        };
        let _ = writeln!(
            out,
            "  gateway  {gateway}  runs {} ({state})",
            sha256.as_deref().unwrap_or("-")
        );
    }
}

/// The live gateways' records under `base` (malformed ones skipped).
pub async fn read_fleet(client: &Client, base: &str) -> Result<Vec<GatewayRecord>, Error> {
    let dir = format!("{}/service/{SERVICE_NAME}", base.trim_end_matches('/'));
    let ids = match client.list_children(&dir).await {
        Ok(ids) => ids,
        Err(Error::NoNode) => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut records = Vec::new();
    for id in ids {
        match client.get_data(&format!("{dir}/{id}")).await {
            Ok((data, _)) => records.extend(GatewayRecord::parse(&data).ok()),
            Err(Error::NoNode) => {}
            Err(e) => return Err(e),
        }
    }
    records.sort_by(|a, b| a.id.cmp(&b.id));
    Ok(records)
}
