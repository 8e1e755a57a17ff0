//! A live mirror: a running writer's commits copied to a remote as they
//! happen, in the background.
//!
//! The mirror is a thread that pushes (as [`Remote::push`] does) whenever
//! the database's root has moved on since its last push. Its pushes share
//! what they learn: a piece is read back and compared once, not on every
//! push, and the root is read from the mirrored handle itself, so a commit
//! costs the mirror the bytes it added, not a read of the whole database.
//! A push uploads only the bytes the newest local root commits, as
//! immutable pieces, and then that root as a create-only object, so the
//! remote goes from one complete committed state to the next: a reader of
//! the remote never sees a step in part, and a writer killed at any moment
//! leaves the remote at the last root it wrote (always a prefix of the
//! local log, which the next writer continues from without diverging).
//! Several commits made during one push go up together with the next.
//!
//! A push that fails (the object store already retried each request
//! within its budget) is tried again with growing pauses, and its error is
//! what [`Mirror::wait_remote`], [`Mirror::flush`] and [`Mirror::check`]
//! return until a push succeeds: never silently. A remote that diverged
//! from the local log, or whose next generation another writer took, stops
//! the mirror for good.

use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

use super::{PushSession, Remote};
use crate::error::{Error, RemoteErrorKind, Result};
use crate::{Db, StepInfo, StepTx};

/// How often the mirror looks for a new root when nobody calls
/// [`Mirror::notify`].
const POLL: Duration = Duration::from_millis(50);
/// The longest pause between two failing pushes.
const MAX_PAUSE: Duration = Duration::from_secs(5);

/// When a commit made through [`Mirror::commit`] returns.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Durability {
    /// After the local fsync, as [`StepTx::commit`] does; the upload runs
    /// behind the training loop (the default).
    #[default]
    Local,
    /// After the remote root that holds the step is written: a step that
    /// `commit` returned survives the loss of the machine.
    Remote,
}

/// How a [`Mirror`] runs.
#[derive(Debug, Clone, Default)]
pub struct MirrorOptions {
    durability: Durability,
}

impl MirrorOptions {
    /// When [`Mirror::commit`] returns (default [`Durability::Local`]).
    pub fn durability(mut self, durability: Durability) -> Self {
        self.durability = durability;
        self
    }
}

/// A background copy of a database's commits to a [`Remote`]. Dropping it
/// makes one last push of what is committed, then stops (call
/// [`Mirror::flush`] first to see that push's outcome).
pub struct Mirror {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
    db: Arc<Db>,
    durability: Durability,
}

impl std::fmt::Debug for Mirror {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let st = self.shared.lock();
        f.debug_struct("Mirror")
            .field("location", &self.shared.location)
            .field("remote_step", &st.remote_step)
            .field("failed", &st.error.is_some())
            .finish()
    }
}

struct Shared {
    location: String,
    state: Mutex<State>,
    changed: Condvar,
}

