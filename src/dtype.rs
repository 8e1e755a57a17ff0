//! Element types of tensors and the Rust types that carry them.

use std::fmt;

use bytemuck::{CheckedBitPattern, NoUninit};
use half::{bf16, f16};
use serde::{Deserialize, Serialize};

/// The element type of a tensor.
///
/// The discriminant is the byte stored in entry headers; it never changes
/// meaning within a format version.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[repr(u8)]
#[non_exhaustive]
pub enum DType {
    /// `bool`, one byte per element, 0 or 1.
    Bool = 1,
    /// `u8`
    U8 = 2,
    /// `i8`
    I8 = 3,
    /// `u16`
    U16 = 4,
    /// `i16`
    I16 = 5,
    /// `u32`
    U32 = 6,
    /// `i32`
    I32 = 7,
    /// `u64`
    U64 = 8,
    /// `i64`
    I64 = 9,
    /// IEEE 754 half precision (`half::f16`).
    F16 = 10,
    /// bfloat16 (`half::bf16`).
    BF16 = 11,
    /// `f32`
    F32 = 12,
    /// `f64`
    F64 = 13,
}

impl DType {
    /// Every dtype, in discriminant order.
    pub const ALL: [DType; 13] = [
        DType::Bool,
        DType::U8,
        DType::I8,
        DType::U16,
        DType::I16,
        DType::U32,
        DType::I32,
        DType::U64,
        DType::I64,
        DType::F16,
        DType::BF16,
        DType::F32,
        DType::F64,
    ];

    /// Bytes per element.
    pub const fn size(self) -> usize {
        match self {
            DType::Bool | DType::U8 | DType::I8 => 1,
            DType::U16 | DType::I16 | DType::F16 | DType::BF16 => 2,
            DType::U32 | DType::I32 | DType::F32 => 4,
            DType::U64 | DType::I64 | DType::F64 => 8,
        }
    }

    /// The lower-case name used by ckptdb (`f32`, `bf16`, `bool`, …).
    pub const fn name(self) -> &'static str {
        match self {
            DType::Bool => "bool",
            DType::U8 => "u8",
            DType::I8 => "i8",
            DType::U16 => "u16",
            DType::I16 => "i16",
            DType::U32 => "u32",
            DType::I32 => "i32",
            DType::U64 => "u64",
            DType::I64 => "i64",
            DType::F16 => "f16",
            DType::BF16 => "bf16",
            DType::F32 => "f32",
            DType::F64 => "f64",
        }
    }

    /// Parses the name printed by [`DType::name`].
    pub fn from_name(name: &str) -> Option<DType> {
        DType::ALL.into_iter().find(|d| d.name() == name)
    }

    /// Decodes the header byte; `None` for bytes no dtype uses.
    pub fn from_u8(b: u8) -> Option<DType> {
        DType::ALL.into_iter().find(|d| *d as u8 == b)
    }

    /// True for the floating-point dtypes.
    pub const fn is_float(self) -> bool {
        matches!(self, DType::F16 | DType::BF16 | DType::F32 | DType::F64)
    }
}

impl fmt::Display for DType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

mod sealed {
    pub trait Sealed {}
}

/// A Rust type that is the element of a tensor of one [`DType`].
///
/// Sealed: the set of element types is the format's, not the caller's.
/// `CheckedBitPattern` lets a view of stored bytes be validated rather than
/// reinterpreted (a `bool` byte must be 0 or 1).
pub trait Element:
    CheckedBitPattern + NoUninit + Copy + Send + Sync + 'static + sealed::Sealed
{
    /// The dtype of this element type.
    const DTYPE: DType;
    /// The element as an `f64`, for statistics.
    fn to_f64(self) -> f64;
}

macro_rules! element {
    ($($t:ty => $d:ident, |$x:ident| $conv:expr;)*) => {$(
        impl sealed::Sealed for $t {}
        impl Element for $t {
            const DTYPE: DType = DType::$d;
            fn to_f64(self) -> f64 {
                let $x = self;
                $conv
            }
        }
    )*};
}

element! {
    bool => Bool, |x| if x { 1.0 } else { 0.0 };
    u8 => U8, |x| x as f64;
    i8 => I8, |x| x as f64;
    u16 => U16, |x| x as f64;
    i16 => I16, |x| x as f64;
    u32 => U32, |x| x as f64;
    i32 => I32, |x| x as f64;
    u64 => U64, |x| x as f64;
    i64 => I64, |x| x as f64;
    f16 => F16, |x| x.to_f64();
    bf16 => BF16, |x| x.to_f64();
    f32 => F32, |x| x as f64;
    f64 => F64, |x| x;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_codes_roundtrip() {
        for d in DType::ALL {
            assert_eq!(DType::from_name(d.name()), Some(d));
            assert_eq!(DType::from_u8(d as u8), Some(d));
        }
        assert_eq!(DType::from_u8(0), None);
        assert_eq!(DType::from_u8(14), None);
    }
}
