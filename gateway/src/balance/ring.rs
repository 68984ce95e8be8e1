//! A consistent-hash ring with virtual nodes, built once per snapshot.

/// Virtual nodes per real node: enough for an even spread over a handful of
/// Kylin nodes, small enough to rebuild on every view change.
const VNODES: u32 = 160;

#[derive(Clone, Debug, Default)]
pub struct HashRing {
    /// (point, index into the snapshot's nodes), sorted by point.
    points: Vec<(u64, usize)>,
}

impl HashRing {
    /// `ids[k]` names the node at snapshot index `indices[k]`. Points depend
    /// only on ids, so a node leaving moves only the keys it owned.
    pub fn build(ids: &[&str], indices: &[usize]) -> HashRing {
        let mut points = Vec::with_capacity(ids.len() * VNODES as usize);
        for (id, &index) in ids.iter().zip(indices) {
            for v in 0..VNODES {
                let mut buf = Vec::with_capacity(id.len() + 4);
                buf.extend_from_slice(id.as_bytes());
                buf.extend_from_slice(&v.to_le_bytes());
                points.push((xxhash_rust::xxh3::xxh3_64(&buf), index));
            }
        }
        points.sort_unstable();
        HashRing { points }
    }

    /// Distinct node indices clockwise from `key`'s position.
    pub fn walk(&self, key: u64) -> impl Iterator<Item = usize> + '_ {
        let start = self.points.partition_point(|&(p, _)| p < key);
        let n = self.points.len();
        let mut seen = super::Tried::default();
        // Indices past the bitset's range are never deduplicated; clusters
        // that large are not Kylin clusters.
        (0..n)
            .map(move |k| self.points[(start + k) % n].1)
            .filter(move |&i| {
                let new = !seen.contains(i);
                seen.insert(i);
                new
            })
    }
}

/// Hashes a routing key (header, parameter or cookie value).
pub fn hash_key(bytes: &[u8]) -> u64 {
    xxhash_rust::xxh3::xxh3_64(bytes)
}
