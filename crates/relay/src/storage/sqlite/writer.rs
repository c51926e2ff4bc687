//! The writer thread: group commit (see the parent module's documentation).
//!
//! A request is a closure over the open transaction ([`Tx`]), boxed as a
//! [`Work`] together with the channel its answer goes back on. The thread
//! takes one request, drains whatever else is waiting (up to
//! [`MAX_BATCH_JOBS`] requests or [`MAX_BATCH_BYTES`] bytes of payload), and
//! runs the batch in one `BEGIN IMMEDIATE` transaction, each request inside
//! its own savepoint, with one `COMMIT`; then it answers every caller.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::mpsc::{Receiver, SyncSender, TryRecvError};

use ward_audit::Checkpoint;

use super::{
    Log, StorageConfig, backend, load_log, needs_reload, open_connection, reload, writer_gone,
};
use crate::storage::error::{Result, StorageError};

/// The most requests in one transaction.
pub(super) const MAX_BATCH_JOBS: usize = 512;
/// The writer stops draining requests into a batch once their payloads
/// (ciphertexts, prekeys) add up to this many bytes.
pub(super) const MAX_BATCH_BYTES: usize = 16 * 1024 * 1024;
/// How many requests may wait for the writer; callers beyond block until
/// there is room (back-pressure, and a bound on the memory they pin).
pub(super) const QUEUE_CAPACITY: usize = 1024;

/// A write transaction in progress, as a request sees it.
pub(super) struct Tx<'a> {
    pub(super) log: &'a mut Log,
    pub(super) config: &'a StorageConfig,
}

/// One request to the writer, type-erased.
pub(super) trait Work: Send {
    /// Its payload in bytes, for [`MAX_BATCH_BYTES`].
    fn cost(&self) -> usize;

