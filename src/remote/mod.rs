//! A database on S3-compatible object storage (cargo feature `s3`).
//!
//! [`Remote`] is one location `s3://bucket[/prefix]` reached through the
//! `object_store` crate. It copies a closed local database up
//! ([`Remote::push`]) and down ([`Remote::pull`]), and opens the newest
//! remote generation read-only through a local cache ([`Remote::open_db`],
//! [`Db::open_remote`]) that fetches only the pieces the cache lacks and
//! checks every crc32 before the engine maps a byte.
//!
//! The layout is in [`layout`] and `docs/FORMAT.md`. The API is
//! synchronous: a `Remote` owns a small current-thread tokio runtime and
//! blocks on it, so callers need no async runtime of their own.

#[cfg(feature = "fault-injection")]
pub mod fault;
pub mod layout;
mod mirror;
mod push;

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures_util::TryStreamExt;
pub use object_store;
use object_store::aws::AmazonS3Builder;
use object_store::path::Path as ObjectPath;
use object_store::{
    BackoffConfig, ClientOptions, ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload,
    RetryConfig,
};

use crate::error::{Error, RemoteErrorKind, Result};
use crate::Db;
pub use layout::{Location, Piece, RemoteSegment, RootObject};
pub use mirror::{Durability, Mirror, MirrorOptions};
use push::PushSession;

/// Pieces up to this size go up in one request; larger ones as a multipart
/// upload of parts this size (S3 requires parts of at least 5 MiB).
const PART_BYTES: u64 = 16 << 20;
/// How many roots stay when a push prunes: the new one and the one before,
/// so a reader that just read the previous root can still fetch its pieces.
const KEEP_ROOTS: usize = 2;
/// Where the cache keeps the assembled database.
const CACHE_DB_DIR: &str = "db";

/// How to reach the object store. Defaults come from the standard `AWS_*`
/// environment variables ([`RemoteOptions::from_env`]).
#[derive(Debug, Clone)]
pub struct RemoteOptions {
    endpoint: Option<String>,
    region: String,
    access_key_id: Option<String>,
    secret_access_key: Option<String>,
    session_token: Option<String>,
    allow_http: bool,
    request_timeout: Duration,
    connect_timeout: Duration,
    max_retries: usize,
    retry_timeout: Duration,
}

impl Default for RemoteOptions {
    fn default() -> Self {
        RemoteOptions {
            endpoint: None,
            region: "us-east-1".to_owned(),
            access_key_id: None,
            secret_access_key: None,
            session_token: None,
            allow_http: false,
            request_timeout: Duration::from_secs(60),
            connect_timeout: Duration::from_secs(5),
            max_retries: 5,
            retry_timeout: Duration::from_secs(60),
        }
    }
}

impl RemoteOptions {
    /// Options from `AWS_ENDPOINT_URL` (or `AWS_ENDPOINT`),
    /// `AWS_REGION` (or `AWS_DEFAULT_REGION`), `AWS_ACCESS_KEY_ID`,
    /// `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN` and `AWS_ALLOW_HTTP`.
    pub fn from_env() -> RemoteOptions {
        let var = |names: &[&str]| {
            names
                .iter()
                .find_map(|n| std::env::var(n).ok().filter(|v| !v.is_empty()))
        };
        let defaults = RemoteOptions::default();
        RemoteOptions {
            endpoint: var(&["AWS_ENDPOINT_URL", "AWS_ENDPOINT"]),
            region: var(&["AWS_REGION", "AWS_DEFAULT_REGION"]).unwrap_or(defaults.region.clone()),
            access_key_id: var(&["AWS_ACCESS_KEY_ID"]),
            secret_access_key: var(&["AWS_SECRET_ACCESS_KEY"]),
            session_token: var(&["AWS_SESSION_TOKEN"]),
            allow_http: var(&["AWS_ALLOW_HTTP"]).is_some_and(|v| v == "true" || v == "1"),
            ..defaults
        }
    }

    /// An S3-compatible endpoint such as `http://127.0.0.1:9000` (path-style
    /// requests); `http://` also needs [`RemoteOptions::allow_http`].
    pub fn endpoint(mut self, url: impl Into<String>) -> Self {
        self.endpoint = Some(url.into());
        self
    }

    /// The region to sign requests for (default `us-east-1`).
    pub fn region(mut self, region: impl Into<String>) -> Self {
        self.region = region.into();
        self
    }

