//! The payload checksum, one function for the side that records it (a
//! put) and the side that checks it (a read), so both hash alike.

/// Payloads from this size on are hashed on several threads.
const PARALLEL_CRC_FROM: usize = 16 << 20;

/// The crc32 of a whole payload: what a put records in the entry header
/// and what a checked read compares with it. A large payload
/// is hashed in one chunk per core and the chunks' crcs are combined into
/// the crc of the whole (`crc32fast::Hasher::combine`): the same check as a
/// single pass, but the first checked view of a big tensor no longer costs a
/// full single-core pass (and its page faults) before the caller touches it.
pub(crate) fn payload_crc32(bytes: &[u8]) -> u32 {
    if bytes.len() < PARALLEL_CRC_FROM {
        return crc32fast::hash(bytes);
    }
    // Asked only for large payloads: the answer reads cgroup files.
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get().min(8));
    if threads < 2 {
        return crc32fast::hash(bytes);
    }
    let chunk = bytes.len().div_ceil(threads);
    let hash = |c: &[u8]| {
        let mut h = crc32fast::Hasher::new();
        h.update(c);
        h
    };
    std::thread::scope(|s| {
        let rest: Vec<_> = bytes
            .chunks(chunk)
            .skip(1)
            .map(|c| s.spawn(move || hash(c)))
            .collect();
        let mut whole = hash(&bytes[..chunk]);
        for h in rest {
            match h.join() {
                Ok(h) => whole.combine(&h),
                // Hashing cannot panic; if a thread died anyway, hash the
                // whole payload here rather than report a wrong crc.
                Err(_) => return crc32fast::hash(bytes),
            }
        }
        whole.finalize()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parallel_crc_is_the_crc_of_the_whole() {
        for len in [
            0,
            1,
            PARALLEL_CRC_FROM - 1,
            PARALLEL_CRC_FROM,
            PARALLEL_CRC_FROM + 7,
            3 * PARALLEL_CRC_FROM + 1,
        ] {
            let bytes: Vec<u8> = (0..len as u64)
                .map(|i| (i.wrapping_mul(2654435761) >> 7) as u8)
                .collect();
            assert_eq!(
                payload_crc32(&bytes),
                crc32fast::hash(&bytes),
                "{len} bytes"
            );
        }
        // A flipped bit in the last chunk changes the combined crc.
        let mut bytes = vec![7u8; 2 * PARALLEL_CRC_FROM + 3];
        let good = payload_crc32(&bytes);
        *bytes.last_mut().unwrap() ^= 1;
        assert_ne!(payload_crc32(&bytes), good);
    }
}
