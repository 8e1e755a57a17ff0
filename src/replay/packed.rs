//! Packed rows: a table's fields' little-endian bytes in schema order, no
//! padding. What the push paths need to write and check them at tens of
//! millions of rows a second.

use super::schema::{Dims, Field, Schema};
use crate::DType;

/// `dst.copy_from_slice(src)` for slices of equal length, with the lengths
/// of a field or a small row copied by two overlapping fixed-size moves
/// instead of a call to `memcpy`, whose dispatch costs more than the copy
/// at these sizes.
#[inline(always)]
pub(crate) fn copy(dst: &mut [u8], src: &[u8]) {
    /// Copies `src` (`W <= len <= 2W`) as its first and last `W` bytes.
    #[inline(always)]
    fn two<const W: usize>(dst: &mut [u8], src: &[u8]) {
        let n = src.len();
        let head = src.first_chunk::<W>();
        let tail = src.last_chunk::<W>();
        if let (Some(head), Some(tail)) = (head, tail) {
            let (head, tail) = (*head, *tail);
            if let Some(d) = dst.first_chunk_mut::<W>() {
                *d = head;
            }
            if let Some(d) = dst.get_mut(n - W..).and_then(|d| d.first_chunk_mut::<W>()) {
                *d = tail;
            }
        }
    }
    // Callers pass equal lengths; a shorter `dst` would be a bug, and is
    // left unwritten rather than a panic.
    debug_assert_eq!(dst.len(), src.len());
    let Some(dst) = dst.get_mut(..src.len()) else {
        return;
    };
    // Longest first: a whole row (the hottest case) takes one test.
    match src.len() {
        65.. => dst.copy_from_slice(src),
        32.. => two::<32>(dst, src),
        16.. => two::<16>(dst, src),
        8.. => two::<8>(dst, src),
        4.. => two::<4>(dst, src),
        2.. => two::<2>(dst, src),
        1 => dst[0] = src[0],
        0 => {}
    }
}

/// Where the bool fields of a packed row are, as masks of the bits that
/// must be clear in 8-byte words of the row: a bool byte is valid when it
/// is 0 or 1, that is when its bits `0xFE` are clear.
///
/// A row is checked with one load, AND and test per word holding bools,
/// instead of a loop over its bool bytes. The words are read at offsets
/// `min(8k, len - 8)`, so the last one overlaps the one before rather than
/// reading past the row; its mask is laid out for where it is read from.
/// A row shorter than 8 bytes is checked as one word padded with zeros.
#[derive(Clone, Debug, Default)]
pub(crate) struct BoolBytes {
    /// (offset, mask) of each word holding bools.
    words: Box<[(usize, u64)]>,
}

impl BoolBytes {
    pub(crate) fn of(schema: &Schema) -> BoolBytes {
        let len = schema.row_size();
        let mut words: Vec<(usize, u64)> = Vec::new();
        for (i, f) in schema.fields().iter().enumerate() {
            if f.dtype != DType::Bool {
                continue;
            }
            for byte in schema.offset(i)..schema.offset(i) + schema.size(i) {
                let at = (byte / 8 * 8).min(len.saturating_sub(8));
                let mask = 0xFEu64 << (8 * (byte - at));
                match words.last_mut() {
                    Some((o, m)) if *o == at => *m |= mask,
                    _ => words.push((at, mask)),
                }
            }
        }
        BoolBytes {
            words: words.into_boxed_slice(),
        }
    }

    /// True when every bool byte of `row` (a packed row of the schema) is
    /// 0 or 1; false also when `row` is too short to hold them.
    #[inline]
    pub(crate) fn valid(&self, row: &[u8]) -> bool {
        let mut bad = 0u64;
        for &(at, mask) in self.words.iter() {
            let word = match row.get(at..).and_then(<[u8]>::first_chunk::<8>) {
                Some(w) => u64::from_le_bytes(*w),
                None => short_word(row, at),
            };
            bad |= word & mask;
        }
        bad == 0
    }
}

