//! Plugins published once for the whole fleet, kept in ZooKeeper under
//! `<base>/gateway/plugins/`:
//!
//! * `sha256/<hex>`: one component, content-addressed. Its data is the
//!   [`Manifest`], written last, so a blob without one is incomplete (a
//!   publish that died midway) and is never pointed at; its children
//!   `00000`, `00001`, … hold the bytes in chunks below ZooKeeper's 1 MB
//!   `jute.maxbuffer`.
//! * `names/<name>`: the [`Pointer`] a gateway follows: the version that
//!   runs (sha256 and config) and the previous ones, newest first, for
//!   rollback. It moves in one multi-op that also checks the blob's
//!   manifest, so a gateway never sees half a version.
//!
//! Versions that no pointer names any more are deleted after each publish.

use serde::{Deserialize, Serialize};
use zookeeper_client::{Acls, Client, CreateMode, Error};

use crate::plugin::PluginRecord;

/// Bytes per chunk znode: well below ZooKeeper's default `jute.maxbuffer`
/// (1 MiB less one byte), which bounds a whole request.
pub const CHUNK_BYTES: usize = 512 * 1024;
/// Versions a name keeps (the running one included) unless told otherwise.
pub const DEFAULT_KEEP: usize = 5;

/// Where the store lives under a base path.
#[derive(Clone, Debug)]
pub struct StorePaths {
    pub blobs: String,
    pub names: String,
}

impl StorePaths {
    pub fn new(base: &str) -> StorePaths {
        let root = format!("{}/gateway/plugins", base.trim_end_matches('/'));
        StorePaths {
            blobs: format!("{root}/sha256"),
            names: format!("{root}/names"),
        }
    }

    pub fn blob(&self, sha256: &str) -> String {
        format!("{}/{sha256}", self.blobs)
    }

    pub fn chunk(&self, sha256: &str, index: usize) -> String {
        format!("{}/{sha256}/{index:05}", self.blobs)
    }

    pub fn pointer(&self, name: &str) -> String {
        format!("{}/{name}", self.names)
    }
}

/// A complete blob's data.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub sha256: String,
    pub size: usize,
    pub chunks: usize,
    pub published_at_ms: u64,
}

/// One published version of a name.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Version {
    pub sha256: String,
    #[serde(default)]
    pub config: String,
    pub published_at_ms: u64,
}

/// A name's pointer: what runs, and what ran before (newest first).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pointer {
    pub current: Version,
    #[serde(default)]
    pub history: Vec<Version>,
}

impl Pointer {
    /// `next` becomes current; the old current heads the history, which
    /// keeps `keep - 1` versions.
    pub fn moved_to(previous: Option<Pointer>, next: Version, keep: usize) -> Pointer {
        let mut history = Vec::new();
        if let Some(previous) = previous {
            history.push(previous.current);
            history.extend(previous.history);
        }
        history.retain(|v| v.sha256 != next.sha256 || v.config != next.config);
        history.truncate(keep.saturating_sub(1));
        Pointer {
            current: next,
            history,
        }
    }

    /// Back to the version before the current one; the current one is
    /// dropped. `None` when there is none to go back to.
    pub fn rolled_back(self) -> Option<Pointer> {
        let mut history = self.history.into_iter();
        let current = history.next()?;
        Some(Pointer {
            current,
            history: history.collect(),
        })
    }

    /// Every sha256 this pointer may still need.
    pub fn shas(&self) -> impl Iterator<Item = &str> {
        std::iter::once(self.current.sha256.as_str())
            .chain(self.history.iter().map(|v| v.sha256.as_str()))
    }
}

/// Splits a component into chunk-sized pieces.
pub fn chunks(bytes: &[u8]) -> impl Iterator<Item = &[u8]> {
    bytes.chunks(CHUNK_BYTES)
}

/// Joins fetched chunks and checks them against the manifest.
pub fn assemble(manifest: &Manifest, chunks: Vec<Vec<u8>>) -> Result<Vec<u8>, String> {
    if chunks.len() != manifest.chunks {
        return Err(format!(
            "{} chunks, manifest says {}",
            chunks.len(),
            manifest.chunks
        ));
    }
    let bytes = chunks.concat();
    if bytes.len() != manifest.size {
        return Err(format!(
            "{} bytes, manifest says {}",
            bytes.len(),
            manifest.size
        ));
    }
    let sha256 = crate::digest::sha256_hex(&bytes);
    if sha256 != manifest.sha256 {
        return Err(format!(
            "content has sha256 {sha256}, expected {}",
            manifest.sha256
        ));
    }
    Ok(bytes)
}

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("ZooKeeper: {0}")]
    Zookeeper(#[from] Error),
    #[error("{0}")]
    Invalid(String),
    #[error("no plugin named '{0}' was published")]
    NoSuchName(String),
    #[error("'{0}' has no earlier version to roll back to")]
    NothingToRollBack(String),
    #[error("another publish of '{0}' kept moving the pointer; try again")]
    Contended(String),
}

