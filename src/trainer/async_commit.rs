//! The one commit in flight.
//!
//! An asynchronous commit runs on its own thread; the handle of that thread
//! is the in-flight marker. Starting the next commit first joins the previous
//! one, so there is at most one in flight, commits reach the log in the order
//! they were handed over, and a failure is reported by the next call (the
//! failed commit's error is returned and the new commit is not started).
//! A thread per commit costs tens of microseconds, nothing next to writing
//! and syncing a checkpoint, and keeps the state machine trivial.

use std::thread::JoinHandle;

use crate::error::{Error, Result};
use crate::snapshot::StepInfo;

/// The commit in flight, if any.
#[derive(Debug, Default)]
pub(crate) struct InFlight {
    running: Option<(u64, JoinHandle<Result<StepInfo>>)>,
}

impl InFlight {
    /// The step being committed.
    pub(crate) fn step(&self) -> Option<u64> {
        self.running.as_ref().map(|(s, _)| *s)
    }

    /// Waits for the commit in flight; returns what it committed (`None`
    /// when nothing was in flight) or its error.
    pub(crate) fn wait(&mut self) -> Result<Option<StepInfo>> {
        let Some((step, handle)) = self.running.take() else {
            return Ok(None);
        };
        match handle.join() {
            Ok(r) => r.map(Some),
            Err(_) => Err(Error::Panicked {
                what: format!("the background commit of step {step}"),
            }),
        }
    }

    /// Waits for the previous commit, then runs `commit` for `step` on a
    /// new thread. An error of the previous commit is returned instead, and
    /// `commit` is not run.
    pub(crate) fn start(
        &mut self,
        step: u64,
        commit: impl FnOnce() -> Result<StepInfo> + Send + 'static,
    ) -> Result<()> {
        self.wait()?;
        let handle = std::thread::Builder::new()
            .name(format!("ckptdb-commit-{step}"))
            .spawn(commit)
            .map_err(|e| Error::io("spawn commit thread", "", e))?;
        self.running = Some((step, handle));
        Ok(())
    }
}
