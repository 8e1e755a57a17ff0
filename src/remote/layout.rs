//! The remote layout: object names and the root object's encoding.
//!
//! Under a location `s3://bucket/prefix` a database is two kinds of object:
//!
//! - `prefix/segments/NNNNNNNNNNNNNNNNNNNN/OOOOOOOOOOOOOOOOOOOO-CCCCCCCC.piece`: the
//!   bytes of segment `N` from offset `O` on, for the length the root gives
//!   (the name ends `-CCCCCCCC.piece`, the piece's crc32 in hex).
//!   Segments are append-only, so a segment is the concatenation of its
//!   pieces and a piece, once written, never changes.
//! - `prefix/roots/GGGGGGGGGGGGGGGGGGGG.root`: generation `G`, written
//!   create-only after every piece it names is uploaded. The newest root is
//!   the database; a root is never overwritten, so two writers cannot both
//!   own a generation.

use serde::{Deserialize, Serialize};

use crate::error::{Error, RemoteErrorKind, Result};

/// First bytes of a root object.
pub(crate) const ROOT_MAGIC: &[u8; 8] = b"CKPTROOT";
/// The root encoding's version.
pub(crate) const ROOT_FORMAT: u32 = 1;
/// Roots are small (a few entries per segment); anything larger is not one.
pub(crate) const MAX_ROOT_BYTES: u64 = 64 << 20;

/// One immutable range of a segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Piece {
    /// Offset of the piece's first byte in its segment.
    pub offset: u64,
    /// Length in bytes.
    pub len: u64,
    /// crc32 (IEEE) of the piece's bytes.
    pub crc32: u32,
}

/// A segment as a root names it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RemoteSegment {
    /// The segment number (its local file name).
    pub number: u64,
    /// The pieces, in offset order, covering `0..len` without gaps.
    pub pieces: Vec<Piece>,
}

impl RemoteSegment {
    /// The segment's length: the end of its last piece.
    pub fn len(&self) -> u64 {
        self.pieces.last().map_or(0, |p| p.offset + p.len)
    }

    /// Whether the segment holds no byte.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The content of a root object: the whole database at one generation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RootObject {
    /// The encoding's version ([`ROOT_FORMAT`]).
    pub format: u32,
    /// The generation: one more than the root it replaces.
    pub generation: u64,
    /// The newest committed step in these segments, if any.
    pub latest_step: Option<u64>,
    /// Every segment of the database, in number order.
    pub segments: Vec<RemoteSegment>,
}

impl RootObject {
    /// Bytes of every piece this root names.
    pub fn total_bytes(&self) -> u64 {
        self.segments.iter().map(RemoteSegment::len).sum()
    }

    /// Magic, JSON body, then the crc32 of both.
    pub(crate) fn encode(&self) -> Result<Vec<u8>> {
        let mut out = ROOT_MAGIC.to_vec();
        let body = serde_json::to_vec(self)
            .map_err(|e| Error::invalid(format!("remote root does not encode: {e}")))?;
        out.extend_from_slice(&body);
        let crc = crc32fast::hash(&out);
        out.extend_from_slice(&crc.to_le_bytes());
        Ok(out)
    }

    pub(crate) fn decode(bytes: &[u8], name: &str) -> Result<RootObject> {
        let corrupt =
            |why: &str| Error::remote(RemoteErrorKind::Corrupt, format!("root {name}: {why}"));
        if bytes.len() < ROOT_MAGIC.len() + 4 || &bytes[..ROOT_MAGIC.len()] != ROOT_MAGIC {
            return Err(corrupt("not a root object (bad magic)"));
        }
        let (body, crc) = bytes.split_at(bytes.len() - 4);
        let stored = u32::from_le_bytes([crc[0], crc[1], crc[2], crc[3]]);
        let actual = crc32fast::hash(body);
        if stored != actual {
            return Err(corrupt(&format!(
                "crc32 mismatch: stored {stored:#010x}, computed {actual:#010x}"
            )));
        }
        let root: RootObject = serde_json::from_slice(&body[ROOT_MAGIC.len()..])
            .map_err(|e| corrupt(&format!("does not decode: {e}")))?;
        if root.format != ROOT_FORMAT {
            return Err(corrupt(&format!("unknown format version {}", root.format)));
        }
        let mut last = None;
        for seg in &root.segments {
            if last.is_some_and(|l| l >= seg.number) {
                return Err(corrupt("segments out of order"));
            }
            last = Some(seg.number);
            let mut end = 0;
            for p in &seg.pieces {
                if p.offset != end || p.len == 0 {
                    return Err(corrupt(&format!(
                        "segment {} has a gap or an empty piece",
                        seg.number
                    )));
                }
                end = p
                    .offset
                    .checked_add(p.len)
                    .ok_or_else(|| corrupt("piece overflows"))?;
            }
        }
        Ok(root)
    }
}

