//! # ckptdb
//!
//! An embedded checkpoint database for machine-learning training loops.
//!
//! A database is one directory holding one training run. Training code
//! commits **step snapshots** — weights, optimizer state, counters, RNG
//! state, metrics — in transactions; restoring reads tensors in place from a
//! memory map (zero-copy) after checking their crc32; a crash never loses a
//! committed step and never shows half of one.
//!
//! ```no_run
//! use ckptdb::Db;
//! use ndarray::Array2;
//!
//! # fn main() -> ckptdb::Result<()> {
//! let db = Db::open("run.ckpt")?;
//! let w = Array2::<f32>::zeros((4, 4));
//! let mut tx = db.begin_step(100)?;
//! tx.put_tensor("policy/fc1.weight", &w)?;
//! tx.put_metric("loss", 0.25)?;
//! tx.commit()?; // durable when this returns
//!
//! let snap = db.latest()?.expect("one step committed");
//! let view = snap.tensor("policy/fc1.weight")?.view::<f32>()?; // points into the file
//! assert_eq!(view.shape(), &[4, 4]);
//! # Ok(())
//! # }
//! ```
//!
//! The on-disk format is described in `docs/FORMAT.md`.

// `unsafe` is confined to `mmap`; every other module is forbid-clean.
#![deny(unsafe_code)]
#![warn(missing_docs)]
// A library that promises a typed error for every bad input must not
// panic on one: no `unwrap`/`expect` outside tests, except where an
// invariant makes failure impossible and a comment says which.
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

/// Calls `$body` with `$T` bound to the Rust element type of `$dtype`
/// (visible in every module declared below it).
macro_rules! with_element {
    ($dtype:expr, $T:ident => $body:expr) => {
        match $dtype {
            $crate::DType::Bool => {
                type $T = bool;
                $body
            }
            $crate::DType::U8 => {
                type $T = u8;
                $body
            }
            $crate::DType::I8 => {
                type $T = i8;
                $body
            }
            $crate::DType::U16 => {
                type $T = u16;
                $body
            }
            $crate::DType::I16 => {
                type $T = i16;
                $body
            }
            $crate::DType::U32 => {
                type $T = u32;
                $body
            }
            $crate::DType::I32 => {
                type $T = i32;
                $body
            }
            $crate::DType::U64 => {
                type $T = u64;
                $body
            }
            $crate::DType::I64 => {
                type $T = i64;
                $body
            }
            $crate::DType::F16 => {
                type $T = $crate::f16;
                $body
            }
            $crate::DType::BF16 => {
                type $T = $crate::bf16;
                $body
            }
            $crate::DType::F32 => {
                type $T = f32;
                $body
            }
            $crate::DType::F64 => {
                type $T = f64;
                $body
            }
        }
    };
}

mod catalog;
#[cfg(feature = "cli")]
#[doc(hidden)]
pub mod cli;
mod compact;
mod db;
pub mod distributed;
mod dtype;
mod error;
pub mod format;
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing;
mod gc;
pub mod interop;
mod key;
mod log;
mod mmap;
mod put;
mod record;
#[cfg(feature = "s3")]
pub mod remote;
pub mod replay;
pub mod report;
mod snapshot;
pub mod storage;
mod tags;
pub mod trainer;
mod txn;
mod verify;
mod view;
mod writer;

pub use db::{Db, DbOptions};
pub use dtype::{DType, Element};
pub use error::{CatalogError, Error, LostCommits, RemoteErrorKind, Result, ShardProblem};
pub use format::{Kind, Location};
pub use gc::{CompactStats, StorageUsage, DEFAULT_LIVE_THRESHOLD};
pub use key::validate_key;
pub use snapshot::{EntryInfo, Snapshot, StepInfo, Tensor};
pub use txn::StepTx;
pub use verify::{Problem, VerifyReport};

pub use half::{bf16, f16};
pub use ndarray;
