//! Segment files: `log/NNNNNNNNNNNNNNNNNNNN.seg`, a 64-byte header, then
//! entries.
//!
//! ```text
//! offset size field
//!  0      8   magic "CKPTSEG\0"
//!  8      2   format version
//! 10      6   reserved (0)
//! 16      8   segment number (equals the file name)
//! 24      8   segment of the newest root when this segment was created
//!             (u64::MAX: none)
//! 32      8   offset of that root
//! 40     20   reserved (0)
//! 60      4   crc32 of bytes 0..60
//! ```
//! The previous-root pointer lets recovery find the root when the newest
//! segment holds none (it was created by a transaction that never
//! committed) without scanning older segments.

use super::{Location, FORMAT_VERSION, SEGMENT_HEADER_LEN};

const MAGIC: [u8; 8] = *b"CKPTSEG\0";

/// The decoded header of a segment file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct SegmentHeader {
    pub id: u64,
    pub prev_root: Option<Location>,
}

/// Why a segment header did not decode.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum SegmentHeaderError {
    Short,
    BadMagic,
    Checksum,
    Version(u16),
    Invalid(&'static str),
}

impl std::fmt::Display for SegmentHeaderError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SegmentHeaderError::Short => f.write_str("segment header cut short"),
            SegmentHeaderError::BadMagic => f.write_str("not a ckptdb segment (bad magic)"),
            SegmentHeaderError::Checksum => f.write_str("segment header checksum mismatch"),
            SegmentHeaderError::Version(v) => write!(f, "segment format version {v}"),
            SegmentHeaderError::Invalid(s) => f.write_str(s),
        }
    }
}

impl SegmentHeader {
    pub(crate) fn encode(&self) -> [u8; SEGMENT_HEADER_LEN as usize] {
        let mut b = [0u8; SEGMENT_HEADER_LEN as usize];
        b[0..8].copy_from_slice(&MAGIC);
        b[8..10].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
        b[16..24].copy_from_slice(&self.id.to_le_bytes());
        let (s, o) = self
            .prev_root
            .map_or((u64::MAX, 0), |l| (l.segment, l.offset));
        b[24..32].copy_from_slice(&s.to_le_bytes());
        b[32..40].copy_from_slice(&o.to_le_bytes());
        let crc = crc32fast::hash(&b[..60]);
        b[60..64].copy_from_slice(&crc.to_le_bytes());
        b
    }

    pub(crate) fn decode(bytes: &[u8]) -> Result<SegmentHeader, SegmentHeaderError> {
        let b = bytes
            .get(..SEGMENT_HEADER_LEN as usize)
            .ok_or(SegmentHeaderError::Short)?;
        if b[0..8] != MAGIC {
            return Err(SegmentHeaderError::BadMagic);
        }
        let u64_at = |o: usize| u64::from_le_bytes(b[o..o + 8].try_into().unwrap_or([0; 8]));
        let stored = u32::from_le_bytes(b[60..64].try_into().unwrap_or([0; 4]));
        if crc32fast::hash(&b[..60]) != stored {
            return Err(SegmentHeaderError::Checksum);
        }
        let version = u16::from_le_bytes([b[8], b[9]]);
        if version == 0 || version > FORMAT_VERSION {
            return Err(SegmentHeaderError::Version(version));
        }
        if b[10..16].iter().chain(&b[40..60]).any(|&x| x != 0) {
            return Err(SegmentHeaderError::Invalid(
                "reserved segment header bytes are not zero",
            ));
        }
        let seg = u64_at(24);
        let prev_root = (seg != u64::MAX).then(|| Location {
            segment: seg,
            offset: u64_at(32),
        });
        Ok(SegmentHeader {
            id: u64_at(16),
            prev_root,
        })
    }
}

/// The file name of segment `id`.
pub(crate) fn segment_file_name(id: u64) -> String {
    format!("{id:020}.seg")
}

/// The segment number of a file name, if it is one of ours.
pub(crate) fn parse_segment_file_name(name: &str) -> Option<u64> {
    let digits = name.strip_suffix(".seg")?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_roundtrip() {
        let h = SegmentHeader {
            id: 7,
            prev_root: Some(Location {
                segment: 6,
                offset: 4096,
            }),
        };
        assert_eq!(SegmentHeader::decode(&h.encode()).unwrap(), h);
        let none = SegmentHeader {
            id: 0,
            prev_root: None,
        };
        assert_eq!(SegmentHeader::decode(&none.encode()).unwrap(), none);
    }

    #[test]
    fn names() {
        assert_eq!(segment_file_name(12), "00000000000000000012.seg");
        assert_eq!(
            parse_segment_file_name("00000000000000000012.seg"),
            Some(12)
        );
        assert_eq!(parse_segment_file_name("12.seg"), None);
        assert_eq!(parse_segment_file_name("0000000000000000001x.seg"), None);
    }
}
