//! Entry headers.
//!
//! ```text
//! offset size field
//!  0      4   magic "CKPE"
//!  4      2   format version
//!  6      1   kind
//!  7      1   dtype (0 when the entry is not a tensor)
//!  8      8   sequence number
//! 16      8   payload length
//! 24      4   payload crc32
//! 28      2   key length K
//! 30      1   rank R
//! 31      1   flags (0)
//! 32     28   reserved (0)
//! 60      4   header crc32 over bytes 0..60, then the variable part
//! 64      K   key (UTF-8)
//! 64+K  8*R   shape, one u64 per dimension
//! ```
//! The payload starts at the next 64-byte boundary after the header, and
//! the next entry at the next 64-byte boundary after the payload.

use super::{align_up, FORMAT_VERSION, MAX_KEY_LEN, MAX_PAYLOAD_LEN, MAX_RANK};
use crate::dtype::DType;

pub(crate) const ENTRY_FIXED_LEN: usize = 64;
/// The first four bytes of every entry.
pub(crate) const ENTRY_MAGIC: [u8; 4] = *b"CKPE";
const MAGIC: [u8; 4] = ENTRY_MAGIC;

/// What an entry holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[repr(u8)]
#[non_exhaustive]
pub enum Kind {
    /// A tensor: dtype, shape and row-major little-endian elements.
    Tensor = 1,
    /// Raw bytes.
    Blob = 2,
    /// A serde value as JSON.
    Value = 3,
    /// Rows of a replay table.
    ReplayPage = 4,
    /// A step manifest copied forward by compaction.
    Manifest = 5,
    /// A commit record: the root of the database as of one commit.
    Commit = 6,
    /// Per-slot state of a replay table (priorities and the like).
    ReplayState = 7,
}

impl Kind {
    fn from_u8(b: u8) -> Option<Kind> {
        Some(match b {
            1 => Kind::Tensor,
            2 => Kind::Blob,
            3 => Kind::Value,
            4 => Kind::ReplayPage,
            5 => Kind::Manifest,
            6 => Kind::Commit,
            7 => Kind::ReplayState,
            _ => return None,
        })
    }

    /// Lower-case name, as the CLI prints it.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Tensor => "tensor",
            Kind::Blob => "blob",
            Kind::Value => "value",
            Kind::ReplayPage => "replay-page",
            Kind::Manifest => "manifest",
            Kind::Commit => "commit",
            Kind::ReplayState => "replay-state",
        }
    }
}

/// The decoded header of one entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EntryHeader {
    /// What the entry holds.
    pub kind: Kind,
    /// Element type, for tensors.
    pub dtype: Option<DType>,
    /// Sequence number; strictly increasing along the log.
    pub seq: u64,
    /// Payload length in bytes.
    pub payload_len: u64,
    /// crc32 of the payload.
    pub payload_crc: u32,
    /// The entry's key.
    pub key: String,
    /// Tensor shape (empty for scalars and non-tensors).
    pub shape: Vec<u64>,
}

/// Why a header did not decode.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum HeaderError {
    /// Fewer bytes than the header needs.
    Short,
    /// The magic bytes are wrong (not an entry, or zeroes of a torn tail).
    BadMagic,
    /// Written by a newer format version.
    Version(u16),
    /// The header crc does not match.
    Checksum { expected: u32, actual: u32 },
    /// A field is out of range.
    Invalid(String),
}

impl std::fmt::Display for HeaderError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HeaderError::Short => f.write_str("entry header cut short"),
            HeaderError::BadMagic => f.write_str("no entry magic"),
            HeaderError::Version(v) => write!(f, "entry format version {v}"),
            HeaderError::Checksum { expected, actual } => write!(
                f,
                "entry header checksum mismatch (stored {expected:08x}, computed {actual:08x})"
            ),
            HeaderError::Invalid(s) => f.write_str(s),
        }
    }
}

/// Bytes an entry takes on disk, padding included; `None` on overflow.
pub(crate) fn entry_size(key_len: usize, rank: usize, payload_len: u64) -> Option<u64> {
    let header = align_up((ENTRY_FIXED_LEN + key_len + 8 * rank) as u64)?;
    header.checked_add(align_up(payload_len)?)
}

impl EntryHeader {
    /// The header of a new entry; the log numbers it (`seq`) when it
    /// appends it.
    pub(crate) fn new(
        kind: Kind,
        dtype: Option<DType>,
        key: String,
        shape: Vec<u64>,
        payload_len: u64,
        payload_crc: u32,
    ) -> EntryHeader {
        EntryHeader {
            kind,
            dtype,
            seq: 0,
            payload_len,
            payload_crc,
            key,
            shape,
        }
    }

    /// Header length, variable part included.
    pub fn header_len(&self) -> usize {
        ENTRY_FIXED_LEN + self.key.len() + 8 * self.shape.len()
    }

    /// Offset of the payload from the start of the entry.
    pub fn payload_offset(&self) -> u64 {
        // Cannot overflow: header_len is bounded by MAX_HEADER_LEN.
        align_up(self.header_len() as u64).unwrap_or(u64::MAX)
    }

    /// Bytes the whole entry takes on disk, padding included.
    pub fn entry_size(&self) -> u64 {
        entry_size(self.key.len(), self.shape.len(), self.payload_len).unwrap_or(u64::MAX)
    }