fn options(client_has_auth: bool) -> zookeeper_client::CreateOptions<'static> {
    CreateMode::Persistent.with_acls(if client_has_auth {
        Acls::creator_all()
    } else {
        Acls::anyone_all()
    })
}

/// Reads and parses a JSON znode; `None` when it does not exist.
async fn read_json<T: for<'de> Deserialize<'de>>(
    client: &Client,
    path: &str,
) -> Result<Option<(T, i32)>, StoreError> {
    match client.get_data(path).await {
        Ok((data, stat)) => serde_json::from_slice(&data)
            .map(|value| Some((value, stat.version)))
            .map_err(|e| StoreError::Invalid(format!("{path}: {e}"))),
        Err(Error::NoNode) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// The manifest of a complete blob, with the blob's data version.
pub async fn manifest(
    client: &Client,
    paths: &StorePaths,
    sha256: &str,
) -> Result<Option<(Manifest, i32)>, StoreError> {
    match client.get_data(&paths.blob(sha256)).await {
        Ok((data, _)) if data.is_empty() => Ok(None),
        Ok((data, stat)) => serde_json::from_slice(&data)
            .map(|m| Some((m, stat.version)))
            .map_err(|e| StoreError::Invalid(format!("manifest of {sha256}: {e}"))),
        Err(Error::NoNode) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// Fetches a complete blob and checks its sha256.
pub async fn fetch(
    client: &Client,
    paths: &StorePaths,
    sha256: &str,
) -> Result<Vec<u8>, StoreError> {
    let (manifest, _) = manifest(client, paths, sha256).await?.ok_or_else(|| {
        StoreError::Invalid(format!("version {sha256} is not (completely) stored"))
    })?;
    let mut chunks = Vec::with_capacity(manifest.chunks);
    for index in 0..manifest.chunks {
        chunks.push(client.get_data(&paths.chunk(sha256, index)).await?.0);
    }
    assemble(&manifest, chunks).map_err(StoreError::Invalid)
}

/// Stores `bytes` as a blob unless a complete one is there.
async fn store_blob(
    client: &Client,
    paths: &StorePaths,
    bytes: &[u8],
    auth: bool,
) -> Result<Manifest, StoreError> {
    let sha256 = crate::digest::sha256_hex(bytes);
    if let Some((found, _)) = manifest(client, paths, &sha256).await? {
        return Ok(found);
    }
    let blob = paths.blob(&sha256);
    client.mkdir(&paths.blobs, &options(auth)).await?;
    // Leftovers of a publish that died midway go first.
    delete_blob(client, paths, &sha256).await?;
    client.create(&blob, &[], &options(auth)).await?;
    let mut count = 0;
    for (index, chunk) in chunks(bytes).enumerate() {
        client
            .create(&paths.chunk(&sha256, index), chunk, &options(auth))
            .await?;
        count += 1;
    }
    let manifest = Manifest {
        sha256,
        size: bytes.len(),
        chunks: count,
        published_at_ms: now_ms(),
    };
    let data = serde_json::to_vec(&manifest).expect("manifest serializes");
    client.set_data(&blob, &data, Some(0)).await?;
    Ok(manifest)
}

/// Deletes a blob and its chunks; a missing one is fine.
async fn delete_blob(client: &Client, paths: &StorePaths, sha256: &str) -> Result<(), StoreError> {
    let blob = paths.blob(sha256);
    let children = match client.list_children(&blob).await {
        Ok(children) => children,
        Err(Error::NoNode) => return Ok(()),
        Err(e) => return Err(e.into()),
    };
    for child in children {
        match client.delete(&format!("{blob}/{child}"), None).await {
            Ok(()) | Err(Error::NoNode) => {}
            Err(e) => return Err(e.into()),
        }
    }
    match client.delete(&blob, None).await {
        Ok(()) | Err(Error::NoNode) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// The pointer of `name` and its data version, if published.
pub async fn pointer(
    client: &Client,
    paths: &StorePaths,
    name: &str,
) -> Result<Option<(Pointer, i32)>, StoreError> {
    read_json(client, &paths.pointer(name)).await
}

/// Publishes `bytes` as `name`'s version with `config`: stores the blob,
/// then moves the pointer in one multi-op (checked against the manifest's
/// version and the pointer's, retried if another publish raced), then
/// deletes versions no pointer names. Returns the new pointer.
pub async fn publish(
    client: &Client,
    paths: &StorePaths,
    name: &str,
    bytes: &[u8],
    config: &str,
    keep: usize,
    auth: bool,
) -> Result<Pointer, StoreError> {
    let manifest = store_blob(client, paths, bytes, auth).await?;
    let next = Version {
        sha256: manifest.sha256.clone(),
        config: config.to_string(),
        published_at_ms: now_ms(),
    };
    let moved = move_pointer(client, paths, name, auth, |previous| {
        Ok(Pointer::moved_to(previous, next.clone(), keep))
    })
    .await?;
    collect_garbage(client, paths).await?;
    Ok(moved)
}

/// Moves `name`'s pointer back to its previous version.
pub async fn rollback(
    client: &Client,
    paths: &StorePaths,
    name: &str,
    auth: bool,
) -> Result<Pointer, StoreError> {
    move_pointer(client, paths, name, auth, |previous| {
        let previous = previous.ok_or_else(|| StoreError::NoSuchName(name.to_string()))?;
        previous
            .rolled_back()
            .ok_or_else(|| StoreError::NothingToRollBack(name.to_string()))
    })
    .await
}

/// Reads the pointer, computes the next one, and writes it in one multi-op
/// that also checks the target blob's manifest is in place; a concurrent
/// move (bad version) is retried on the new pointer.
async fn move_pointer(
    client: &Client,
    paths: &StorePaths,
    name: &str,
    auth: bool,
    next: impl Fn(Option<Pointer>) -> Result<Pointer, StoreError>,
) -> Result<Pointer, StoreError> {
    client.mkdir(&paths.names, &options(auth)).await?;
    for _ in 0..5 {
        let (previous, version) = match pointer(client, paths, name).await? {
            Some((p, v)) => (Some(p), Some(v)),
            None => (None, None),
        };
        let moved = next(previous)?;
        let Some((_, manifest_version)) = manifest(client, paths, &moved.current.sha256).await?
        else {
            return Err(StoreError::Invalid(format!(
                "version {} of '{name}' is no longer stored",
                moved.current.sha256
            )));
        };
        let data = serde_json::to_vec(&moved).expect("pointer serializes");
        let mut writer = client.new_multi_writer();
        let blob = paths.blob(&moved.current.sha256);
        let target = paths.pointer(name);
        writer.add_check_version(&blob, manifest_version)?;
        match version {
            Some(version) => writer.add_set_data(&target, &data, Some(version))?,
            None => writer.add_create(&target, &data, &options(auth))?,
        }
        match writer.commit().await {
            Ok(_) => return Ok(moved),
            Err(zookeeper_client::MultiWriteError::OperationFailed {
                source: Error::BadVersion | Error::NodeExists,
                ..
            }) => continue,
            Err(zookeeper_client::MultiWriteError::OperationFailed { source, .. }) => {
                return Err(source.into());
            }
            Err(zookeeper_client::MultiWriteError::RequestFailed { source }) => {
                return Err(source.into());
            }
        }
    }
    Err(StoreError::Contended(name.to_string()))
}

/// Deletes every blob that no pointer names (current or history).
pub async fn collect_garbage(
    client: &Client,
    paths: &StorePaths,
) -> Result<Vec<String>, StoreError> {
    let mut named = std::collections::BTreeSet::new();
    for name in list_or_empty(client, &paths.names).await? {
        if let Some((pointer, _)) = pointer(client, paths, &name).await? {
            named.extend(pointer.shas().map(str::to_string));
        }
    }
    let mut deleted = Vec::new();
    for sha256 in list_or_empty(client, &paths.blobs).await? {
        if !named.contains(&sha256) {
            delete_blob(client, paths, &sha256).await?;
            deleted.push(sha256);
        }
    }
    Ok(deleted)
}

/// Every published name with its pointer.
pub async fn names(
    client: &Client,
    paths: &StorePaths,
) -> Result<Vec<(String, Pointer)>, StoreError> {
    let mut names = list_or_empty(client, &paths.names).await?;
    names.sort();
    let mut out = Vec::with_capacity(names.len());
    for name in names {
        if let Some((pointer, _)) = pointer(client, paths, &name).await? {
            out.push((name, pointer));
        }
    }
    Ok(out)
}

async fn list_or_empty(client: &Client, path: &str) -> Result<Vec<String>, StoreError> {
    match client.list_children(path).await {
        Ok(children) => Ok(children),
        Err(Error::NoNode) => Ok(Vec::new()),
        Err(e) => Err(e.into()),
    }
}

/// Which gateways run which sha256 of `name`, for `plugin list`.
pub fn running(
    records: &[(String, Vec<PluginRecord>)],
    name: &str,
) -> Vec<(String, Option<String>)> {
    records
        .iter()
        .filter_map(|(gateway, plugins)| {
            let plugin = plugins.iter().find(|p| p.name == name)?;
            Some((gateway.clone(), plugin.sha256.clone()))
        })
        .collect()
}

pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
