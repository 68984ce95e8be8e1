//! Who leads the job engine, from the children of Curator's `LeaderSelector`
//! directory: the lowest `lock-<seq>` znode leads (Curator sorts by the
//! number after `lock-`, not by the whole name, because the protected
//! `_c_<uuid>-` prefix differs per candidate). Its data names the
//! participant (`host:port` in Kylin 3.x, a bare local IP in KAP 2.4), which
//! is mapped to a discovered instance here. Pure: no I/O.

use std::net::IpAddr;
use std::sync::Arc;

use crate::discovery::split_host_port;
use crate::view::{LeaderInfo, Node};

/// The sequence number of a lock znode (`lock-0000000007`,
/// `_c_<uuid>-lock-0000000007`), `None` for anything else.
pub fn lock_sequence(name: &str) -> Option<u64> {
    let (_, digits) = name.rsplit_once("lock-")?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// The child that holds the lock: lowest sequence, ties (never produced by
/// ZooKeeper) broken by name so the answer is deterministic.
pub fn leader_znode(children: &[String]) -> Option<&str> {
    children
        .iter()
        .filter_map(|child| Some((lock_sequence(child)?, child)))
        .min()
        .map(|(_, child)| child.as_str())
}

/// What the election directory shows.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Election {
    /// No election directory, or no lock znode in it.
    #[default]
    Absent,
    /// As `Absent`, but the older scheduler's `global_job_engine_lock`
    /// exists: this cluster does not elect with `LeaderSelector`.
    LegacyLock,
    /// The lowest lock znode, its data (`None` if it vanished before it
    /// could be read) and the session that owns it.
    Leader {
        znode: String,
        data: Option<String>,
        owner: i64,
    },
}

/// An instance the leader may map to, with the ZooKeeper session that
/// registered it (Kylin registers and campaigns on one Curator client).
#[derive(Clone, Copy, Debug)]
pub struct Candidate<'a> {
    pub node: &'a Node,
    pub owner: i64,
}

/// The leader as `/admin/leader` shows it. `pinned` (config
/// `leader_address`) is used when the election names no instance.
pub fn leader_info(
    election: &Election,
    candidates: &[Candidate<'_>],
    pinned: Option<&str>,
    election_path: &str,
) -> LeaderInfo {
    let mut info = LeaderInfo::default();
    let failure = match election {
        Election::Absent => format!(
            "no job-engine election under {election_path} (no node in all/job mode campaigns)"
        ),
        Election::LegacyLock => format!(
            "no LeaderSelector election under {election_path}: this cluster uses the older \
             global_job_engine_lock scheduler"
        ),
        Election::Leader { znode, data, owner } => {
            info.znode = Some(znode.clone());
            info.participant = data.clone();
            let participant = data.as_deref().unwrap_or("").trim();
            match map_participant(participant, *owner, candidates) {
                Some(mapped) => {
                    info.node_id = Some(mapped.id);
                    info.reason = mapped.note;
                    return info;
                }
                None if data.is_none() => format!("leader znode {znode} vanished while read"),
                None => format!("leader '{participant}' ({znode}) matches no discovered instance"),
            }
        }
    };
    if let Some(pin) = pinned {
        if let Some(mapped) = map_participant(pin.trim(), 0, candidates) {
            info.node_id = Some(mapped.id);
            info.reason = Some(format!(
                "pinned by discovery.leader_address '{pin}' ({failure})"
            ));
            return info;
        }
        info.reason = Some(format!(
            "{failure}; discovery.leader_address '{pin}' matches no instance either"
        ));
        return info;
    }
    info.reason = Some(failure);
    info
}

/// A participant mapped to an instance id, with a note when the choice was
/// not obvious.
#[derive(Debug, PartialEq, Eq)]
pub struct Mapped {
    pub id: Arc<str>,
    pub note: Option<String>,
}

/// Maps participant data to one instance. When several match (a bare IP
/// shared by instances on one host), the choice is deterministic: the
/// instance registered by the same ZooKeeper session, then job-capable, then
/// enabled, then the lowest id; the note says how it was made.
pub fn map_participant(
    participant: &str,
    owner: i64,
    candidates: &[Candidate<'_>],
) -> Option<Mapped> {
    let by_address: Vec<&Candidate<'_>> = candidates
        .iter()
        .filter(|c| matches_participant(c.node, participant))
        .collect();
    let same_session = |c: &&Candidate<'_>| owner != 0 && c.owner == owner;
    if by_address.is_empty() {
        // The data names nobody (an unset `kylin.server.host-address` is
        // `localhost:7070` on every node): the session that created the
        // election znode is the only evidence left.
        let by_session: Vec<_> = candidates.iter().filter(same_session).collect();
        return match by_session.as_slice() {
            [only] => Some(Mapped {
                id: only.node.id.clone(),
                note: Some(format!(
                    "participant '{participant}' matches no instance; mapped by ZooKeeper \
                     session 0x{owner:x}"
                )),
            }),
            _ => None,
        };
    }
    if let [only] = by_address.as_slice() {
        return Some(Mapped {
            id: only.node.id.clone(),
            note: None,
        });
    }
    let mut pool = by_address.clone();
    let mut reasons = Vec::new();
    narrow(
        &mut pool,
        &mut reasons,
        "same ZooKeeper session",
        same_session,
    );
    narrow(&mut pool, &mut reasons, "job-capable", |c| c.node.modes.job);
    narrow(&mut pool, &mut reasons, "enabled", |c| c.node.enabled);
    let chosen = pool.iter().min_by(|a, b| a.node.id.cmp(&b.node.id))?;
    if pool.len() > 1 {
        reasons.push("lowest id");
    }
    let ids: Vec<&str> = by_address.iter().map(|c| &*c.node.id).collect();
    Some(Mapped {
        id: chosen.node.id.clone(),
        note: Some(format!(
            "participant '{participant}' matches {} instances ({}); chose {} by {}",
            ids.len(),
            ids.join(", "),
            chosen.node.id,
            reasons.join(", then "),
        )),
    })
}

/// Keeps only the candidates that pass `keep`, unless none does.
fn narrow<'a, 'n>(
    pool: &mut Vec<&'a Candidate<'n>>,
    reasons: &mut Vec<&'static str>,
    reason: &'static str,
    keep: impl Fn(&&'a Candidate<'n>) -> bool,
) {
    if pool.len() < 2 {
        return;
    }
    let kept: Vec<_> = pool.iter().copied().filter(|c| keep(c)).collect();
    if !kept.is_empty() && kept.len() < pool.len() {
        *pool = kept;
        reasons.push(reason);
    }
}

/// Whether `participant` (`host:port` or a bare host/IP) names `node`, by
/// its advertised host or its resolved address.
fn matches_participant(node: &Node, participant: &str) -> bool {
    match split_host_port(participant) {
        Some((host, port)) => {
            host_matches(node, host)
                && (node.port == port || node.addr.is_some_and(|a| a.port() == port))
        }
        None => !participant.is_empty() && host_matches(node, participant),
    }
}

fn host_matches(node: &Node, host: &str) -> bool {
    if node.host.eq_ignore_ascii_case(host) {
        return true;
    }
    let Ok(ip) = host.parse::<IpAddr>() else {
        return false;
    };
    node.addr.is_some_and(|a| a.ip() == ip) || node.host.parse::<IpAddr>() == Ok(ip)
}