    /// Static credentials.
    pub fn credentials(
        mut self,
        access_key_id: impl Into<String>,
        secret_access_key: impl Into<String>,
    ) -> Self {
        self.access_key_id = Some(access_key_id.into());
        self.secret_access_key = Some(secret_access_key.into());
        self
    }

    /// Whether plain-HTTP endpoints are allowed (default no).
    pub fn allow_http(mut self, allow: bool) -> Self {
        self.allow_http = allow;
        self
    }

    /// How long one request may take (default 60 s).
    pub fn request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = timeout;
        self
    }

    /// How long connecting may take (default 5 s).
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// How often a failed request is retried with backoff, and for how long
    /// at most (default 5 times within 60 s). After that the operation
    /// fails with a typed error.
    pub fn retries(mut self, max_retries: usize, within: Duration) -> Self {
        self.max_retries = max_retries;
        self.retry_timeout = within;
        self
    }
}

/// What a [`Remote::push`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PushStats {
    /// The generation of the root written.
    pub generation: u64,
    /// The newest committed step the root names, if any.
    pub latest_step: Option<u64>,
    /// Bytes of new pieces uploaded (the root object not counted).
    pub bytes_uploaded: u64,
    /// Pieces uploaded.
    pub pieces_uploaded: u64,
    /// Bytes of pieces the remote already held that were read back from
    /// the local log and compared (crc32) before anything went up. A
    /// [`Mirror`] checks each piece once, not on every push.
    pub bytes_checked: u64,
    /// Objects deleted because no kept root names them any more.
    pub objects_deleted: u64,
}

/// What a [`Remote::pull_with_progress`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PullStats {
    /// The generation copied.
    pub generation: u64,
    /// The newest committed step it holds, if any.
    pub latest_step: Option<u64>,
    /// Segment files written.
    pub segments: u64,
    /// Bytes downloaded (every byte of the generation: the target starts
    /// empty).
    pub bytes_fetched: u64,
}

/// A progress callback: `(bytes done, bytes total)`, called as a transfer
/// advances; `total` is the same on every call of one operation.
pub type Progress<'a> = &'a mut dyn FnMut(u64, u64);

/// One database location on an object store.
pub struct Remote {
    store: Arc<dyn ObjectStore>,
    location: Location,
    runtime: tokio::runtime::Runtime,
    fetched: AtomicU64,
}

impl std::fmt::Debug for Remote {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Remote")
            .field("location", &self.location.to_string())
            .finish()
    }
}

impl Db {
    /// Opens the newest generation at `url` (`s3://bucket[/prefix]`)
    /// read-only through the cache directory `cache_dir`, with
    /// [`RemoteOptions::from_env`]. See [`Remote::open_db`].
    pub fn open_remote(url: &str, cache_dir: impl AsRef<Path>) -> Result<Db> {
        Remote::open(url, RemoteOptions::from_env())?.open_db(cache_dir)
    }
}

impl Remote {
    /// Connects to `url` and checks that the bucket exists and the
    /// credentials are accepted (one list request), so a wrong location
    /// fails here, typed, within the retry budget.
    pub fn open(url: &str, options: RemoteOptions) -> Result<Remote> {
        let location = Location::parse(url)?;
        // Without static credentials object_store would ask the cloud's
        // instance-metadata service; this crate never talks to an address
        // it was not given, so missing credentials are an error here.
        let (Some(key), Some(secret)) = (&options.access_key_id, &options.secret_access_key) else {
            return Err(Error::remote(
                RemoteErrorKind::Credentials,
                format!(
                    "{location}: no credentials (set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY)"
                ),
            ));
        };
        let mut builder = AmazonS3Builder::new()
            .with_bucket_name(&location.bucket)
            .with_region(&options.region)
            .with_access_key_id(key)
            .with_secret_access_key(secret)
            .with_allow_http(options.allow_http)
            .with_client_options(
                ClientOptions::new()
                    .with_allow_http(options.allow_http)
                    .with_timeout(options.request_timeout)
                    .with_connect_timeout(options.connect_timeout),
            )
            .with_retry(RetryConfig {
                backoff: BackoffConfig {
                    init_backoff: Duration::from_millis(50),
                    max_backoff: Duration::from_secs(5),
                    base: 2.0,
                },
                max_retries: options.max_retries,
                retry_timeout: options.retry_timeout,
            });
        if let Some(token) = &options.session_token {
            builder = builder.with_token(token);
        }
        if let Some(endpoint) = &options.endpoint {
            builder = builder
                .with_endpoint(endpoint)
                .with_virtual_hosted_style_request(false);
        }
        let store = builder
            .build()
            .map_err(|e| classify(e, format!("configure {location}")))?;
        let remote = Remote::with_store(Arc::new(store), url)?;
        remote.list_roots()?;
        Ok(remote)
    }