/// The word at `at` of a row shorter than 8 bytes, padded with zeros; one
/// with every bit set when `at` is past the row.
fn short_word(row: &[u8], at: usize) -> u64 {
    let mut w = [0u8; 8];
    match row.get(at..) {
        Some(rest) if rest.len() < 8 && at == 0 => {
            w[..rest.len()].copy_from_slice(rest);
            u64::from_le_bytes(w)
        }
        _ => u64::MAX,
    }
}

/// The fields of a schema as `push` checks and writes them: the common case
/// of a row given in schema order, each field a scalar or vector of the
/// schema's dtype and length, is checked and written in one pass over
/// compact per-field records, without allocating.
#[derive(Clone, Debug, Default)]
pub(crate) struct RowPlan {
    fields: Box<[FieldPlan]>,
    row_size: usize,
}

#[derive(Clone, Debug)]
struct FieldPlan {
    name: Box<str>,
    dtype: DType,
    /// The shape as a [`Field`] made by [`Field::scalar`] or
    /// [`Field::vector`] gives it; `None` for any other shape, which only
    /// the general path takes.
    dims: Option<PlanDims>,
    size: usize,
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum PlanDims {
    Scalar,
    Vector(usize),
}

impl RowPlan {
    pub(crate) fn of(schema: &Schema) -> RowPlan {
        let fields = schema
            .fields()
            .iter()
            .enumerate()
            .map(|(i, f)| FieldPlan {
                name: f.name.as_str().into(),
                dtype: f.dtype,
                dims: match f.shape.as_slice() {
                    [] => Some(PlanDims::Scalar),
                    &[n] => usize::try_from(n).ok().map(PlanDims::Vector),
                    _ => None,
                },
                size: schema.size(i),
            })
            .collect();
        RowPlan {
            fields,
            row_size: schema.row_size(),
        }
    }

