//! An `ObjectStore` wrapper that injects faults, for tests of the remote
//! code paths that a healthy server never takes: failed, slow, duplicated
//! uploads, and a stale listing (a writer that has not seen the newest root
//! and so races another for a generation).

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use futures_util::stream::{BoxStream, StreamExt};
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
    PutMultipartOptions, PutOptions, PutPayload, PutResult, Result,
};

/// Faults to inject; every knob is off by default.
#[derive(Default)]
struct Knobs {
    /// Puts whose path contains this fail with a generic error.
    fail_puts_containing: Option<String>,
    /// This many upcoming puts fail, then puts succeed again.
    fail_next_puts: u64,
    /// Every put sleeps this long first.
    put_delay: Duration,
    /// Every successful put is sent twice (a retried request that had
    /// succeeded), which an immutable object must tolerate.
    duplicate_puts: bool,
}

/// See the module documentation.
pub struct FaultStore {
    inner: Arc<dyn ObjectStore>,
    knobs: Mutex<Knobs>,
    stale_listing: AtomicBool,
    puts: AtomicU64,
    failed_puts: AtomicU64,
    lists: AtomicU64,
}

impl fmt::Debug for FaultStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "FaultStore({})", self.inner)
    }
}

impl fmt::Display for FaultStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "FaultStore({})", self.inner)
    }
}

impl FaultStore {
    /// Wraps `inner` with every fault off.
    pub fn new(inner: Arc<dyn ObjectStore>) -> FaultStore {
        FaultStore {
            inner,
            knobs: Mutex::default(),
            stale_listing: AtomicBool::new(false),
            puts: AtomicU64::new(0),
            failed_puts: AtomicU64::new(0),
            lists: AtomicU64::new(0),
        }
    }

    fn knobs(&self) -> std::sync::MutexGuard<'_, Knobs> {
        self.knobs.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Fails every put whose path contains `needle` (`None`: none).
    pub fn fail_puts_containing(&self, needle: Option<&str>) {
        self.knobs().fail_puts_containing = needle.map(str::to_owned);
    }

    /// Fails the next `n` puts.
    pub fn fail_next_puts(&self, n: u64) {
        self.knobs().fail_next_puts = n;
    }

    /// Delays every put.
    pub fn put_delay(&self, delay: Duration) {
        self.knobs().put_delay = delay;
    }

    /// Sends every successful put twice.
    pub fn duplicate_puts(&self, on: bool) {
        self.knobs().duplicate_puts = on;
    }

    /// Lists hide every root object, as a writer with a stale view sees.
    pub fn stale_listing(&self, on: bool) {
        self.stale_listing.store(on, Ordering::SeqCst);
    }

    /// Puts attempted so far (multipart uploads count once).
    pub fn puts(&self) -> u64 {
        self.puts.load(Ordering::SeqCst)
    }

    /// List requests so far.
    pub fn lists(&self) -> u64 {
        self.lists.load(Ordering::SeqCst)
    }

    /// Puts failed by injection so far.
    pub fn failed_puts(&self) -> u64 {
        self.failed_puts.load(Ordering::SeqCst)
    }

    /// Decides a put's fate: an injected error, or how long to wait and
    /// whether to send it twice.
    fn before_put(&self, location: &Path) -> Result<(Duration, bool)> {
        self.puts.fetch_add(1, Ordering::SeqCst);
        let mut k = self.knobs();
        let fail = if k.fail_next_puts > 0 {
            k.fail_next_puts -= 1;
            true
        } else {
            k.fail_puts_containing
                .as_deref()
                .is_some_and(|n| location.as_ref().contains(n))
        };
        if fail {
            self.failed_puts.fetch_add(1, Ordering::SeqCst);
            return Err(object_store::Error::Generic {
                store: "FaultStore",
                source: format!("injected failure of put {location}").into(),
            });
        }
        Ok((k.put_delay, k.duplicate_puts))
    }
}

#[async_trait]
impl ObjectStore for FaultStore {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> Result<PutResult> {
        let (delay, twice) = self.before_put(location)?;
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        let result = self
            .inner
            .put_opts(location, payload.clone(), opts.clone())
            .await?;
        if twice && opts.mode == object_store::PutMode::Overwrite {
            self.inner.put_opts(location, payload, opts).await?;
        }
        Ok(result)
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> Result<Box<dyn MultipartUpload>> {
        let (delay, _) = self.before_put(location)?;
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        self.inner.put_multipart_opts(location, opts).await
    }

    async fn get_opts(&self, location: &Path, options: GetOptions) -> Result<GetResult> {
        self.inner.get_opts(location, options).await
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, Result<Path>>,
    ) -> BoxStream<'static, Result<Path>> {
        self.inner.delete_stream(locations)
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, Result<ObjectMeta>> {
        self.lists.fetch_add(1, Ordering::SeqCst);
        let stream = self.inner.list(prefix);
        if self.stale_listing.load(Ordering::SeqCst) {
            stream
                .filter(|m| {
                    let hide = m
                        .as_ref()
                        .is_ok_and(|m| m.location.as_ref().contains("roots/"));
                    std::future::ready(!hide)
                })
                .boxed()
        } else {
            stream
        }
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> Result<ListResult> {
        self.inner.list_with_delimiter(prefix).await
    }

    async fn copy_opts(&self, from: &Path, to: &Path, options: CopyOptions) -> Result<()> {
        self.inner.copy_opts(from, to, options).await
    }
}