    /// A remote on any `object_store` implementation (an in-memory store in
    /// tests, a fault-injecting wrapper). `url` only names the location.
    pub fn with_store(store: Arc<dyn ObjectStore>, url: &str) -> Result<Remote> {
        let location = Location::parse(url)?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| Error::io("start the object-store runtime", PathBuf::new(), e))?;
        Ok(Remote {
            store,
            location,
            runtime,
            fetched: AtomicU64::new(0),
        })
    }

    /// The location, `s3://bucket[/prefix]`.
    pub fn location(&self) -> &Location {
        &self.location
    }

    /// Bytes of pieces downloaded by this `Remote` so far.
    pub fn bytes_fetched(&self) -> u64 {
        self.fetched.load(Ordering::Relaxed)
    }

    fn path(&self, name: &str) -> ObjectPath {
        if self.location.prefix.is_empty() {
            ObjectPath::from(name)
        } else {
            ObjectPath::from(format!("{}/{name}", self.location.prefix))
        }
    }

    /// Generations of every root object, ascending.
    fn list_roots(&self) -> Result<Vec<u64>> {
        let prefix = self.path("roots");
        let strip = if self.location.prefix.is_empty() {
            0
        } else {
            self.location.prefix.len() + 1
        };
        let metas: Vec<_> = self
            .runtime
            .block_on(self.store.list(Some(&prefix)).try_collect::<Vec<_>>())
            .map_err(|e| classify_list(e, format!("list {}/roots", self.location)))?;
        let mut gens: Vec<u64> = metas
            .iter()
            .filter_map(|m| {
                m.location
                    .as_ref()
                    .get(strip..)
                    .and_then(layout::parse_root_name)
            })
            .collect();
        gens.sort_unstable();
        Ok(gens)
    }

    fn read_root(&self, generation: u64) -> Result<RootObject> {
        let name = layout::root_name(generation);
        let path = self.path(&name);
        let bytes = self.runtime.block_on(async {
            let got = self.store.get(&path).await?;
            if got.meta.size > layout::MAX_ROOT_BYTES {
                return Ok(None);
            }
            got.bytes().await.map(Some)
        });
        let bytes = bytes.map_err(|e| classify(e, format!("read {}/{name}", self.location)))?;
        let bytes = bytes.ok_or_else(|| {
            Error::remote(
                RemoteErrorKind::Corrupt,
                format!("{}/{name}: larger than any root", self.location),
            )
        })?;
        let root = RootObject::decode(&bytes, &format!("{}/{name}", self.location))?;
        if root.generation != generation {
            return Err(Error::remote(
                RemoteErrorKind::Corrupt,
                format!(
                    "{}/{name}: names generation {}",
                    self.location, root.generation
                ),
            ));
        }
        Ok(root)
    }

    /// The newest root, or `None` when the location holds no database.
    pub fn newest_root(&self) -> Result<Option<RootObject>> {
        match self.list_roots()?.last() {
            Some(&g) => self.read_root(g).map(Some),
            None => Ok(None),
        }
    }

    fn newest_root_required(&self) -> Result<RootObject> {
        self.newest_root()?.ok_or_else(|| {
            Error::remote(
                RemoteErrorKind::NotFound,
                format!("{}: no database (no root object)", self.location),
            )
        })
    }

    /// Copies the database at `db_dir` up: uploads the segment bytes the
    /// newest remote root lacks as new pieces, then writes the next
    /// generation's root create-only, then deletes objects that neither it
    /// nor the root before it names.
    ///
    /// A writer may be running on `db_dir` (see [`Mirror`]): only the bytes
    /// its newest root commits go up, never a transaction in flight, so
    /// what the remote holds is always a prefix of the local log. A segment
    /// that reclamation deletes during the push sends it on to the newer
    /// root that no longer names it. A remote that holds other bytes for a
    /// range than the local log fails with [`RemoteErrorKind::Diverged`];
    /// losing the race for a generation with [`RemoteErrorKind::Conflict`].
    pub fn push(&self, db_dir: impl AsRef<Path>) -> Result<PushStats> {
        self.push_with_progress(db_dir, &mut |_, _| {})
    }

    /// [`Remote::push`], calling `progress(bytes uploaded, bytes to
    /// upload)` once before the first upload and after each request that
    /// sends bytes. Every local range the remote already holds is checked
    /// before anything is uploaded.
    pub fn push_with_progress(
        &self,
        db_dir: impl AsRef<Path>,
        progress: Progress<'_>,
    ) -> Result<PushStats> {
        // Validates the directory and gives the root to copy. A push on its
        // own knows nothing of the remote yet: it checks every piece.
        let reader = Db::open_read_only(db_dir.as_ref())?;
        Ok(PushSession::default().push(self, &reader, progress)?.stats)
    }

    /// Writes `root` create-only.
    fn put_root(&self, root: &RootObject) -> Result<()> {
        let name = layout::root_name(root.generation);
        let opts = PutOptions {
            mode: PutMode::Create,
            ..PutOptions::default()
        };
        let put = self.runtime.block_on(self.store.put_opts(
            &self.path(&name),
            PutPayload::from(root.encode()?),
            opts,
        ));
        match put {
            Ok(_) => Ok(()),
            Err(
                object_store::Error::AlreadyExists { source, .. }
                | object_store::Error::Precondition { source, .. },
            ) => Err(Error::Remote {
                kind: RemoteErrorKind::Conflict,
                what: format!(
                    "{}/{name}: another writer wrote this generation first",
                    self.location
                ),
                source: Some(source),
            }),
            Err(e) => Err(classify(e, format!("write {}/{name}", self.location))),
        }
    }

    /// Uploads `len` bytes of `file` from `offset` as one piece object and
    /// returns their crc32; `sent(n)` after each request, `n` the bytes of
    /// the piece sent so far.
    fn upload_piece(
        &self,
        file: &mut File,
        path: &Path,
        segment: u64,
        offset: u64,
        len: u64,
        sent: &mut dyn FnMut(u64),
    ) -> Result<u32> {
        let what = |name: &str| format!("upload {}/{name}", self.location);
        file.seek(SeekFrom::Start(offset))
            .map_err(|e| Error::io("seek", path, e))?;
        let mut read_chunk = |n: u64| -> Result<Vec<u8>> {
            let mut buf = vec![0u8; n as usize];
            file.read_exact(&mut buf)
                .map_err(|e| Error::io("read", path, e))?;
            Ok(buf)
        };
        if len <= PART_BYTES {
            // One read: the crc32 the name holds is that of the bytes sent.
            let buf = read_chunk(len)?;
            let crc32 = crc32fast::hash(&buf);
            let name = layout::piece_name(segment, &Piece { offset, len, crc32 });
            self.runtime
                .block_on(self.store.put(&self.path(&name), PutPayload::from(buf)))
                .map_err(|e| classify(e, what(&name)))?;
            sent(len);
            return Ok(crc32);
        }
        // The name holds the crc32, so a piece too large to hold in memory
        // is read twice: once for its name, once to send.
        let crc32 = range_crc(file, path, offset, len)?;
        let name = layout::piece_name(segment, &Piece { offset, len, crc32 });
        let target = self.path(&name);
        file.seek(SeekFrom::Start(offset))
            .map_err(|e| Error::io("seek", path, e))?;
        let mut hasher = crc32fast::Hasher::new();
        let mut upload = self
            .runtime
            .block_on(self.store.put_multipart(&target))
            .map_err(|e| classify(e, what(&name)))?;
        let mut done = 0;
        let result = (|| {
            while done < len {
                let n = PART_BYTES.min(len - done);
                let mut buf = vec![0u8; n as usize];
                file.read_exact(&mut buf)
                    .map_err(|e| Error::io("read", path, e))?;
                hasher.update(&buf);
                self.runtime
                    .block_on(upload.put_part(PutPayload::from(buf)))
                    .map_err(|e| classify(e, what(&name)))?;
                done += n;
                sent(done);
            }
            // The bytes went up as read; a file changing under the push (a
            // writer despite the contract) shows here rather than remotely.
            if hasher.finalize() != crc32 {
                return Err(Error::invalid(format!(
                    "push {}: segment changed during the upload; push only a closed database",
                    path.display()
                )));
            }
            self.runtime
                .block_on(upload.complete())
                .map_err(|e| classify(e, what(&name)))?;
            Ok(())
        })();
        if let Err(e) = result {
            // Best effort: the parts of an unfinished upload are garbage.
            let _ = self.runtime.block_on(upload.abort());
            return Err(e);
        }
        Ok(crc32)
    }

    /// Deletes roots older than the newest [`KEEP_ROOTS`], then every piece
    /// that no kept root names. Roots go first, so a piece is deleted only
    /// after the root that dropped it is written and every root that named
    /// it is gone. Roots in `known` (written by this process; a root never
    /// changes) are not read again.
    fn prune(&self, known: &[RootObject]) -> Result<u64> {
        let gens = self.list_roots()?;
        let split = gens.len().saturating_sub(KEEP_ROOTS);
        let (old, kept) = gens.split_at(split);
        let mut named = BTreeSet::new();
        for &g in kept {
            let read;
            let root = match known.iter().find(|r| r.generation == g) {
                Some(r) => r,
                None => {
                    read = self.read_root(g)?;
                    &read
                }
            };
            for seg in &root.segments {
                for p in &seg.pieces {
                    named.insert(layout::piece_name(seg.number, p));
                }
            }
        }
        let mut deleted = 0;
        for &g in old {
            self.delete(&layout::root_name(g))?;
            deleted += 1;
        }
        let strip = if self.location.prefix.is_empty() {
            0
        } else {
            self.location.prefix.len() + 1
        };
        let metas: Vec<_> = self
            .runtime
            .block_on(
                self.store
                    .list(Some(&self.path("segments")))
                    .try_collect::<Vec<_>>(),
            )
            .map_err(|e| classify_list(e, format!("list {}/segments", self.location)))?;
        for m in metas {
            let Some(name) = m.location.as_ref().get(strip..) else {
                continue;
            };
            if name.ends_with(".piece") && !named.contains(name) {
                self.delete(name)?;
                deleted += 1;
            }
        }
        Ok(deleted)
    }

    /// What [`Remote::prune`] deletes when the remote is known to hold
    /// nothing but `kept` and the root `dropped` (just pushed out of the
    /// newest [`KEEP_ROOTS`]) with their pieces: `dropped`'s root, then its
    /// pieces that no kept root names. No listing: the cost is the dropped
    /// root's pieces, not every object of the database.
    fn prune_dropped(&self, dropped: &RootObject, kept: &[RootObject]) -> Result<u64> {
        let named: BTreeSet<String> = kept
            .iter()
            .flat_map(|r| &r.segments)
            .flat_map(|s| s.pieces.iter().map(|p| layout::piece_name(s.number, p)))
            .collect();
        self.delete(&layout::root_name(dropped.generation))?;
        let mut deleted = 1;
        for s in &dropped.segments {
            for p in &s.pieces {
                let name = layout::piece_name(s.number, p);
                if !named.contains(&name) {
                    self.delete(&name)?;
                    deleted += 1;
                }
            }
        }
        Ok(deleted)
    }

    fn delete(&self, name: &str) -> Result<()> {
        match self.runtime.block_on(self.store.delete(&self.path(name))) {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(classify(e, format!("delete {}/{name}", self.location))),
        }
    }

    /// Fetches one piece into `file` at its offset, checking its crc32;
    /// `got(n)` after each request, `n` the bytes of the piece so far.
    fn fetch_piece(
        &self,
        file: &mut File,
        path: &Path,
        segment: u64,
        piece: &Piece,
        got: &mut dyn FnMut(u64),
    ) -> Result<()> {
        let name = layout::piece_name(segment, piece);
        let target = self.path(&name);
        file.seek(SeekFrom::Start(piece.offset))
            .map_err(|e| Error::io("seek", path, e))?;
        let mut hasher = crc32fast::Hasher::new();
        let mut done = 0;
        while done < piece.len {
            let n = PART_BYTES.min(piece.len - done);
            let bytes = self
                .runtime
                .block_on(self.store.get_range(&target, done..done + n))
                .map_err(|e| classify(e, format!("fetch {}/{name}", self.location)))?;
            if bytes.len() as u64 != n {
                return Err(Error::remote(
                    RemoteErrorKind::Corrupt,
                    format!(
                        "{}/{name}: got {} bytes of range {done}..{}",
                        self.location,
                        bytes.len(),
                        done + n
                    ),
                ));
            }
            hasher.update(&bytes);
            file.write_all(&bytes)
                .map_err(|e| Error::io("write", path, e))?;
            self.fetched.fetch_add(n, Ordering::Relaxed);
            done += n;
            got(done);
        }
        let actual = hasher.finalize();
        if actual != piece.crc32 {
            return Err(Error::remote(
                RemoteErrorKind::Corrupt,
                format!(
                    "{}/{name}: crc32 {actual:#010x}, the root records {:#010x}",
                    self.location, piece.crc32
                ),
            ));
        }
        Ok(())
    }

    /// Brings `dir/log/` to exactly the segments of `root`: keeps every
    /// cached range whose crc32 matches, fetches the rest, truncates, and
    /// removes segment files the root does not name. `progress` counts the
    /// root's bytes found cached or fetched against all of them.
    fn sync_into(&self, root: &RootObject, log_dir: &Path, progress: Progress<'_>) -> Result<()> {
        let total = root.total_bytes();
        let mut done = 0;
        progress(0, total);
        fs::create_dir_all(log_dir).map_err(|e| Error::io("create directory", log_dir, e))?;
        let named: BTreeSet<u64> = root.segments.iter().map(|s| s.number).collect();
        for (number, path) in local_segments(log_dir)? {
            if !named.contains(&number) {
                fs::remove_file(&path).map_err(|e| Error::io("remove", &path, e))?;
            }
        }
        for seg in &root.segments {
            let path = crate::log::segment_path(log_dir, seg.number);
            let mut file = OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .open(&path)
                .map_err(|e| Error::io("open", &path, e))?;
            let have = file
                .metadata()
                .map_err(|e| Error::io("stat", &path, e))?
                .len();
            for p in &seg.pieces {
                let cached = p.offset + p.len <= have
                    && range_crc(&mut file, &path, p.offset, p.len)? == p.crc32;
                if !cached {
                    self.fetch_piece(&mut file, &path, seg.number, p, &mut |n| {
                        progress(done + n, total)
                    })?;
                }
                done += p.len;
                progress(done, total);
            }
            file.set_len(seg.len())
                .map_err(|e| Error::io("truncate", &path, e))?;
            file.sync_all().map_err(|e| Error::io("fsync", &path, e))?;
        }
        File::open(log_dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| Error::io("fsync", log_dir, e))?;
        Ok(())
    }

    /// Opens the newest generation read-only through `cache_dir`: pieces
    /// already in the cache (same crc32) are not fetched again, the rest
    /// are, each checked against the crc32 its root records, and the
    /// database is then opened from the cache like a local one (so the
    /// engine checks every entry's crc32 as it reads). One process at a
    /// time may use a cache directory.
    pub fn open_db(&self, cache_dir: impl AsRef<Path>) -> Result<Db> {
        self.open_db_with_progress(cache_dir, &mut |_, _| {})
    }

    /// [`Remote::open_db`], calling `progress(bytes checked or fetched,
    /// bytes of the generation)` as the cache is brought up to date.
    pub fn open_db_with_progress(
        &self,
        cache_dir: impl AsRef<Path>,
        progress: Progress<'_>,
    ) -> Result<Db> {
        let root = self.newest_root_required()?;
        let db_dir = cache_dir.as_ref().join(CACHE_DB_DIR);
        self.sync_into(&root, &db_dir.join("log"), progress)?;
        Db::open_read_only(&db_dir)
    }

    /// Copies the newest generation into `db_dir`, which must not exist or
    /// be an empty directory, and returns that generation. The result is an
    /// ordinary local database a writer can open and continue.
    pub fn pull(&self, db_dir: impl AsRef<Path>) -> Result<u64> {
        Ok(self.pull_with_progress(db_dir, &mut |_, _| {})?.generation)
    }

    /// [`Remote::pull`], calling `progress(bytes fetched, bytes of the
    /// generation)` as pieces arrive, and saying what it copied.
    pub fn pull_with_progress(
        &self,
        db_dir: impl AsRef<Path>,
        progress: Progress<'_>,
    ) -> Result<PullStats> {
        let db_dir = db_dir.as_ref();
        match fs::read_dir(db_dir).map(|mut d| d.next().is_some()) {
            Ok(true) => {
                return Err(Error::invalid(format!(
                    "pull into {}: the directory is not empty",
                    db_dir.display()
                )))
            }
            Ok(false) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::io("read directory", db_dir, e)),
        }
        let root = self.newest_root_required()?;
        let before = self.bytes_fetched();
        let result = self
            .sync_into(&root, &db_dir.join("log"), progress)
            .and_then(|()| Db::open_read_only(db_dir).map(drop));
        if let Err(e) = result {
            // Leave no half-copied database behind.
            let _ = fs::remove_dir_all(db_dir);
            return Err(e);
        }
        Ok(PullStats {
            generation: root.generation,
            latest_step: root.latest_step,
            segments: root.segments.len() as u64,
            bytes_fetched: self.bytes_fetched() - before,
        })
    }
}

