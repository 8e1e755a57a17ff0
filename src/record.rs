//! Commit records and step manifests: the payloads that make the log a
//! database.
//!
//! A [`CommitRecord`] is the commit point and a **root**: from the newest
//! valid one the whole database can be read without any other file. It names
//! every live step (with the location of that step's [`Manifest`]), the tags,
//! and, when the commit added a step, that step's manifest inline. Records
//! are encoded with `postcard` (a compact, documented, non-self-describing
//! serde format); field order is part of the format version.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::dtype::DType;
use crate::format::{EntryHeader, Kind, Location};

/// Where an entry's bytes are and what they are, as a manifest names them.
///
/// Holding the dtype, shape, length and crc here lets a snapshot answer
/// metadata questions without touching the entry, and lets the first access
/// check the header at `at` against what the manifest expects.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct EntryRef {
    pub at: Location,
    pub kind: Kind,
    pub dtype: Option<DType>,
    pub shape: Vec<u64>,
    pub len: u64,
    pub crc: u32,
    /// The key the entry was written under (which can differ from the key it
    /// is named by in a manifest, when dedup shares one entry between keys).
    pub stored_key: String,
}

impl EntryRef {
    /// The reference to the entry at `at` whose header is `header`.
    pub(crate) fn from_header(at: Location, header: EntryHeader) -> EntryRef {
        EntryRef {
            at,
            kind: header.kind,
            dtype: header.dtype,
            shape: header.shape,
            len: header.payload_len,
            crc: header.payload_crc,
            stored_key: header.key,
        }
    }

    /// The header the referenced entry was written with (sequence number
    /// aside), to write the same entry again elsewhere.
    pub(crate) fn header(&self) -> EntryHeader {
        EntryHeader::new(
            self.kind,
            self.dtype,
            self.stored_key.clone(),
            self.shape.clone(),
            self.len,
            self.crc,
        )
    }

    /// Bytes the referenced entry takes on disk.
    pub fn disk_size(&self) -> u64 {
        crate::format::entry_size(self.stored_key.len(), self.shape.len(), self.len)
            .unwrap_or(u64::MAX)
    }
}

/// Persistent state of one replay table as of one step.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub(crate) struct ReplayTableState {
    /// The table's schema, encoded by the replay module.
    pub schema: Vec<u8>,
    /// Full pages, by page number in the ring.
    pub pages: Vec<Option<EntryRef>>,
    /// The page being filled, if it holds any rows.
    pub partial: Option<EntryRef>,
    /// Per-slot side state (priorities), if any.
    pub side: Option<EntryRef>,
    /// Ring counters, encoded by the replay module.
    pub ring: Vec<u8>,
}

/// Everything one step holds.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub(crate) struct Manifest {
    pub step: u64,
    pub time_ms: u64,
    #[serde(deserialize_with = "sorted_map")]
    pub entries: BTreeMap<String, EntryRef>,
    pub metrics: BTreeMap<String, f64>,
    pub replay: BTreeMap<String, ReplayTableState>,
    /// Payload bytes this step's commit wrote (not shared with earlier steps).
    pub new_bytes: u64,
}

/// Which entry of a replay table. The key it is stored under is built here
/// only ([`ReplayPart::key`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ReplayPart {
    /// Full page `k` of the ring.
    Page(usize),
    /// The page being filled.
    Partial,
    /// Per-slot priorities.
    Priorities,
}

const REPLAY_PREFIX: &str = "replay:";

impl ReplayPart {
    /// The key the entry of `table` is stored (and reported) under.
    pub(crate) fn key(self, table: &str) -> String {
        match self {
            ReplayPart::Page(k) => format!("{REPLAY_PREFIX}{table}/page/{k}"),
            ReplayPart::Partial => format!("{REPLAY_PREFIX}{table}/partial"),
            ReplayPart::Priorities => format!("{REPLAY_PREFIX}{table}/priorities"),
        }
    }
}

/// What a manifest names an entry by: a user key, or a part of a table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum EntryName<'a> {
    Key(&'a str),
    Replay(&'a str, ReplayPart),
}

impl EntryName<'_> {
    /// The name as reports show it (the key the entry is stored under).
    pub(crate) fn to_key(self) -> String {
        match self {
            EntryName::Key(k) => k.to_owned(),
            EntryName::Replay(table, part) => part.key(table),
        }
    }
}

impl ReplayTableState {
    /// The table's entries with their parts: pages, partial page, priorities.
    fn parts(&self) -> impl Iterator<Item = (ReplayPart, &EntryRef)> {
        let pages = self
            .pages
            .iter()
            .enumerate()
            .filter_map(|(k, p)| p.as_ref().map(|e| (ReplayPart::Page(k), e)));
        pages
            .chain(self.partial.iter().map(|e| (ReplayPart::Partial, e)))
            .chain(self.side.iter().map(|e| (ReplayPart::Priorities, e)))
    }

    /// Every entry reference of the table, to be changed in place.
    fn refs_mut(&mut self) -> impl Iterator<Item = &mut EntryRef> {
        self.pages
            .iter_mut()
            .flatten()
            .chain(self.partial.iter_mut())
            .chain(self.side.iter_mut())
    }
}

