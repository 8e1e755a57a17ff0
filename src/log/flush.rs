//! Writing full buffers of small entries behind the appender's back.
//!
//! A step of many small tensors spends as long in `pwrite` (the kernel
//! copying the buffer into the page cache) as in everything else it does per
//! entry: crc32, header, copy into the buffer. The [`Flusher`] thread writes
//! one full buffer while the appender fills the next, so the two overlap.
//!
//! **Order of storage operations.** At most one buffer is in flight, and the
//! appender waits for it ([`Flusher::wait`]) before any other operation on
//! the storage (the next buffer, a direct write, a sync, a truncate, creating
//! or removing a file). The sequence of storage operations is therefore the
//! one a synchronous appender would issue, which the fault-injection tests
//! rely on; only the thread that issues the writes differs.
//!
//! **Errors.** A failed write is reported by the next `wait`, which the
//! appender turns into poisoning, as it does for its own writes. Nothing is
//! acknowledged in between: a commit syncs, and the sync waits first.

use std::io;
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::Arc;
use std::thread::JoinHandle;

use crate::storage::StorageFile;

/// One buffer to write at an offset of a file.
struct Job {
    file: Arc<dyn StorageFile>,
    offset: u64,
    buf: Vec<u8>,
}

/// The buffer back (to be reused) and how its write went.
type Done = (Vec<u8>, io::Result<()>);

/// The write-behind thread of one appender.
pub(crate) struct Flusher {
    jobs: Option<Sender<Job>>,
    done: Receiver<Done>,
    thread: Option<JoinHandle<()>>,
    /// The segment whose buffer is in flight, if one is.
    in_flight: Option<u64>,
}

impl std::fmt::Debug for Flusher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Flusher")
            .field("in_flight", &self.in_flight)
            .finish_non_exhaustive()
    }
}

impl Flusher {
    /// Starts the thread.
    pub(crate) fn start() -> io::Result<Flusher> {
        let (jobs, job_rx) = channel::<Job>();
        let (done_tx, done) = channel::<Done>();
        let thread = std::thread::Builder::new()
            .name("ckptdb-flush".into())
            .spawn(move || {
                for job in job_rx {
                    let r = job.file.write_at(job.offset, &job.buf);
                    if done_tx.send((job.buf, r)).is_err() {
                        return;
                    }
                }
            })?;
        Ok(Flusher {
            jobs: Some(jobs),
            done,
            thread: Some(thread),
            in_flight: None,
        })
    }

    /// Starts writing `buf` at `offset` of `file` (segment `segment`). The
    /// caller has waited for the previous buffer.
    pub(crate) fn send(
        &mut self,
        segment: u64,
        file: Arc<dyn StorageFile>,
        offset: u64,
        buf: Vec<u8>,
    ) -> io::Result<()> {
        debug_assert!(self.in_flight.is_none());
        let sent = self
            .jobs
            .as_ref()
            .is_some_and(|j| j.send(Job { file, offset, buf }).is_ok());
        if !sent {
            return Err(io::Error::other("the write-behind thread is gone"));
        }
        self.in_flight = Some(segment);
        Ok(())
    }

    /// Waits for the buffer in flight, if any. Returns its segment, the
    /// buffer (emptied, for reuse) and how its write went.
    pub(crate) fn wait(&mut self) -> Option<(u64, Vec<u8>, io::Result<()>)> {
        let segment = self.in_flight.take()?;
        Some(match self.done.recv() {
            Ok((mut buf, r)) => {
                buf.clear();
                (segment, buf, r)
            }
            Err(_) => (
                segment,
                Vec::new(),
                Err(io::Error::other("the write-behind thread is gone")),
            ),
        })
    }
}

impl Drop for Flusher {
    fn drop(&mut self) {
        // Closing the channel ends the thread once the buffer in flight (if
        // any) is written; nothing may write to the file after the appender
        // is gone.
        self.jobs = None;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