/// The `NNNN.seg` files of a log directory by number.
fn local_segments(log_dir: &Path) -> Result<BTreeMap<u64, PathBuf>> {
    let mut out = BTreeMap::new();
    for ent in fs::read_dir(log_dir).map_err(|e| Error::io("read directory", log_dir, e))? {
        let ent = ent.map_err(|e| Error::io("read directory", log_dir, e))?;
        let name = ent.file_name();
        let Some(digits) = name.to_str().and_then(|n| n.strip_suffix(".seg")) else {
            continue;
        };
        if digits.len() == 20 && digits.bytes().all(|b| b.is_ascii_digit()) {
            if let Ok(n) = digits.parse() {
                out.insert(n, ent.path());
            }
        }
    }
    Ok(out)
}

/// crc32 of `len` bytes of `file` from `offset`.
fn range_crc(file: &mut File, path: &Path, offset: u64, len: u64) -> Result<u32> {
    file.seek(SeekFrom::Start(offset))
        .map_err(|e| Error::io("seek", path, e))?;
    let mut hasher = crc32fast::Hasher::new();
    let mut buf = vec![0u8; (1 << 20).min(len as usize)];
    let mut left = len;
    while left > 0 {
        let n = (buf.len() as u64).min(left) as usize;
        file.read_exact(&mut buf[..n])
            .map_err(|e| Error::io("read", path, e))?;
        hasher.update(&buf[..n]);
        left -= n as u64;
    }
    Ok(hasher.finalize())
}