    /// Appends the header and the zero padding up to the payload to `out`.
    /// The caller has validated the key and shape lengths.
    pub(crate) fn encode_into(&self, out: &mut Vec<u8>) {
        debug_assert!(self.key.len() <= MAX_KEY_LEN && self.shape.len() <= MAX_RANK);
        let start = out.len();
        out.extend_from_slice(&MAGIC);
        out.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
        out.push(self.kind as u8);
        out.push(self.dtype.map_or(0, |d| d as u8));
        out.extend_from_slice(&self.seq.to_le_bytes());
        out.extend_from_slice(&self.payload_len.to_le_bytes());
        out.extend_from_slice(&self.payload_crc.to_le_bytes());
        out.extend_from_slice(&(self.key.len() as u16).to_le_bytes());
        out.push(self.shape.len() as u8);
        out.push(0);
        out.resize(start + 60, 0);
        let mut crc = crc32fast::Hasher::new();
        crc.update(&out[start..start + 60]);
        crc.update(self.key.as_bytes());
        for d in &self.shape {
            crc.update(&d.to_le_bytes());
        }
        out.extend_from_slice(&crc.finalize().to_le_bytes());
        out.extend_from_slice(self.key.as_bytes());
        for d in &self.shape {
            out.extend_from_slice(&d.to_le_bytes());
        }
        out.resize(start + self.payload_offset() as usize, 0);
    }

    /// Decodes the header at the start of `bytes`. `bytes` may run past the
    /// header; it must hold at least the whole header.
    pub(crate) fn decode(bytes: &[u8]) -> Result<EntryHeader, HeaderError> {
        let fixed = bytes.get(..ENTRY_FIXED_LEN).ok_or(HeaderError::Short)?;
        if fixed[0..4] != MAGIC {
            return Err(HeaderError::BadMagic);
        }
        let u16_at = |o: usize| u16::from_le_bytes([fixed[o], fixed[o + 1]]);
        let u32_at = |o: usize| u32::from_le_bytes(fixed[o..o + 4].try_into().unwrap_or([0; 4]));
        let u64_at = |o: usize| u64::from_le_bytes(fixed[o..o + 8].try_into().unwrap_or([0; 8]));
        let version = u16_at(4);
        let key_len = u16_at(28) as usize;
        let rank = fixed[30] as usize;
        if key_len > MAX_KEY_LEN {
            return Err(HeaderError::Invalid(format!(
                "key length {key_len} over the limit"
            )));
        }
        if rank > MAX_RANK {
            return Err(HeaderError::Invalid(format!("rank {rank} over the limit")));
        }
        let total = ENTRY_FIXED_LEN + key_len + 8 * rank;
        let var = bytes
            .get(ENTRY_FIXED_LEN..total)
            .ok_or(HeaderError::Short)?;
        let mut crc = crc32fast::Hasher::new();
        crc.update(&fixed[..60]);
        crc.update(var);
        let actual = crc.finalize();
        let expected = u32_at(60);
        if actual != expected {
            return Err(HeaderError::Checksum { expected, actual });
        }
        // Only a header whose crc holds can be trusted to carry a version.
        if version == 0 || version > FORMAT_VERSION {
            return Err(HeaderError::Version(version));
        }
        let kind = Kind::from_u8(fixed[6])
            .ok_or_else(|| HeaderError::Invalid(format!("unknown entry kind {}", fixed[6])))?;
        let dtype = match fixed[7] {
            0 => None,
            b => Some(
                DType::from_u8(b)
                    .ok_or_else(|| HeaderError::Invalid(format!("unknown dtype code {b}")))?,
            ),
        };
        if fixed[31] != 0 || fixed[32..60].iter().any(|&b| b != 0) {
            return Err(HeaderError::Invalid(
                "reserved header bytes are not zero".into(),
            ));
        }
        let payload_len = u64_at(16);
        if payload_len > MAX_PAYLOAD_LEN {
            return Err(HeaderError::Invalid(format!(
                "payload length {payload_len} over the limit"
            )));
        }
        let key = std::str::from_utf8(&var[..key_len])
            .map_err(|_| HeaderError::Invalid("key is not UTF-8".into()))?
            .to_owned();
        let shape = var[key_len..]
            .chunks_exact(8)
            .map(|c| u64::from_le_bytes(c.try_into().unwrap_or([0; 8])))
            .collect();
        Ok(EntryHeader {
            kind,
            dtype,
            seq: u64_at(8),
            payload_len,
            payload_crc: u32_at(24),
            key,
            shape,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> EntryHeader {
        EntryHeader {
            kind: Kind::Tensor,
            dtype: Some(DType::F32),
            seq: 42,
            payload_len: 12,
            payload_crc: 0xdead_beef,
            key: "policy/fc1.weight".into(),
            shape: vec![3, 1],
        }
    }

    #[test]
    fn roundtrip_and_padding() {
        let h = sample();
        let mut buf = Vec::new();
        h.encode_into(&mut buf);
        assert_eq!(buf.len() as u64, h.payload_offset());
        assert_eq!(buf.len() % 64, 0);
        assert_eq!(EntryHeader::decode(&buf).unwrap(), h);
        assert_eq!(h.entry_size(), 128 + 64);
    }

    #[test]
    fn every_flipped_bit_is_rejected() {
        let mut buf = Vec::new();
        sample().encode_into(&mut buf);
        let len = sample().header_len();
        for i in 0..len * 8 {
            let mut b = buf.clone();
            b[i / 8] ^= 1 << (i % 8);
            assert!(EntryHeader::decode(&b).is_err(), "bit {i} flip accepted");
        }
    }

    #[test]
    fn short_input_is_an_error() {
        let mut buf = Vec::new();
        sample().encode_into(&mut buf);
        for n in 0..sample().header_len() {
            assert!(EntryHeader::decode(&buf[..n]).is_err());
        }
    }
}
