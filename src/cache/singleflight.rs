//! Single-flight: concurrent callers for one key share one computation, so
//! 100 identical cold requests cost one SQL statement.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};

use futures::future::{BoxFuture, FutureExt, Shared};

use crate::sync::lock;

type Flight<T> = Shared<BoxFuture<'static, T>>;

pub struct SingleFlight<T: Clone> {
    flights: Arc<Mutex<HashMap<String, Flight<T>>>>,
}

impl<T: Clone> Default for SingleFlight<T> {
    fn default() -> Self {
        Self {
            flights: Arc::default(),
        }
    }
}

impl<T> SingleFlight<T>
where
    T: Clone + Send + Sync + 'static,
{
    /// Runs `work` unless a flight for `key` is already under way, in which
    /// case it awaits that one's result. Returns the result and whether this
    /// caller waited on another's flight.
    ///
    /// The work runs in its own task: a client that disconnects does not
    /// cancel the query the other waiters need. `on_panic` turns a panicked
    /// task into a result so waiters never hang.
    pub async fn run<F>(&self, key: &str, work: F, on_panic: fn() -> T) -> (T, bool)
    where
        F: Future<Output = T> + Send + 'static,
    {
        let (flight, joined) = {
            let mut flights = lock(&self.flights);
            match flights.get(key) {
                Some(flight) => (flight.clone(), true),
                None => {
                    let registry = Arc::clone(&self.flights);
                    let owned_key = key.to_owned();
                    let task = tokio::spawn(async move {
                        let result = work.await;
                        // The work fills the caches before it returns, so a
                        // caller arriving after this removal finds the entry.
                        lock(&registry).remove(&owned_key);
                        result
                    });
                    let registry = Arc::clone(&self.flights);
                    let owned_key = key.to_owned();
                    let flight = async move {
                        task.await.unwrap_or_else(|_| {
                            lock(&registry).remove(&owned_key);
                            on_panic()
                        })
                    }
                    .boxed()
                    .shared();
                    flights.insert(key.to_owned(), flight.clone());
                    (flight, false)
                }
            }
        };
        if joined {
            metrics::gauge!("analytics_singleflight_waiters").increment(1.0);
            let result = flight.await;
            metrics::gauge!("analytics_singleflight_waiters").decrement(1.0);
            (result, true)
        } else {
            (flight.await, false)
        }
    }

    /// Flights under way (tests check that finished flights are removed).
    #[cfg(test)]
    fn in_flight(&self) -> usize {
        lock(&self.flights).len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    #[tokio::test]
    async fn concurrent_callers_share_one_computation() {
        let flights: Arc<SingleFlight<u64>> = Arc::default();
        let runs = Arc::new(AtomicUsize::new(0));
        let mut handles = Vec::new();
        for _ in 0..50 {
            let flights = Arc::clone(&flights);
            let runs = Arc::clone(&runs);
            handles.push(tokio::spawn(async move {
                flights
                    .run(
                        "k",
                        async move {
                            runs.fetch_add(1, Ordering::SeqCst);
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            42
                        },
                        || 0,
                    )
                    .await
                    .0
            }));
        }
        for handle in handles {
            assert_eq!(handle.await.expect("task"), 42);
        }
        assert_eq!(runs.load(Ordering::SeqCst), 1);
        assert_eq!(flights.in_flight(), 0, "finished flights are removed");
    }

    #[tokio::test]
    async fn a_new_flight_starts_after_the_previous_one_finished() {
        let flights: SingleFlight<u64> = SingleFlight::default();
        assert_eq!(flights.run("k", async { 1 }, || 0).await, (1, false));
        assert_eq!(flights.run("k", async { 2 }, || 0).await, (2, false));
    }

    #[tokio::test]
    async fn a_panicking_computation_releases_its_waiters() {
        let flights: SingleFlight<u64> = SingleFlight::default();
        let (value, _) = flights.run("k", async { panic!("boom") }, || 7).await;
        assert_eq!(value, 7);
    }
}
