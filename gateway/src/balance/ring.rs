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
        let mut seen = Visited::default();
        (0..n)
            .map(move |k| self.points[(start + k) % n].1)
            .filter(move |&i| seen.first_visit(i))
    }
}

/// Snapshot indices one walk has yielded: a bit per index, inline for the
/// first 128 (every Kylin cluster seen), growing on the heap past that.
#[derive(Default)]
struct Visited {
    low: u128,
    high: Vec<u64>,
}

impl Visited {
    /// Marks `index`; true when it was not marked yet.
    fn first_visit(&mut self, index: usize) -> bool {
        if index < 128 {
            let bit = 1u128 << index;
            let new = self.low & bit == 0;
            self.low |= bit;
            return new;
        }
        let (word, bit) = ((index - 128) / 64, 1u64 << ((index - 128) % 64));
        if self.high.len() <= word {
            self.high.resize(word + 1, 0);
        }
        let new = self.high[word] & bit == 0;
        self.high[word] |= bit;
        new
    }
}

/// Hashes a routing key (header, parameter or cookie value).
pub fn hash_key(bytes: &[u8]) -> u64 {
    xxhash_rust::xxh3::xxh3_64(bytes)
}
