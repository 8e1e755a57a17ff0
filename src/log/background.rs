//! The log writer's background thread.
//!
//! Copying bytes into the page cache (`pwrite`) costs as much as everything
//! else an append does, so the log writer hands two kinds of writes to a
//! thread of its own and goes on:
//!
//! * a full buffer of small entries (a step of many small tensors), written
//!   while the next buffer fills;
//! * a batch of a replay table's full pages (hundreds of KiB each), queued
//!   as entries whose payload is shared (`LogWriter::append_shared`) and
//!   handed over together (`LogWriter::dispatch`), written while the table
//!   fills the next batch.
//!
//! On a machine with a second core the copy then overlaps the work that
//! produces the next bytes.
//!
//! # One job in flight, waited for by the next user of the writer
//!
//! A job is the pieces (headers, payloads, padding) of consecutive entries
//! of one segment, written in order. At most one job is in flight, and the
//! log writer waits for it (`LogWriter::settle`) before it does anything
//! else, and so does whoever takes the database's writer
//! (`Db::lock_writer`). So:
//!
//! * The storage sees the same operations in the same order in every run:
//!   the seam's operation count, and with it every crash-test
//!   enumeration, stays deterministic.
//! * Nothing reads, syncs or truncates the log while a write into it is
//!   unfinished, and no map covers bytes of an unfinished write: a commit's
//!   `fdatasync` covers the pages, a rollback cannot race them, and a map
//!   never covers bytes the file does not hold yet. (A replay table maps
//!   the pages of a batch once it has waited for that batch, which may be
//!   after it handed over the next one: the map ends before the next
//!   batch's bytes.)
//! * A failed write is reported by the next operation: waiting for it
//!   poisons the writer, as a failed write in place would have. The call
//!   that queued the entries has returned by then; they are detached pages,
//!   which no commit names until a later operation (the one that fails)
//!   records them.
//!
//! Page payloads are shared (`Arc`), not moved: the table keeps reading a
//! page's rows from the same buffer while it is written. An owned buffer
//! comes back with the job's result, for the next one to fill.

use std::io;
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::Arc;
use std::thread::JoinHandle;

use crate::storage::StorageFile;

/// Bytes to write at `offset` of `file`.
#[derive(Debug)]
pub(crate) struct Piece {
    pub file: Arc<dyn StorageFile>,
    pub offset: u64,
    pub bytes: PieceBytes,
}

/// A piece's bytes: a copy (entry headers and padding) or a shared payload.
#[derive(Debug)]
pub(crate) enum PieceBytes {
    Owned(Vec<u8>),
    Shared(Arc<Vec<u8>>),
}

impl PieceBytes {
    pub(crate) fn len(&self) -> usize {
        self.as_slice().len()
    }

    fn as_slice(&self) -> &[u8] {
        match self {
            PieceBytes::Owned(v) => v,
            PieceBytes::Shared(v) => v,
        }
    }
}

/// Writes `pieces` in order, each run of contiguous pieces of one file in
/// one call; stops at the first error.
fn write_all(pieces: &[Piece]) -> io::Result<()> {
    let mut i = 0;
    while i < pieces.len() {
        let first = &pieces[i];
        let mut end = first.offset + first.bytes.len() as u64;
        let mut j = i + 1;
        while j < pieces.len()
            && Arc::ptr_eq(&pieces[j].file, &first.file)
            && pieces[j].offset == end
        {
            end += pieces[j].bytes.len() as u64;
            j += 1;
        }
        let bufs: Vec<&[u8]> = pieces[i..j].iter().map(|p| p.bytes.as_slice()).collect();
        first.file.write_all_vectored_at(first.offset, &bufs)?;
        i = j;
    }
    Ok(())
}

/// How a job went, and its largest owned buffer, emptied, for reuse.
type Done = (io::Result<()>, Vec<u8>);

/// The thread and its one write in flight.
pub(crate) struct Background {
    jobs: Option<Sender<Vec<Piece>>>,
    done: Receiver<Done>,
    thread: Option<JoinHandle<()>>,
    in_flight: bool,
}

impl std::fmt::Debug for Background {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Background")
            .field("in_flight", &self.in_flight)
            .finish_non_exhaustive()
    }
}

impl Background {
    /// Starts the thread.
    pub(crate) fn start() -> io::Result<Background> {
        let (jobs, job_rx) = channel::<Vec<Piece>>();
        let (done_tx, done) = channel();
        let thread = std::thread::Builder::new()
            .name("ckptdb-log-writer".into())
            .spawn(move || {
                for job in job_rx {
                    let r = write_all(&job);
                    // The pieces are dropped before the result is sent, so
                    // that the waiter may take shared buffers back
                    // (`Arc::try_unwrap`).
                    let mut back = job
                        .into_iter()
                        .filter_map(|p| match p.bytes {
                            PieceBytes::Owned(v) => Some(v),
                            PieceBytes::Shared(_) => None,
                        })
                        .max_by_key(Vec::capacity)
                        .unwrap_or_default();
                    back.clear();
                    if done_tx.send((r, back)).is_err() {
                        break;
                    }
                }
            })?;
        Ok(Background {
            jobs: Some(jobs),
            done,
            thread: Some(thread),
            in_flight: false,
        })
    }

    /// Starts writing `pieces`, in order. The caller has waited for the
    /// previous job.
    pub(crate) fn write(&mut self, pieces: Vec<Piece>) -> io::Result<()> {
        debug_assert!(!self.in_flight);
        match self.jobs.as_ref().map(|j| j.send(pieces)) {
            Some(Ok(())) => {
                self.in_flight = true;
                Ok(())
            }
            _ => Err(stopped()),
        }
    }

    /// Waits for the job in flight; `None` when there is none.
    pub(crate) fn wait(&mut self) -> Option<Done> {
        if !std::mem::take(&mut self.in_flight) {
            return None;
        }
        Some(
            self.done
                .recv()
                .unwrap_or_else(|_| (Err(stopped()), Vec::new())),
        )
    }
}

fn stopped() -> io::Error {
    io::Error::other("the log's background writer stopped")
}

impl Drop for Background {
    /// Lets the write in flight finish (its result is lost: nothing names a
    /// page that was never waited for) and stops the thread.
    fn drop(&mut self) {
        self.jobs = None;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
