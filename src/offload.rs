//! Which runtime a piece of request work runs on.
//!
//! With `server.runtime = "thread_per_core"` every connection lives on one
//! serving thread, a single-threaded runtime of its own (`http/server.rs`):
//! a cache hit is parsed, looked up and answered there with no hand-off to
//! another thread. Everything that talks to PostgreSQL or Redis goes back
//! to the process's shared, work-stealing runtime through [`shared`]. The
//! reason is where connections live: a pooled connection's I/O and its
//! driver task belong to the runtime that opened it. Opened on a serving
//! thread, a connection the whole process shares would stall whenever that
//! thread is busy with its own clients (a large answer to render, say), and
//! every other thread's queries on it would wait or time out. Opened and
//! driven on the shared runtime, a busy serving thread holds up only its
//! own connections.
//!
//! The serving threads mark themselves with [`serve_here`]. Anywhere else
//! (the shared runtime, the `shared` runtime shape, tests) [`shared`] just
//! awaits the work where it is.

use std::cell::RefCell;
use std::future::Future;

use tokio::runtime::Handle;

thread_local! {
    /// On a serving thread: the shared runtime its backend work goes to.
    static SHARED: RefCell<Option<Handle>> = const { RefCell::new(None) };
}

/// Marks the calling thread as a serving thread whose backend work runs on
/// `shared` (called once, as the thread starts).
pub fn serve_here(shared: Handle) {
    SHARED.with(|cell| *cell.borrow_mut() = Some(shared));
}

/// Runs `work` on the shared runtime when called on a serving thread, else
/// in place.
///
/// `work` keeps running if the caller stops waiting (the client went
/// away): the work offloaded is the cache's flight, whose result other
/// requests may be waiting on, or a short backend call.
pub async fn shared<F>(work: F) -> F::Output
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    let Some(runtime) = SHARED.with(|cell| cell.borrow().clone()) else {
        return work.await;
    };
    match runtime.spawn(work).await {
        Ok(output) => output,
        // A panic in the work surfaces where it would have without the
        // hand-off (the request's CatchPanic turns it into a 500).
        Err(error) if error.is_panic() => std::panic::resume_unwind(error.into_panic()),
        // Only while the process shuts down: the shared runtime is gone,
        // and so is every connection the work would have used.
        Err(_) => panic!("the shared runtime shut down before this request's backend work ran"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs `work` on a thread of its own with a single-threaded runtime,
    /// as a serving thread is (once it calls `serve_here`).
    async fn on_own_thread<T, F>(work: impl FnOnce() -> F + Send + 'static) -> T
    where
        F: Future<Output = T>,
        T: Send + 'static,
    {
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(work())
        });
        tokio::task::spawn_blocking(move || thread.join().unwrap())
            .await
            .unwrap()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn on_a_serving_thread_the_work_runs_on_the_shared_runtime() {
        let shared_runtime = Handle::current();
        let shared_thread = tokio::task::spawn(async { std::thread::current().id() }).await.unwrap();
        let (here, before, after) = on_own_thread(move || async move {
            let here = std::thread::current().id();
            let before = shared(async { std::thread::current().id() }).await;
            serve_here(shared_runtime);
            let after = shared(async { std::thread::current().id() }).await;
            (here, before, after)
        })
        .await;
        assert_eq!(before, here, "not yet marked: the work runs in place");
        assert_eq!(
            after, shared_thread,
            "marked: the work runs on the shared runtime's worker"
        );
    }

    #[tokio::test]
    async fn a_panic_in_offloaded_work_reaches_the_caller() {
        let shared_runtime = Handle::current();
        let caught = on_own_thread(move || async move {
            serve_here(shared_runtime);
            let work = std::panic::AssertUnwindSafe(shared(async { panic!("boom") }));
            futures::FutureExt::catch_unwind(work).await.is_err()
        })
        .await;
        assert!(caught);
    }
}
