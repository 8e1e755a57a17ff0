//! Snapshots: one committed step, read in place.
//!
//! A [`Snapshot`] owns the manifest of its step and maps of the segments its
//! entries live in, so it does not borrow the [`Db`](crate::Db) and stays
//! valid while the database commits, drops steps, or reclaims space. Every
//! byte slice it hands out points into a map of the segment file: restoring
//! is zero-copy.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ndarray::{ArrayD, ArrayViewD, IxDyn};
use serde::de::DeserializeOwned;

use crate::dtype::{DType, Element};
use crate::error::{Error, Result};
use crate::format::{Kind, Location};
use crate::log::read::{SegmentMaps, Segments};
use crate::record::{EntryRef, LiveStep, Manifest};

/// A committed step, as the root lists it.
#[derive(Clone, Debug, PartialEq)]
pub struct StepInfo {
    /// The step number.
    pub step: u64,
    /// When the step was committed.
    pub time: SystemTime,
    /// Sum of the payload sizes of the step's entries.
    pub logical_bytes: u64,
    /// Payload bytes the step's commit wrote (the rest was shared).
    pub new_bytes: u64,
    /// The step's metrics.
    pub metrics: BTreeMap<String, f64>,
    /// Tags naming the step.
    pub tags: Vec<String>,
}

pub(crate) fn time_of(ms: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(ms)
}

impl StepInfo {
    pub(crate) fn from_live(l: &LiveStep, tags: &BTreeMap<String, u64>) -> StepInfo {
        StepInfo {
            step: l.step,
            time: time_of(l.time_ms),
            logical_bytes: l.logical_bytes,
            new_bytes: l.new_bytes,
            metrics: l.metrics.clone(),
            tags: tags
                .iter()
                .filter(|(_, &s)| s == l.step)
                .map(|(t, _)| t.clone())
                .collect(),
        }
    }
}

/// What a snapshot knows about one entry without reading its payload.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EntryInfo {
    /// The entry's key.
    pub key: String,
    /// Tensor, blob or value.
    pub kind: Kind,
    /// Element type, for tensors.
    pub dtype: Option<DType>,
    /// Shape, for tensors.
    pub shape: Vec<u64>,
    /// Payload size in bytes.
    pub bytes: u64,
    /// Where the entry is stored.
    pub location: Location,
    /// The payload's crc32.
    pub crc32: u32,
}

/// One committed step, readable in place.
#[derive(Debug, Clone)]
pub struct Snapshot {
    manifest: Arc<Manifest>,
    maps: SegmentMaps,
    segments: Arc<Segments>,
    tags: Vec<String>,
}

impl Snapshot {
    pub(crate) fn new(
        manifest: Arc<Manifest>,
        maps: SegmentMaps,
        segments: Arc<Segments>,
        tags: Vec<String>,
    ) -> Snapshot {
        Snapshot {
            manifest,
            maps,
            segments,
            tags,
        }
    }

    /// The step number.
    pub fn step(&self) -> u64 {
        self.manifest.step
    }

    /// When the step was committed.
    pub fn time(&self) -> SystemTime {
        time_of(self.manifest.time_ms)
    }

    /// Sum of the payload sizes of the step's entries.
    pub fn logical_bytes(&self) -> u64 {
        self.manifest.logical_bytes()
    }

    /// Payload bytes the step's commit wrote.
    pub fn new_bytes(&self) -> u64 {
        self.manifest.new_bytes
    }

    /// The step's metrics.
    pub fn metrics(&self) -> &BTreeMap<String, f64> {
        &self.manifest.metrics
    }

    /// Tags naming this step (as of when the snapshot was taken).
    pub fn tags(&self) -> &[String] {
        &self.tags
    }

