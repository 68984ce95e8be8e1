//! What both probes do with a request that asks for work: hash the body
//! prefix over the healthy nodes. One file, included by both, so that the
//! two worlds are measured doing the same work.

/// The index of the node to prefer, if any is healthy.
pub fn pick(body: &[u8], healthy: &[bool]) -> Option<usize> {
    let hash = body
        .iter()
        .fold(0u32, |h, b| h.wrapping_mul(31).wrapping_add(u32::from(*b)));
    let up: Vec<usize> = (0..healthy.len()).filter(|&i| healthy[i]).collect();
    (!up.is_empty()).then(|| up[hash as usize % up.len()])
}
