//! The flow table's hash for socket cookies: it keeps their order.
//!
//! The kernel gives a socket its cookie the first time something asks for it, which for
//! most sockets is the collector's own dump. Cookies come from one counter that each CPU
//! takes in batches, so the sockets that one dump meets for the first time get ascending
//! cookies in the order of that dump. Later dumps walk the same hash chains in the same
//! order. hashbrown places a key by the low bits of its hash. When those bits are the
//! cookie's own, the table is read almost sequentially, in the order of the dump. A
//! scrambling hash sends each of the 100k lookups of a poll to a random cache line.
//! With 100k sockets the flow-table diff took 14.4 ms with SipHash and 6.6 ms with this
//! hash, measured by hand with a throwaway harness. `procflow-bench poll` reports the diff
//! as it is now, in its row "flow-table diff alone".
//!
//! hashbrown also compares a 7-bit tag made from the top bits of the hash before it
//! compares keys. Those bits come from a multiplicative mix of the cookie, so that keys
//! which share a bucket do not also share a tag.
//!
//! Cookies are not chosen by users. A local user can only spend them, by asking the
//! kernel for cookies of its own sockets, and so space some tracked cookies a table size
//! apart. Each such collision costs that user as many spent cookies as the table has
//! buckets, and it only lengthens probes; it cannot make the table lose or mix entries.

use std::hash::{BuildHasher, Hasher};

/// Builds [`CookieHasher`]s. Use it for maps keyed by a socket cookie (`u64`).
#[derive(Debug, Default, Clone, Copy)]
pub struct CookieOrder;

impl BuildHasher for CookieOrder {
    type Hasher = CookieHasher;

    fn build_hasher(&self) -> CookieHasher {
        CookieHasher(0)
    }
}

/// A cookie's hash: its own low 57 bits, and a 7-bit tag in the top bits.
#[derive(Debug, Clone, Copy)]
pub struct CookieHasher(u64);

/// Bits that hashbrown takes for its tag (the top 7 of the 64).
const TAG_SHIFT: u32 = 57;
/// An odd constant near 2^64 divided by the golden ratio: its products spread the low bits
/// of a key into the top ones.
const MIX: u64 = 0x9E37_79B9_7F4A_7C15;

impl Hasher for CookieHasher {
    fn finish(&self) -> u64 {
        let tag = self.0.wrapping_mul(MIX) >> TAG_SHIFT;
        self.0 ^ (tag << TAG_SHIFT)
    }

    fn write_u64(&mut self, cookie: u64) {
        self.0 = cookie;
    }

    /// Keys other than a bare `u64` (not used by the table) still hash to a valid value.
    fn write(&mut self, bytes: &[u8]) {
        for byte in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*byte);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    fn hash(cookie: u64) -> u64 {
        CookieOrder.hash_one(cookie)
    }

    /// Ascending cookies land in ascending buckets (the low bits are the cookie's), and
    /// their tags are spread over all 128 values, not stuck at zero as an identity hash
    /// would leave them.
    #[test]
    fn keeps_the_low_bits_and_spreads_the_tag() {
        let low = (1u64 << TAG_SHIFT) - 1;
        let mut tags = HashSet::new();
        for cookie in 4096..4096 + 4096u64 {
            let h = hash(cookie);
            assert_eq!(h & low, cookie, "{cookie}");
            tags.insert(h >> TAG_SHIFT);
        }
        assert_eq!(tags.len(), 128);
    }

    /// A map keyed by cookies through this hash finds every key it holds and no other,
    /// for runs of ascending cookies, cookies a power of two apart and random ones.
    #[test]
    fn a_map_finds_every_cookie() {
        let mut map: hashbrown::HashMap<u64, u64, CookieOrder> = hashbrown::HashMap::default();
        let ascending = 1..20_000u64;
        let strided = (0..2_000u64).map(|i| (1 << 40) + (i << 17));
        let mut x = 0x1234_5678_9abc_def0u64;
        let scattered = std::iter::repeat_with(move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        })
        .take(5_000);
        let keys: Vec<u64> = ascending.chain(strided).chain(scattered).collect();
        for (i, k) in keys.iter().enumerate() {
            map.insert(*k, i as u64);
        }
        let distinct: HashSet<u64> = keys.iter().copied().collect();
        assert_eq!(map.len(), distinct.len());
        for k in &distinct {
            assert!(map.contains_key(k), "{k}");
        }
        assert!(!map.contains_key(&0));
        assert!(!map.contains_key(&(1 << 41)));
    }
}
