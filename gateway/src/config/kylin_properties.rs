//! Reading what the gateway needs from an operator's `kylin.properties`:
//! the ZooKeeper connect string, the metadata prefix and ZooKeeper auth.

use std::collections::BTreeMap;

use super::ZookeeperSettings;

/// Parses Java properties text: `key=value` or `key: value`, `#`/`!`
/// comments, backslash line continuations. Enough for `kylin.properties`.
pub fn parse(text: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut logical = String::new();
    for line in text.lines() {
        let trimmed = line.trim_start();
        if logical.is_empty()
            && (trimmed.starts_with('#') || trimmed.starts_with('!') || trimmed.is_empty())
        {
            continue;
        }
        if let Some(cont) = trimmed.strip_suffix('\\') {
            logical.push_str(cont);
            continue;
        }
        logical.push_str(trimmed);
        let entry = std::mem::take(&mut logical);
        let split = entry.find(['=', ':']).unwrap_or(entry.len());
        let key = entry[..split].trim();
        let value = entry.get(split + 1..).unwrap_or("").trim();
        if !key.is_empty() {
            out.insert(key.to_string(), value.to_string());
        }
    }
    out
}

/// The metadata prefix from `kylin.metadata.url`: the part before the last
/// `@`, then only what follows the last `/` (as KAP does); empty →
/// `kylin_metadata`.
pub fn metadata_prefix(url: &str) -> String {
    let before_at = url.rsplit_once('@').map_or(url, |(head, _)| head);
    let tail = before_at.rsplit('/').next().unwrap_or(before_at).trim();
    if tail.is_empty() {
        "kylin_metadata".into()
    } else {
        tail.into()
    }
}

/// Splits `h1:2181,h2:2181/chroot` into hosts and chroot.
pub fn split_connect(connect: &str) -> Result<(String, Option<String>), String> {
    let connect = connect.trim();
    let (hosts, chroot) = match connect.find('/') {
        Some(i) => (&connect[..i], Some(&connect[i..])),
        None => (connect, None),
    };
    for host in hosts.split(',').filter(|h| !h.is_empty()) {
        if crate::discovery::split_host_port(host).is_none()
            && !host
                .chars()
                .all(|c| c.is_alphanumeric() || c == '.' || c == '-')
        {
            return Err(format!("'{host}' is not host or host:port"));
        }
    }
    let chroot = chroot
        .map(|c| c.trim_end_matches('/'))
        .filter(|c| !c.is_empty())
        .map(str::to_string);
    Ok((hosts.to_string(), chroot))
}

/// Fills connect string, base path and auth from properties, where the
/// gateway's own config left them unset. Kylin 3.x's base path is
/// `kylin.env.zookeeper-base-path` + `/` + `kylin.server.cluster-name`;
/// both default so that every version lives under `/kylin/<prefix>`.
pub fn apply(
    settings: &mut ZookeeperSettings,
    props: &BTreeMap<String, String>,
) -> Result<(), String> {
    if settings.hosts.is_empty() {
        let connect = props
            .get("kylin.env.zookeeper-connect-string")
            .ok_or("kylin.properties has no kylin.env.zookeeper-connect-string")?;
        let (hosts, chroot) = split_connect(connect)?;
        settings.hosts = hosts;
        settings.chroot = chroot;
    }
    if !settings.base_path_explicit {
        let prefix = metadata_prefix(props.get("kylin.metadata.url").map_or("", String::as_str));
        let base = props
            .get("kylin.env.zookeeper-base-path")
            .map_or("/kylin", |s| s.trim_end_matches('/'));
        let cluster = props
            .get("kylin.server.cluster-name")
            .cloned()
            .unwrap_or(prefix);
        settings.base_path = format!("{base}/{cluster}");
    }
    if settings.digest_auth.is_none()
        && let Some(auth) = props.get("kylin.env.zookeeper.zk-auth")
    {
        settings.digest_auth = auth.strip_prefix("digest:").map(str::to_string);
    }
    Ok(())
}
