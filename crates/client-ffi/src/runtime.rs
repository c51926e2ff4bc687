//! The process-wide runtime the devices run on.
//!
//! Foreign executors poll the exported futures on threads of their own
//! choosing, and a device's connection task and listener must keep running
//! between calls; so every device's work runs on one thread of the crate's
//! own: a current-thread tokio runtime with a [`LocalSet`], started on first
//! use. A foreign call sends its work there and awaits the answer on a
//! channel; dropping the call's future (a cancelled coroutine) drops the
//! work at its next await, which the messenger's methods tolerate
//! (`Messenger::next_event` is cancel-safe).

use std::future::Future;
use std::sync::OnceLock;

use tokio::sync::{mpsc, oneshot};
use tokio::task::LocalSet;

use crate::WardError;

/// Work for the runtime thread: spawns its task there.
type Job = Box<dyn FnOnce() + Send>;

/// The runtime thread's queue, or why it could not start.
static JOBS: OnceLock<Result<mpsc::UnboundedSender<Job>, String>> = OnceLock::new();

fn start() -> Result<mpsc::UnboundedSender<Job>, String> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("could not start the tokio runtime: {e}"))?;
    let (jobs, mut queue) = mpsc::unbounded_channel::<Job>();
    std::thread::Builder::new()
        .name("ward-ffi".to_owned())
        .spawn(move || {
            LocalSet::new().block_on(&runtime, async move {
                while let Some(job) = queue.recv().await {
                    job();
                }
            });
        })
        .map_err(|e| format!("could not start the runtime thread: {e}"))?;
    Ok(jobs)
}

fn internal(message: impl Into<String>) -> WardError {
    WardError::Internal {
        detail: message.into(),
    }
}

/// Runs `spawn` on the runtime thread.
pub(crate) fn submit(spawn: impl FnOnce() + Send + 'static) -> Result<(), WardError> {
    JOBS.get_or_init(start)
        .as_ref()
        .map_err(|e| internal(e.clone()))?
        .send(Box::new(spawn))
        .map_err(|_| internal("the runtime thread has stopped"))
}

/// Runs the future `make` returns on the runtime thread and waits for its
/// output. Dropping the returned future drops that one too.
pub(crate) async fn run<F, Fut, T>(make: F) -> Result<T, WardError>
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = Result<T, WardError>> + 'static,
    T: Send + 'static,
{
    let (mut answer, output) = oneshot::channel();
    submit(move || {
        tokio::task::spawn_local(async move {
            let work = make();
            tokio::pin!(work);
            let done = tokio::select! {
                done = &mut work => Some(done),
                () = answer.closed() => None,
            };
            if let Some(done) = done {
                // The caller may have gone meanwhile: nothing to do then.
                let _ = answer.send(done);
            }
        });
    })?;
    output
        .await
        .map_err(|_| internal("the call's task ended without an answer"))?
}

/// [`run`] for work that answers by itself: `make` gets the channel of the
/// answer, so that it can tell whether the caller was still there to take
/// it (`oneshot::Sender::send` gives back what it could not deliver), and
/// can stop when the caller goes (`oneshot::Sender::closed`).
pub(crate) async fn run_answering<F, Fut, T>(make: F) -> Result<T, WardError>
where
    F: FnOnce(oneshot::Sender<Result<T, WardError>>) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + 'static,
    T: Send + 'static,
{
    let (answer, output) = oneshot::channel();
    submit(move || {
        tokio::task::spawn_local(make(answer));
    })?;
    output
        .await
        .map_err(|_| internal("the call's task ended without an answer"))?
}
