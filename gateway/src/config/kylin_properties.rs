//! Reading what the gateway needs from an operator's `kylin.properties`:
//! the ZooKeeper connect string, the base paths (from `kylin.metadata.url`)
//! and ZooKeeper auth.
//!
//! `kylin.metadata.url` is Kylin's `StorageURL`:
//! `IDENTIFIER@SCHEME[,PARAM=VALUE...]`, split on commas outside quotes
//! (Kylin 5 quotes a value that holds commas, e.g. a MySQL host list);
//! the identifier is what precedes the last `@` of the first part
//! (`kylin_metadata` when empty). Kylin 3.x/4.0 and KAP live under
//! `/kylin/<identifier>`; Kylin 5 under `/kylin/<unique id>`, which adds the
//! JDBC `url` parameter (see [`metadata_url_unique_id`]).

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

/// The metadata prefix from `kylin.metadata.url`: the identifier, then
/// only what follows its last `/` (as KAP does); empty → `kylin_metadata`.
pub fn metadata_prefix(url: &str) -> String {
    let identifier = metadata_identifier(url);
    let tail = identifier.rsplit('/').next().unwrap_or(identifier).trim();
    if tail.is_empty() {
        "kylin_metadata".into()
    } else {
        tail.into()
    }
}

/// `StorageURL.getIdentifier()`: the first comma-separated part up to its
/// last `@`, trimmed; `kylin_metadata` when empty.
pub fn metadata_identifier(url: &str) -> &str {
    let head = storage_url_parts(url).next().unwrap_or("");
    let identifier = head.rsplit_once('@').map_or(head, |(id, _)| id).trim();
    if identifier.is_empty() {
        "kylin_metadata"
    } else {
        identifier
    }
}

/// `StorageURL.getParameter(name)`: the value of `name=value` after the
/// first part, trimmed and with quotes stripped from both ends (the last
/// occurrence wins, as in Kylin's map).
pub fn metadata_parameter<'a>(url: &'a str, name: &str) -> Option<&'a str> {
    storage_url_parts(url)
        .skip(1)
        .filter_map(|part| {
            let (key, value) = part.split_once('=').unwrap_or((part, ""));
            (key.trim() == name).then(|| value.trim().trim_matches(['"', '\'']))
        })
        .last()
}

/// Kylin 5's `KylinConfigBase.getMetadataUrlUniqueId()`: the identifier,
/// plus `_` and the JDBC `url` parameter up to its first `?` when there is
/// one, then every character but `[A-Za-z0-9_]` replaced by `_` (Java's
/// `\W`). (Kylin's cloud channel uses the bare identifier; not supported.)
pub fn metadata_url_unique_id(url: &str) -> String {
    let mut id = metadata_identifier(url).to_string();
    if let Some(jdbc) = metadata_parameter(url, "url") {
        id.push('_');
        id.push_str(jdbc.split('?').next().unwrap_or(""));
    }
    id.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// The comma-separated parts of a metadata URL, as Kylin 5 splits them: a
/// comma splits only where an even number of quote characters (`"` or `'`)
/// follows it.
fn storage_url_parts(url: &str) -> impl Iterator<Item = &str> {
    let mut quotes_after = url.chars().filter(|c| matches!(c, '"' | '\'')).count();
    let mut start = 0;
    let mut cuts = Vec::new();
    for (i, c) in url.char_indices() {
        match c {
            '"' | '\'' => quotes_after -= 1,
            ',' if quotes_after % 2 == 0 => {
                cuts.push((start, i));
                start = i + 1;
            }
            _ => {}
        }
    }
    cuts.push((start, url.len()));
    cuts.into_iter().map(move |(from, to)| &url[from..to])
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
            && !crate::discovery::is_host_name(host)
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

/// Fills connect string, base paths and auth from properties, where the
/// gateway's own config left them unset. Kylin 3.x's base path is
/// `kylin.env.zookeeper-base-path` + `/` + `kylin.server.cluster-name`;
/// both default so that every version lives under `/kylin/<prefix>`.
/// Kylin 5's is always `/kylin/<unique id>` (its `application.yaml`:
/// `spring.cloud.zookeeper.discovery.root:
/// /kylin/${kylin.metadata.url.unique-id}/services`); an explicit
/// `base_path` is taken for it too.
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
    let metadata_url = props.get("kylin.metadata.url").map_or("", String::as_str);
    if !settings.base_path_explicit && !settings.kylin5_base_path_explicit {
        settings.kylin5_base_path = format!("/kylin/{}", metadata_url_unique_id(metadata_url));
    }
    if !settings.base_path_explicit {
        let prefix = metadata_prefix(metadata_url);
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