    /// Every key, sorted.
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.manifest.entries.keys().map(String::as_str)
    }

    /// The keys under `prefix` (a namespace such as `policy/agent_1/`),
    /// sorted.
    pub fn keys_with_prefix<'a>(&'a self, prefix: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.manifest
            .entries
            .range::<str, _>((
                std::ops::Bound::Included(prefix),
                std::ops::Bound::Unbounded,
            ))
            .map(|(k, _)| k.as_str())
            .take_while(move |k| k.starts_with(prefix))
    }

    /// True when the step holds `key`.
    pub fn contains(&self, key: &str) -> bool {
        self.manifest.entries.contains_key(key)
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.manifest.entries.len()
    }

    /// True when the step holds no entry.
    pub fn is_empty(&self) -> bool {
        self.manifest.entries.is_empty()
    }

    fn entry_ref(&self, key: &str) -> Result<&EntryRef> {
        self.manifest
            .entries
            .get(key)
            .ok_or_else(|| self.missing(key))
    }

    /// The error for a lookup of `key` that missed.
    fn missing(&self, key: &str) -> Error {
        // A key no step could hold (`../etc`) is a bad argument, not a
        // missing entry: say so, as a put of it would. Only on a miss, so
        // reading a stored key costs no validation.
        if let Err(e) = crate::key::validate_key(key) {
            return e;
        }
        Error::KeyNotFound {
            step: self.manifest.step,
            key: key.to_owned(),
        }
    }

    fn info_of(key: &str, e: &EntryRef) -> EntryInfo {
        EntryInfo {
            key: key.to_owned(),
            kind: e.kind,
            dtype: e.dtype,
            shape: e.shape.clone(),
            bytes: e.len,
            location: e.at,
            crc32: e.crc,
        }
    }

    /// Metadata of the entry under `key`; reads no payload.
    pub fn entry(&self, key: &str) -> Result<EntryInfo> {
        Ok(Snapshot::info_of(key, self.entry_ref(key)?))
    }

    /// Metadata of every entry, sorted by key.
    pub fn entries(&self) -> impl Iterator<Item = EntryInfo> + '_ {
        self.manifest
            .entries
            .iter()
            .map(|(k, e)| Snapshot::info_of(k, e))
    }

    fn expect_kind(&self, key: &str, e: &EntryRef, kind: Kind) -> Result<()> {
        if e.kind != kind {
            return Err(Error::invalid(format!(
                "{key:?} in step {} is a {}, not a {}",
                self.manifest.step,
                e.kind.name(),
                kind.name()
            )));
        }
        Ok(())
    }

    /// The bytes of the blob under `key`, checked and borrowed from the map.
    pub fn blob(&self, key: &str) -> Result<&[u8]> {
        let e = self.entry_ref(key)?;
        self.expect_kind(key, e, Kind::Blob)?;
        self.segments.payload(&self.maps, e, true)
    }

    /// The payload bytes of any entry (blob, tensor or value), checked.
    pub fn raw_bytes(&self, key: &str) -> Result<&[u8]> {
        let e = self.entry_ref(key)?;
        self.segments.payload(&self.maps, e, true)
    }

    /// The serde value under `key`.
    pub fn value<T: DeserializeOwned>(&self, key: &str) -> Result<T> {
        let e = self.entry_ref(key)?;
        self.expect_kind(key, e, Kind::Value)?;
        let bytes = self.segments.payload(&self.maps, e, true)?;
        serde_json::from_slice(bytes).map_err(|source| Error::Value {
            key: key.to_owned(),
            source,
        })
    }

    /// The tensor under `key`: a handle that knows dtype and shape and reads
    /// the payload only when asked.
    pub fn tensor(&self, key: &str) -> Result<Tensor<'_>> {
        // One lookup for both the entry and the stored key the handle
        // borrows (a lookup is most of what a handle of a small tensor
        // costs).
        let Some((key, e)) = self.manifest.entries.get_key_value(key) else {
            return Err(self.missing(key));
        };
        self.expect_kind(key, e, Kind::Tensor)?;
        let dtype = e.dtype.ok_or_else(|| {
            Error::corruption(
                self.segments.log_dir(),
                e.at.offset,
                "tensor without a dtype",
            )
        })?;
        Ok(Tensor {
            snap: self,
            key: key.as_str(),
            dtype,
            entry: e,
        })
    }

    /// Reads every entry of the step and checks its crc32, returning the
    /// entries that fail with their errors (empty when all are intact).
    pub fn verify(&self) -> Vec<(EntryInfo, Error)> {
        let mut bad = Vec::new();
        for (k, e) in self.manifest.entry_refs_keyed() {
            if let Err(err) = self.segments.payload_fresh(&self.maps, e) {
                bad.push((Snapshot::info_of(&k, e), err));
            }
        }
        bad
    }

    pub(crate) fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    pub(crate) fn maps(&self) -> &SegmentMaps {
        &self.maps
    }

    pub(crate) fn segments(&self) -> &Segments {
        &self.segments
    }
}

/// A tensor of a snapshot. `dtype` and `shape` come from the manifest; the
/// payload is read (and on first access checked) only by the accessors that
/// return data.
#[derive(Clone, Copy, Debug)]
pub struct Tensor<'s> {
    snap: &'s Snapshot,
    key: &'s str,
    dtype: DType,
    entry: &'s EntryRef,
}