    /// Writes `row` into `slot` (one row's bytes) when its fields are the
    /// schema's, in order, each with the schema's name and dtype and the
    /// shape given as a scalar or a vector. Returns false
    /// otherwise, with `slot` partly written: the caller then goes through
    /// [`match_fields`](super::schema::match_fields), which takes any order
    /// and shape form and says precisely what is wrong.
    #[inline]
    pub(crate) fn write(&self, row: &[Field<'_>], slot: &mut [u8]) -> bool {
        if row.len() != self.fields.len() || slot.len() != self.row_size {
            return false;
        }
        let mut at = 0;
        for (f, p) in row.iter().zip(self.fields.iter()) {
            let shape = match (f.dims, p.dims) {
                (Dims::Scalar, Some(PlanDims::Scalar)) => true,
                (Dims::Vector(n), Some(PlanDims::Vector(m))) => n == m,
                _ => false,
            };
            // A bool field made by `Field::scalar` or `Field::vector` holds
            // Rust `bool`s (`Element` is sealed), which are 0 or 1; bytes of
            // any other origin come with another shape form and go through
            // the general path, which checks them.
            let ok = shape
                && f.dtype == p.dtype
                && f.bytes.len() == p.size
                && same_name(f.name, &p.name);
            let Some(to) = slot.get_mut(at..at + p.size).filter(|_| ok) else {
                return false;
            };
            copy(to, f.bytes);
            at += p.size;
        }
        true
    }
}

/// `a == b` for the short names of fields, without a call to `memcmp`
/// (which costs more than the comparison on the push path) and without a
/// byte loop: whole words are compared, the last one overlapping the one
/// before when the length is not a multiple of the word (harmless for an
/// equality test).
#[inline]
fn same_name(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    let n = a.len();
    if n != b.len() {
        return false;
    }
    let w8 = |s: &[u8], i: usize| {
        u64::from_ne_bytes(
            s.get(i..i + 8)
                .and_then(|w| w.try_into().ok())
                .unwrap_or_default(),
        )
    };
    let w4 = |s: &[u8], i: usize| {
        u32::from_ne_bytes(
            s.get(i..i + 4)
                .and_then(|w| w.try_into().ok())
                .unwrap_or_default(),
        )
    };
    if n >= 8 {
        let mut diff = 0u64;
        let mut i = 0;
        while i + 8 <= n {
            diff |= w8(a, i) ^ w8(b, i);
            i += 8;
        }
        if i < n {
            diff |= w8(a, n - 8) ^ w8(b, n - 8);
        }
        diff == 0
    } else if n >= 4 {
        (w4(a, 0) ^ w4(b, 0)) | (w4(a, n - 4) ^ w4(b, n - 4)) == 0
    } else {
        a.iter().zip(b).fold(0u8, |d, (x, y)| d | (x ^ y)) == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copy_is_exact_at_every_small_length() {
        for n in 0..=130 {
            let src: Vec<u8> = (0..n)
                .map(|i| (i as u8).wrapping_mul(31).wrapping_add(7))
                .collect();
            let mut dst = vec![0xEE; n + 2];
            copy(&mut dst[1..n + 1], &src);
            assert_eq!(&dst[1..n + 1], &src[..], "length {n}");
            assert_eq!(
                (dst[0], dst[n + 1]),
                (0xEE, 0xEE),
                "length {n} wrote outside"
            );
        }
    }

    #[test]
    fn bool_bytes_accept_only_zero_and_one() {
        let cases = [
            // Bools in several words, the last one overlapping.
            "a: u8[], b: bool[2], c: f32[], d: bool[], e: u8[], f: bool[20], g: f32[]",
            // A row shorter than a word.
            "a: u8[], b: bool[2], c: u8[]",
            // CartPole: the bools end the row.
            "obs: f32[4], action: i64[], reward: f32[], next_obs: f32[4], terminated: bool[], truncated: bool[]",
        ];
        for text in cases {
            let schema = Schema::parse(text).unwrap();
            let bools = BoolBytes::of(&schema);
            let mut is_bool = vec![false; schema.row_size()];
            for (i, f) in schema.fields().iter().enumerate() {
                if f.dtype == DType::Bool {
                    is_bool[schema.offset(i)..schema.offset(i) + schema.size(i)].fill(true);
                }
            }
            // Every other byte holds a value no bool may hold.
            let row: Vec<u8> = is_bool.iter().map(|&b| if b { 0 } else { 0xFF }).collect();
            assert!(bools.valid(&row), "{text}");
            for at in (0..row.len()).filter(|&at| is_bool[at]) {
                for bad in [2u8, 0x80, 0xFF] {
                    let mut r = row.clone();
                    r[at] = bad;
                    assert!(!bools.valid(&r), "{text}: byte {at} = {bad}");
                    r[at] = 1;
                    assert!(bools.valid(&r), "{text}: byte {at} = 1");
                }
            }
            assert!(
                !bools.valid(&row[..row.len() - 1]) || !is_bool[row.len() - 1],
                "{text}: a row too short"
            );
        }
    }

    #[test]
    fn same_name_is_string_equality() {
        let names = [
            "",
            "a",
            "ab",
            "abc",
            "abcd",
            "abce",
            "obs",
            "action",
            "actiom",
            "next_obs",
            "next_obt",
            "terminated",
            "terminatee",
            "truncated",
            "xruncated",
            "a_long_field_name_17",
            "a_long_field_name_18",
        ];
        for a in names {
            for b in names {
                assert_eq!(same_name(a, b), a == b, "{a:?} {b:?}");
            }
        }
        // One changed byte at every position of every length up to 24.
        for n in 0..24u8 {
            let a: String = (0..n).map(|i| (b'a' + i) as char).collect();
            assert!(same_name(&a, &a.clone()));
            for i in 0..n as usize {
                let mut b = a.clone().into_bytes();
                b[i] = b'Z';
                let b = String::from_utf8(b).unwrap();
                assert!(!same_name(&a, &b), "{a:?} {b:?}");
            }
        }
    }
}