#[derive(Default)]
struct State {
    /// Bumped by every call that wants a push round now.
    nudges: u64,
    /// The value of `nudges` when the last finished round began: a round
    /// that began after nudge `n` read the root after it, so when it
    /// succeeds every commit made before nudge `n` is on the remote.
    finished: u64,
    /// Whether any round has finished.
    any_finished: bool,
    /// Local root generation the last successful push copied.
    pushed: Option<u64>,
    /// Newest step the remote holds, as of that push.
    remote_step: Option<u64>,
    /// Why the last finished round failed, if it did.
    error: Option<Arc<Error>>,
    /// The mirror stopped for good (diverged, or lost a generation).
    fatal: bool,
    stop: bool,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Mirror {
    /// Starts mirroring `db` (a writer's handle, or a read-only one, which
    /// the mirror refreshes to see another process's commits) to `remote`.
    /// What is committed already goes up first.
    pub fn start(db: Arc<Db>, remote: Remote) -> Result<Mirror> {
        Mirror::start_with(db, remote, MirrorOptions::default())
    }

    /// [`Mirror::start`] with options.
    pub fn start_with(db: Arc<Db>, remote: Remote, options: MirrorOptions) -> Result<Mirror> {
        let shared = Arc::new(Shared {
            location: remote.location().to_string(),
            state: Mutex::new(State::default()),
            changed: Condvar::new(),
        });
        let s = Arc::clone(&shared);
        let path = db.path().to_owned();
        let mirrored = Arc::clone(&db);
        let thread = std::thread::Builder::new()
            .name("ckptdb-mirror".into())
            .spawn(move || run(&mirrored, &remote, &s))
            .map_err(|e| Error::io("start the mirror thread", path, e))?;
        Ok(Mirror {
            shared,
            thread: Some(thread),
            db,
            durability: options.durability,
        })
    }

    /// Commits `tx` (a transaction of the mirrored database) and starts its
    /// upload at once. Returns as the mirror's [`Durability`] says: after
    /// the local fsync, or once the remote holds the step.
    ///
    /// With [`Durability::Remote`] an error after the local commit is the
    /// upload's (the push failed within its retries, or the mirror
    /// stopped): the step is committed locally and the mirror keeps
    /// trying, as [`Mirror::wait_remote`] says. An error of the local
    /// commit is returned as [`StepTx::commit`] returns it, and nothing
    /// was uploaded. A transaction of another database is refused (and
    /// dropped, so it commits nothing).
    pub fn commit(&self, tx: StepTx<'_>) -> Result<StepInfo> {
        if !std::ptr::eq(tx.db(), Arc::as_ptr(&self.db)) {
            return Err(Error::invalid(format!(
                "commit through the mirror of {}: the transaction is of {}",
                self.db.path().display(),
                tx.db().path().display()
            )));
        }
        let info = tx.commit()?;
        match self.durability {
            Durability::Local => self.notify(),
            Durability::Remote => self.wait_remote(info.step)?,
        }
        Ok(info)
    }

    /// When [`Mirror::commit`] returns.
    pub fn durability(&self) -> Durability {
        self.durability
    }

    /// Wakes the mirror now (it also looks on its own every 50 ms): call it
    /// after a commit to start its upload at once.
    pub fn notify(&self) {
        self.nudge();
    }

    fn nudge(&self) -> u64 {
        let mut st = self.shared.lock();
        st.nudges += 1;
        self.shared.changed.notify_all();
        st.nudges
    }

    /// The newest step the remote holds, as of the mirror's last push.
    pub fn remote_step(&self) -> Option<u64> {
        self.shared.lock().remote_step
    }

    /// The error of the last push if it failed (the mirror tries again), or
    /// of the failure that stopped it; never blocks.
    pub fn check(&self) -> Result<()> {
        match &self.shared.lock().error {
            Some(e) => Err(self.surface(e)),
            None => Ok(()),
        }
    }

    /// Blocks until the remote holds step `step` or a later one, or returns
    /// the error of a push that began after this call and failed. The step
    /// must be committed (call it after the commit returned), or this
    /// waits for its commit.
    pub fn wait_remote(&self, step: u64) -> Result<()> {
        let n = self.nudge();
        let mut st = self.shared.lock();
        loop {
            if st.remote_step.is_some_and(|s| s >= step) {
                return Ok(());
            }
            if let Some(e) = self.failed_since(&st, n) {
                return Err(e);
            }
            st = self.wait(st);
        }
    }

    /// Blocks until everything committed when it was called is on the
    /// remote, or returns the error of the push that tried.
    pub fn flush(&self) -> Result<()> {
        let n = self.nudge();
        let mut st = self.shared.lock();
        loop {
            if let Some(e) = self.failed_since(&st, n) {
                return Err(e);
            }
            if st.any_finished && st.finished >= n {
                return Ok(());
            }
            st = self.wait(st);
        }
    }

    /// The error to return to a call that nudged `n`: a round that began
    /// after it failed, or the mirror stopped.
    fn failed_since(&self, st: &State, n: u64) -> Option<Error> {
        match &st.error {
            Some(e) if st.fatal || (st.any_finished && st.finished >= n) => Some(self.surface(e)),
            _ if st.stop => Some(Error::remote(
                RemoteErrorKind::Other,
                format!("mirror to {} has stopped", self.shared.location),
            )),
            _ => None,
        }
    }

    fn wait<'a>(&self, st: MutexGuard<'a, State>) -> MutexGuard<'a, State> {
        self.shared
            .changed
            .wait(st)
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn surface(&self, e: &Arc<Error>) -> Error {
        let kind = match e.as_ref() {
            Error::Remote { kind, .. } => *kind,
            _ => RemoteErrorKind::Other,
        };
        Error::Remote {
            kind,
            what: format!("mirror to {}: {e}", self.shared.location),
            source: Some(Box::new(Arc::clone(e))),
        }
    }
}

impl Drop for Mirror {
    fn drop(&mut self) {
        self.shared.lock().stop = true;
        self.shared.changed.notify_all();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The mirror thread: a round pushes when the root moved since the last
/// successful push; rounds follow nudges at once, else every `POLL`, and
/// after a failure with growing pauses. Asked to stop, it makes one last
/// round.
fn run(db: &Db, remote: &Remote, shared: &Shared) {
    let mut pause = POLL;
    // One session for the mirror's life: each piece is checked once, and
    // the handle it reads is `db` itself (refreshed when read-only), not a
    // new one per push.
    let mut session = PushSession::default();
    loop {
        let (n, stop, pushed) = {
            let st = shared.lock();
            (st.nudges, st.stop, st.pushed)
        };
        if db.is_read_only() {
            // Another process writes: look for its newer root. A failure
            // here shows up in the push.
            let _ = db.refresh();
        }
        let outcome = if pushed == Some(db.generation()) {
            Ok(None)
        } else {
            session.push(remote, db, &mut |_, _| {}).map(Some)
        };
        let failed = outcome.is_err();
        {
            let mut st = shared.lock();
            st.finished = n;
            st.any_finished = true;
            match outcome {
                Ok(pushed) => {
                    if let Some(p) = pushed {
                        st.pushed = Some(p.local_generation);
                        st.remote_step = p.stats.latest_step;
                    }
                    st.error = None;
                    pause = POLL;
                }
                Err(e) => {
                    st.fatal = matches!(
                        e,
                        Error::Remote {
                            kind: RemoteErrorKind::Diverged | RemoteErrorKind::Conflict,
                            ..
                        }
                    );
                    st.error = Some(Arc::new(e));
                }
            }
            shared.changed.notify_all();
            if stop || st.fatal {
                return;
            }
        }
        let st = shared.lock();
        if st.stop || st.nudges != n {
            continue;
        }
        let wait = if failed { pause } else { POLL };
        drop(shared.changed.wait_timeout(st, wait));
        if failed {
            pause = (pause * 2).min(MAX_PAUSE);
        }
    }
}