    /// Runs the request in the open transaction and keeps its result;
    /// returns whether it succeeded (a refusal is rolled back to its
    /// savepoint by the caller).
    fn run(&mut self, tx: &mut Tx<'_>) -> bool;

    /// Answers the caller: the request's own result, or, if the batch's
    /// transaction failed (`failed`), that error.
    fn answer(self: Box<Self>, failed: Option<&StorageError>);
}

/// A request of type `T`: the closure until it runs, then its result.
pub(super) struct Request<T, F> {
    cost: usize,
    f: Option<F>,
    result: Option<Result<T>>,
    reply: SyncSender<Result<T>>,
}

impl<T, F> Request<T, F> {
    pub(super) fn new(cost: usize, f: F, reply: SyncSender<Result<T>>) -> Self {
        Self {
            cost,
            f: Some(f),
            result: None,
            reply,
        }
    }
}

impl<T, F> Work for Request<T, F>
where
    T: Send,
    F: FnOnce(&mut Tx<'_>) -> Result<T> + Send,
{
    fn cost(&self) -> usize {
        self.cost
    }

    fn run(&mut self, tx: &mut Tx<'_>) -> bool {
        let Some(f) = self.f.take() else {
            return false;
        };
        let result = f(tx);
        let ok = result.is_ok();
        self.result = Some(result);
        ok
    }

    fn answer(self: Box<Self>, failed: Option<&StorageError>) {
        let result = match (failed, self.result) {
            (Some(e), _) => Err(copy_error(e)),
            (None, Some(result)) => result,
            (None, None) => Err(backend("the storage writer did not run the request")),
        };
        // The caller waits for this answer; if it is gone, nobody is left
        // to tell.
        let _ = self.reply.send(result);
    }
}

/// The same error for another caller of a failed batch.
fn copy_error(e: &StorageError) -> StorageError {
    match e {
        StorageError::Io(io) => StorageError::Io(std::io::Error::new(io.kind(), io.to_string())),
        StorageError::Backend(text) => StorageError::Backend(text.clone()),
        other => StorageError::Backend(other.to_string()),
    }
}

/// A boxed request, as it travels to the writer.
pub(super) type Job = Box<dyn Work>;

/// The writer thread's state: the writer connection inside the Merkle log.
pub(super) struct Writer {
    path: PathBuf,
    config: StorageConfig,
    /// `None` after a failure that lost the connection or the tree; the
    /// next batch opens the database again.
    log: Option<Log>,
}

impl Writer {
    pub(super) fn new(path: PathBuf, config: StorageConfig, log: Log) -> Self {
        Self {
            path,
            config,
            log: Some(log),
        }
    }

    /// The thread's body: batches until every sender is gone.
    pub(super) fn run(mut self, jobs: Receiver<Job>) {
        let mut batch = VecDeque::with_capacity(MAX_BATCH_JOBS);
        while let Ok(first) = jobs.recv() {
            let mut bytes = first.cost();
            batch.push_back(first);
            while batch.len() < MAX_BATCH_JOBS && bytes < MAX_BATCH_BYTES {
                match jobs.try_recv() {
                    Ok(job) => {
                        bytes = bytes.saturating_add(job.cost());
                        batch.push_back(job);
                    }
                    Err(TryRecvError::Empty | TryRecvError::Disconnected) => break,
                }
            }
            while !batch.is_empty() {
                self.transaction(&mut batch);
            }
        }
    }

    /// Runs requests from the front of `pending` in one transaction and
    /// answers them. Normally that is all of them; if the transaction is
    /// lost half-way (an error that made SQLite roll it back), those that
    /// ran get the error and the rest stay for the next transaction.
    fn transaction(&mut self, pending: &mut VecDeque<Job>) {
        let start = match self.begin() {
            Ok(start) => start,
            Err(e) => {
                self.abort(None);
                for job in pending.drain(..) {
                    job.answer(Some(&e));
                }
                return;
            }
        };
        let mut ran = Vec::with_capacity(pending.len());
        while let Some(mut job) = pending.pop_front() {
            let outcome = self.savepoint(job.as_mut());
            ran.push(job);
            if let Err(e) = outcome {
                self.abort(Some(start));
                for job in ran {
                    job.answer(Some(&e));
                }
                return;
            }
        }
        match self.commit() {
            Ok(()) => {
                for job in ran {
                    job.answer(None);
                }
            }
            Err(e) => {
                self.abort(Some(start));
                for job in ran {
                    job.answer(Some(&e));
                }
            }
        }
    }

    /// `BEGIN IMMEDIATE`, then catches the tree up with another writer's
    /// appends if there were any. Returns the tree's state at the start.
    fn begin(&mut self) -> Result<Checkpoint> {
        if self.log.is_none() {
            let conn = open_connection(&self.path, &self.config, false)?;
            self.log = Some(load_log(conn)?);
        }
        let log = self.log.as_ref().ok_or_else(writer_gone)?;
        log.store()
            .conn()
            .prepare_cached("BEGIN IMMEDIATE")?
            .execute([])?;
        if needs_reload(&self.log)? {
            reload(&mut self.log)?;
        }
        Ok(self.log.as_ref().ok_or_else(writer_gone)?.checkpoint())
    }

    /// Runs one request inside a savepoint. A refused request is rolled
    /// back to its savepoint, together with any leaves the tree absorbed
    /// for it. An error here means the whole transaction is lost.
    fn savepoint(&mut self, job: &mut dyn Work) -> Result<()> {
        let log = self.log.as_mut().ok_or_else(writer_gone)?;
        log.store()
            .conn()
            .prepare_cached("SAVEPOINT request")?
            .execute([])?;
        let mark = log.checkpoint();
        let ok = job.run(&mut Tx {
            log: &mut *log,
            config: &self.config,
        });
        let conn = log.store().conn();
        if conn.is_autocommit() {
            // SQLite rolled the whole transaction back (disk full, I/O
            // error, ...): the batch's earlier requests are gone too.
            return Err(backend(
                "a database error rolled back the transaction of a batch of requests",
            ));
        }
        if ok {
            conn.prepare_cached("RELEASE request")?.execute([])?;
            return Ok(());
        }
        conn.prepare_cached("ROLLBACK TO request")?.execute([])?;
        conn.prepare_cached("RELEASE request")?.execute([])?;
        if log.checkpoint() != mark && log.rollback(mark).is_err() {
            // Rebuild from the tables as the rollback left them.
            reload(&mut self.log)?;
        }
        Ok(())
    }

    fn commit(&mut self) -> Result<()> {
        let log = self.log.as_ref().ok_or_else(writer_gone)?;
        log.store().conn().prepare_cached("COMMIT")?.execute([])?;
        Ok(())
    }

    /// Rolls the open transaction back, if one is open, and brings the
    /// tree back to `start`, the batch's start (or rebuilds it from the
    /// tables). Without `start` the tree was not touched.
    fn abort(&mut self, start: Option<Checkpoint>) {
        if let Some(log) = self.log.as_ref() {
            let conn = log.store().conn();
            if !conn.is_autocommit() {
                // The batch's error is the one to report; a failed rollback
                // shows up as a failed next BEGIN.
                let _ = conn.execute_batch("ROLLBACK");
            }
        }
        let Some(start) = start else {
            return;
        };
        let restored = self
            .log
            .as_mut()
            .is_some_and(|log| log.rollback(start).is_ok());
        if !restored {
            // On failure the slot is left empty and the next batch opens
            // the database again.
            let _ = reload(&mut self.log);
        }
    }
}