pub(crate) fn root_name(generation: u64) -> String {
    format!("roots/{generation:020}.root")
}

/// The generation a root object's name (relative to the prefix) encodes.
pub(crate) fn parse_root_name(name: &str) -> Option<u64> {
    let digits = name.strip_prefix("roots/")?.strip_suffix(".root")?;
    (digits.len() == 20 && digits.bytes().all(|b| b.is_ascii_digit()))
        .then(|| digits.parse().ok())
        .flatten()
}

/// A piece's name carries its crc32, so two writers racing to upload
/// different bytes for the same range never overwrite each other's piece
/// (the loser's root write then fails create-only and names nothing).
pub(crate) fn piece_name(segment: u64, piece: &Piece) -> String {
    format!(
        "segments/{segment:020}/{:020}-{:08x}.piece",
        piece.offset, piece.crc32
    )
}

/// A parsed `s3://bucket[/prefix]` location.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    /// The bucket name.
    pub bucket: String,
    /// The key prefix inside the bucket, without leading or trailing `/`
    /// (empty: the bucket's root).
    pub prefix: String,
}

impl Location {
    /// Parses `s3://bucket[/prefix]`; bucket names follow S3's rules
    /// (3–63 characters of `a-z`, `0-9`, `.`, `-`, starting and ending
    /// with a letter or digit).
    pub fn parse(url: &str) -> Result<Location> {
        let bad = |why: &str| Error::remote(RemoteErrorKind::InvalidUrl, format!("{url:?}: {why}"));
        let rest = url
            .strip_prefix("s3://")
            .ok_or_else(|| bad("expected s3://bucket[/prefix]"))?;
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        let ok_char =
            |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '.' || c == '-';
        let ends_ok =
            |c: Option<char>| c.is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
        if !(3..=63).contains(&bucket.len())
            || !bucket.chars().all(ok_char)
            || !ends_ok(bucket.chars().next())
            || !ends_ok(bucket.chars().next_back())
        {
            return Err(bad(
                "the bucket name must be 3-63 characters of a-z, 0-9, '.', '-'",
            ));
        }
        let prefix = prefix.trim_matches('/');
        if prefix.split('/').any(|p| p == "." || p == "..")
            || prefix.contains("//")
            || prefix.chars().any(|c| c.is_control())
        {
            return Err(bad(
                "the prefix has an empty, '.' or '..' part or a control character",
            ));
        }
        Ok(Location {
            bucket: bucket.to_owned(),
            prefix: prefix.to_owned(),
        })
    }
}

impl std::fmt::Display for Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.prefix.is_empty() {
            write!(f, "s3://{}", self.bucket)
        } else {
            write!(f, "s3://{}/{}", self.bucket, self.prefix)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locations_parse_or_fail_typed() {
        let l = Location::parse("s3://my-bucket/runs/a/").unwrap();
        assert_eq!(
            (l.bucket.as_str(), l.prefix.as_str()),
            ("my-bucket", "runs/a")
        );
        assert_eq!(Location::parse("s3://abc").unwrap().prefix, "");
        for bad in [
            "",
            "s3:/abc",
            "http://abc/x",
            "s3://",
            "s3://ab",
            "s3://Bucket/x",
            "s3://-ab/x",
            "s3://abc/a//b",
            "s3://abc/../x",
        ] {
            match Location::parse(bad) {
                Err(Error::Remote {
                    kind: RemoteErrorKind::InvalidUrl,
                    ..
                }) => {}
                other => panic!("{bad:?}: {other:?}"),
            }
        }
    }

    #[test]
    fn roots_round_trip_and_reject_damage() {
        let root = RootObject {
            format: ROOT_FORMAT,
            generation: 7,
            latest_step: Some(3),
            segments: vec![RemoteSegment {
                number: 2,
                pieces: vec![
                    Piece {
                        offset: 0,
                        len: 10,
                        crc32: 1,
                    },
                    Piece {
                        offset: 10,
                        len: 5,
                        crc32: 2,
                    },
                ],
            }],
        };
        let bytes = root.encode().unwrap();
        assert_eq!(RootObject::decode(&bytes, "r").unwrap(), root);
        assert_eq!(root.total_bytes(), 15);
        for i in 0..bytes.len() {
            let mut b = bytes.clone();
            b[i] ^= 0x40;
            assert!(RootObject::decode(&b, "r").is_err(), "flip at {i} accepted");
        }
        assert!(RootObject::decode(&bytes[..bytes.len() - 1], "r").is_err());
        assert_eq!(parse_root_name(&root_name(42)), Some(42));
        assert_eq!(parse_root_name("roots/42.root"), None);
    }
}
