//! The Java client's default partitioner for keyed records (librdkafka's `murmur2_random`):
//! `(murmur2(key) & 0x7fffffff) % partitions`.

/// Kafka's murmur2 (`org.apache.kafka.common.utils.Utils.murmur2`), as a signed 32-bit value.
pub fn murmur2(data: &[u8]) -> i32 {
    const SEED: u32 = 0x9747_b28c;
    const M: u32 = 0x5bd1_e995;
    const R: u32 = 24;
    let len = data.len();
    let mut h: u32 = SEED ^ (len as u32);
    let mut chunks = data.chunks_exact(4);
    for c in &mut chunks {
        let mut k = u32::from_le_bytes([c[0], c[1], c[2], c[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> R;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M);
        h ^= k;
    }
    let rest = chunks.remainder();
    if rest.len() >= 3 {
        h ^= u32::from(rest[2]) << 16;
    }
    if rest.len() >= 2 {
        h ^= u32::from(rest[1]) << 8;
    }
    if !rest.is_empty() {
        h ^= u32::from(rest[0]);
        h = h.wrapping_mul(M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^= h >> 15;
    h as i32
}

/// The partition the Java client (and librdkafka's `murmur2_random`) picks for `key` among
/// `partitions` partitions. `partitions` must be positive.
pub fn partition_for_key(key: &[u8], partitions: i32) -> i32 {
    debug_assert!(partitions > 0);
    ((murmur2(key) & 0x7fff_ffff) as u32 % partitions.max(1) as u32) as i32
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The Java client's values, as listed in librdkafka's rdmurmur2.c unit test.
    #[test]
    fn matches_java_murmur2() {
        let pre = "PreAmbleWillBeRemoved,ThePrePartThatIs";
        let cases: [(&str, u32); 11] = [
            ("kafka", 0xd067cf64),
            ("giberish123456789", 0x8f552b0c),
            ("1234", 0x9fc97b14),
            ("234", 0xe7c009ca),
            ("34", 0x873930da),
            ("4", 0x5a4b5ca1),
            (pre, 0x78424f1c),
            (&pre[1..], 0x4a62b377),
            (&pre[2..], 0xe0e4e09e),
            (&pre[3..], 0x62b8b43f),
            ("", 0x106e08d9),
        ];
        for (key, want) in cases {
            assert_eq!(murmur2(key.as_bytes()) as u32, want, "murmur2({key:?})");
        }
    }

    #[test]
    fn partitions_are_positive_modulo() {
        // 0xd067cf64 & 0x7fffffff = 0x5067cf64 = 1348980580; % 7 = 4
        assert_eq!(partition_for_key(b"kafka", 7), (0x5067_cf64u32 % 7) as i32);
        assert_eq!(partition_for_key(b"kafka", 1), 0);
        for n in 1..20 {
            let p = partition_for_key(b"{\"id\":7}", n);
            assert!((0..n).contains(&p));
        }
    }
}