impl<'s> Tensor<'s> {
    /// The key.
    pub fn key(&self) -> &'s str {
        self.key
    }

    /// The element type.
    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// The shape.
    pub fn shape(&self) -> &'s [u64] {
        &self.entry.shape
    }

    /// Number of elements.
    pub fn len(&self) -> u64 {
        self.entry.shape.iter().product()
    }

    /// True for a tensor with no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Payload size in bytes.
    pub fn byte_len(&self) -> u64 {
        self.entry.len
    }

    /// The payload, borrowed from the map. The first access in this process
    /// checks the payload's crc32.
    pub fn bytes(&self) -> Result<&'s [u8]> {
        self.snap
            .segments
            .payload(&self.snap.maps, self.entry, true)
    }

    /// The payload without the crc32 check, for callers who verify the
    /// database separately (`ckptdb verify`). Bounds and the entry header
    /// are still checked.
    pub fn bytes_unverified(&self) -> Result<&'s [u8]> {
        self.snap
            .segments
            .payload(&self.snap.maps, self.entry, false)
    }

    /// True when this process already checked the payload's crc32.
    pub(crate) fn is_verified(&self) -> bool {
        self.snap.segments.is_payload_verified(self.entry)
    }

    /// Checks a crc32 the caller computed over [`Tensor::bytes_unverified`]
    /// against the recorded one (a checksum mismatch otherwise) and, when it
    /// holds, marks the payload checked as [`Tensor::bytes`] would.
    pub(crate) fn check_crc(&self, actual: u32) -> Result<()> {
        self.snap.segments.check_payload_crc(self.entry, actual)
    }

    fn check_dtype<T: Element>(&self) -> Result<()> {
        if T::DTYPE != self.dtype {
            return Err(Error::DtypeMismatch {
                key: self.key.to_owned(),
                stored: self.dtype,
                requested: T::DTYPE,
            });
        }
        Ok(())
    }

    fn cast<T: Element>(&self, bytes: &'s [u8]) -> Result<&'s [T]> {
        bytemuck::checked::try_cast_slice(bytes).map_err(|e| match e {
            bytemuck::checked::CheckedCastError::PodCastError(_) => Error::Misaligned {
                key: self.key.to_owned(),
                offset: self.entry.at.offset,
                align: std::mem::align_of::<T>(),
            },
            bytemuck::checked::CheckedCastError::InvalidBitPattern => Error::corruption(
                self.snap.segments.log_dir(),
                self.entry.at.offset,
                format!(
                    "{:?} holds a value that is not a valid {}",
                    self.key, self.dtype
                ),
            ),
        })
    }

    /// The elements as a slice into the map (checked on first access).
    pub fn as_slice<T: Element>(&self) -> Result<&'s [T]> {
        self.check_dtype::<T>()?;
        self.cast(self.bytes()?)
    }

    /// [`Tensor::as_slice`] without the crc32 check.
    pub fn as_slice_unverified<T: Element>(&self) -> Result<&'s [T]> {
        self.check_dtype::<T>()?;
        self.cast(self.bytes_unverified()?)
    }

    fn view_of<T: Element>(&self, slice: &'s [T]) -> Result<ArrayViewD<'s, T>> {
        let shape = &self.entry.shape;
        let too_large = || Error::invalid("dimension too large for this platform");
        // `IxDyn` keeps up to four dimensions inline; building it from a
        // stack array instead of a collected `Vec` saves an allocation per
        // view, which is a good part of a small tensor's view.
        let dim = if shape.len() <= 4 {
            let mut d = [0usize; 4];
            for (d, &s) in d.iter_mut().zip(shape) {
                *d = usize::try_from(s).map_err(|_| too_large())?;
            }
            IxDyn(&d[..shape.len()])
        } else {
            let d: Vec<usize> = shape
                .iter()
                .map(|&s| usize::try_from(s).map_err(|_| too_large()))
                .collect::<Result<_>>()?;
            IxDyn(&d)
        };
        ArrayViewD::from_shape(dim, slice).map_err(|_| Error::ShapeMismatch {
            what: self.key.to_owned(),
            expected: self.entry.shape.clone(),
            actual: vec![slice.len() as u64],
        })
    }

    /// An `ndarray` view into the map (checked on first access).
    pub fn view<T: Element>(&self) -> Result<ArrayViewD<'s, T>> {
        let s = self.as_slice::<T>()?;
        self.view_of(s)
    }

    /// [`Tensor::view`] without the crc32 check.
    pub fn view_unverified<T: Element>(&self) -> Result<ArrayViewD<'s, T>> {
        let s = self.as_slice_unverified::<T>()?;
        self.view_of(s)
    }

    /// An owned copy of the tensor.
    pub fn to_owned<T: Element>(&self) -> Result<ArrayD<T>> {
        Ok(self.view::<T>()?.to_owned())
    }
}