impl Manifest {
    /// The one walk over everything the step references (user entries,
    /// then each replay table's pages, partial page and priorities), each
    /// with its name.
    pub fn walk(&self) -> impl Iterator<Item = (EntryName<'_>, &EntryRef)> {
        let entries = self
            .entries
            .iter()
            .map(|(k, e)| (EntryName::Key(k.as_str()), e));
        let replay = self.replay.iter().flat_map(|(name, t)| {
            t.parts()
                .map(move |(part, e)| (EntryName::Replay(name.as_str(), part), e))
        });
        entries.chain(replay)
    }

    /// [`Manifest::walk`], mutably and without names (compaction points
    /// references at copies).
    pub fn refs_mut(&mut self) -> impl Iterator<Item = &mut EntryRef> {
        self.entries.values_mut().chain(
            self.replay
                .values_mut()
                .flat_map(ReplayTableState::refs_mut),
        )
    }

    /// Every entry the step references, replay pages included.
    pub fn entry_refs(&self) -> impl Iterator<Item = &EntryRef> {
        self.walk().map(|(_, e)| e)
    }

    /// Every entry the step references, with a name for reports: the key,
    /// or `replay:<table>/…` for replay pages and state (the key each is
    /// stored under).
    pub fn entry_refs_keyed(&self) -> impl Iterator<Item = (String, &EntryRef)> {
        self.walk().map(|(n, e)| (n.to_key(), e))
    }

    /// Sum of the payload lengths of the step's entries.
    pub fn logical_bytes(&self) -> u64 {
        self.entry_refs().map(|e| e.len).sum()
    }
}

/// A live step as the root lists it: where its manifest is, and the summary
/// `ls` and best-by-metric need without reading the manifest.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub(crate) struct LiveStep {
    pub step: u64,
    /// The manifest's location; `None` means "inline in this very record".
    pub manifest: Option<Location>,
    pub time_ms: u64,
    pub logical_bytes: u64,
    pub new_bytes: u64,
    pub metrics: BTreeMap<String, f64>,
}

/// The root of the database as of one commit.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub(crate) struct CommitRecord {
    /// Counts roots; strictly increasing.
    pub generation: u64,
    /// Sequence number the next entry gets.
    pub next_seq: u64,
    /// Newest step ever committed (steps stay monotonic across retention).
    pub last_step: Option<u64>,
    /// The root this one replaces.
    pub prev_root: Option<Location>,
    pub time_ms: u64,
    /// The step this commit added; `None` for a maintenance root (tags,
    /// compaction).
    pub step: Option<Manifest>,
    /// Every live step, ascending.
    pub live: Vec<LiveStep>,
    pub tags: BTreeMap<String, u64>,
}

impl CommitRecord {
    /// The record's bytes. Serializing plain data into a `Vec` does not
    /// fail in practice, but an empty record must never reach the log in
    /// place of a root, so a failure is reported.
    pub fn encode(&self) -> crate::error::Result<Vec<u8>> {
        postcard::to_stdvec(self).map_err(|e| {
            crate::error::Error::invalid(format!("commit record does not encode: {e}"))
        })
    }

    pub fn decode(bytes: &[u8]) -> Result<CommitRecord, postcard::Error> {
        postcard::from_bytes(bytes)
    }

    pub fn live_step(&self, step: u64) -> Option<&LiveStep> {
        self.live
            .binary_search_by_key(&step, |l| l.step)
            .ok()
            .map(|i| &self.live[i])
    }
}

impl Manifest {
    /// The manifest's bytes (see [`CommitRecord::encode`]).
    pub fn encode(&self) -> crate::error::Result<Vec<u8>> {
        postcard::to_stdvec(self)
            .map_err(|e| crate::error::Error::invalid(format!("manifest does not encode: {e}")))
    }

    pub fn decode(bytes: &[u8]) -> Result<Manifest, postcard::Error> {
        postcard::from_bytes(bytes)
    }
}

/// Decodes a map that was encoded from a `BTreeMap`, so its keys arrive in
/// order: collecting them and building the tree in one pass costs a fraction
/// of inserting them one by one (a search and key comparisons each), which
/// was most of decoding the manifest of a step with many entries. Keys out
/// of order (a damaged record that still decodes) are sorted, as inserting
/// would have; of two equal keys the later wins, as with inserting.
fn sorted_map<'de, D, V>(d: D) -> Result<BTreeMap<String, V>, D::Error>
where
    D: serde::Deserializer<'de>,
    V: Deserialize<'de>,
{
    struct Pairs<V>(std::marker::PhantomData<V>);
    impl<'de, V: Deserialize<'de>> serde::de::Visitor<'de> for Pairs<V> {
        type Value = BTreeMap<String, V>;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a map")
        }
        fn visit_map<A: serde::de::MapAccess<'de>>(
            self,
            mut map: A,
        ) -> Result<Self::Value, A::Error> {
            // The hint comes from the input: cap it so a damaged length
            // cannot make a huge allocation.
            let mut pairs = Vec::with_capacity(map.size_hint().unwrap_or(0).min(1 << 16));
            while let Some(pair) = map.next_entry::<String, V>()? {
                pairs.push(pair);
            }
            Ok(BTreeMap::from_iter(pairs))
        }
    }
    d.deserialize_map(Pairs(std::marker::PhantomData))
}

/// Milliseconds since the Unix epoch.
pub(crate) fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