/// A typed error from an `object_store` error, by its variant and, for the
/// generic ones, by what the server or the HTTP client said.
fn classify(e: object_store::Error, what: String) -> Error {
    use object_store::Error as E;
    let kind = match &e {
        E::NotFound { .. } => RemoteErrorKind::NotFound,
        E::AlreadyExists { .. } | E::Precondition { .. } => RemoteErrorKind::Conflict,
        E::PermissionDenied { .. } | E::Unauthenticated { .. } => RemoteErrorKind::Credentials,
        _ => classify_text(&e),
    };
    Error::Remote {
        kind,
        what,
        source: Some(Box::new(e)),
    }
}

/// Like [`classify`], for a list request, where "not found" can only mean
/// the bucket: an empty prefix lists as empty.
fn classify_list(e: object_store::Error, what: String) -> Error {
    let mut err = classify(e, what);
    if let Error::Remote { kind, .. } = &mut err {
        if *kind == RemoteErrorKind::NotFound {
            *kind = RemoteErrorKind::BucketNotFound;
        }
    }
    err
}

fn classify_text(e: &object_store::Error) -> RemoteErrorKind {
    let mut text = String::new();
    let mut cur: Option<&dyn std::error::Error> = Some(e);
    while let Some(c) = cur {
        text.push_str(&format!("{c:?} {c} "));
        cur = c.source();
    }
    if text.contains("NoSuchBucket") {
        RemoteErrorKind::BucketNotFound
    } else if [
        "InvalidAccessKeyId",
        "SignatureDoesNotMatch",
        "AccessDenied",
        "403 Forbidden",
    ]
    .iter()
    .any(|s| text.contains(s))
    {
        RemoteErrorKind::Credentials
    } else if [
        "Connect",
        "connect",
        "Connection refused",
        "timed out",
        "Timeout",
        "dns error",
    ]
    .iter()
    .any(|s| text.contains(s))
    {
        RemoteErrorKind::Unreachable
    } else {
        RemoteErrorKind::Other
    }
}

#[cfg(test)]
mod tests;
