//! Protects PostgreSQL from us, and requests from waiting on it:
//!
//! - **Admission.** At most `max_in_flight` statements run at once and at
//!   most `max_queued` wait for a turn (for at most `acquire_timeout_ms`);
//!   over that, a request is refused at once (`Overloaded`, a 503 with
//!   `Retry-After`) instead of queueing until it times out. One tenant may
//!   hold at most `max_per_tenant` of the running and waiting places, so its
//!   burst cannot take every slot.
//! - **A breaker.** After consecutive failures to reach the database, every
//!   statement is refused at once (no acquire-timeout tax per request) while
//!   a background probe connects every `breaker_probe_interval_ms`; the first
//!   answer closes it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sqlx::postgres::PgConnectOptions;
use sqlx::{ConnectOptions, Connection};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::DbError;
use crate::breaker::{Breaker, Transition};
use crate::config::DatabaseSettings;
use crate::sync::lock;

/// The admission and breaker state of one database.
pub struct Guard {
    breaker: Breaker,
    connect: PgConnectOptions,
    probe_interval: Duration,
    slots: Arc<Semaphore>,
    waiting: AtomicUsize,
    max_waiting: usize,
    wait_limit: Duration,
    /// Tenant -> running and waiting statements.
    per_tenant: Mutex<HashMap<String, usize>>,
    max_per_tenant: usize,
    /// The replica's name (`[databases.<name>]`); `None` for the primary,
    /// whose breaker alone sets `analytics_db_breaker_open`.
    replica: Option<String>,
}

/// A statement's place: released (slot and tenant share) when dropped.
pub struct Admission {
    guard: Arc<Guard>,
    tenant: String,
    _slot: OwnedSemaphorePermit,
}

impl Drop for Admission {
    fn drop(&mut self) {
        self.guard.leave(&self.tenant);
    }
}

impl Guard {
    /// `tenants` is how many tenants can send queries: with one, it may use
    /// every place; with more, by default each holds at most three quarters.
    pub fn new(settings: &DatabaseSettings, connect: PgConnectOptions, tenants: usize) -> Arc<Self> {
        Self::build(settings, connect, tenants, None)
    }

    /// The guard of read replica `name`: its own places and breaker, so its
    /// failures never refuse the primary's statements.
    pub fn for_replica(
        name: &str,
        settings: &DatabaseSettings,
        connect: PgConnectOptions,
        tenants: usize,
    ) -> Arc<Self> {
        Self::build(settings, connect, tenants, Some(name.to_owned()))
    }

    fn build(
        settings: &DatabaseSettings,
        connect: PgConnectOptions,
        tenants: usize,
        replica: Option<String>,
    ) -> Arc<Self> {
        let in_flight = match settings.max_in_flight {
            0 => settings.max_connections.max(1) as usize,
            n => n as usize,
        };
        let capacity = in_flight + settings.max_queued as usize;
        let max_per_tenant = match settings.max_per_tenant {
            0 if tenants <= 1 => capacity,
            // Three quarters of the places: a burst leaves room for others.
            0 => (capacity * 3).div_ceil(4).max(1),
            n => n as usize,
        };
        if replica.is_none() {
            metrics::gauge!("analytics_db_breaker_open").set(0.0);
        }
        Arc::new(Self {
            breaker: Breaker::new(
                settings.breaker_failure_threshold,
                Duration::from_millis(settings.breaker_window_ms),
            ),
            connect,
            probe_interval: Duration::from_millis(settings.breaker_probe_interval_ms.max(10)),
            slots: Arc::new(Semaphore::new(in_flight)),
            waiting: AtomicUsize::new(0),
            max_waiting: settings.max_queued as usize,
            wait_limit: Duration::from_millis(settings.acquire_timeout_ms),
            per_tenant: Mutex::default(),
            max_per_tenant,
            replica,
        })
    }

    /// Whether the breaker has the database down.
    pub fn is_open(&self) -> bool {
        self.breaker.is_open()
    }

    /// A place for one statement of `tenant`, or an immediate refusal.
    pub async fn admit(self: &Arc<Self>, tenant: &str) -> Result<Admission, DbError> {
        if self.breaker.is_open() {
            return Err(DbError::Unavailable(
                "the database was unreachable; refusing at once while a probe waits for it".into(),
            ));
        }
        {
            let mut tenants = lock(&self.per_tenant);
            let held = tenants.entry(tenant.to_owned()).or_insert(0);
            if *held >= self.max_per_tenant {
                return Err(self.overloaded("this tenant's share of the database is in use"));
            }
            *held += 1;
        }
        let slot = match Arc::clone(&self.slots).try_acquire_owned() {
            Ok(slot) => slot,
            Err(_) if self.waiting.fetch_add(1, Ordering::AcqRel) >= self.max_waiting => {
                self.waiting.fetch_sub(1, Ordering::AcqRel);
                self.leave(tenant);
                return Err(self.overloaded("every statement slot is taken and the queue is full"));
            }
            Err(_) => {
                let waited = tokio::time::timeout(self.wait_limit, Arc::clone(&self.slots).acquire_owned()).await;
                self.waiting.fetch_sub(1, Ordering::AcqRel);
                match waited {
                    Ok(Ok(slot)) => slot,
                    _ => {
                        self.leave(tenant);
                        return Err(self.overloaded("no statement slot freed up in time"));
                    }
                }
            }
        };
        Ok(Admission {
            guard: Arc::clone(self),
            tenant: tenant.to_owned(),
            _slot: slot,
        })
    }

    fn overloaded(&self, why: &str) -> DbError {
        metrics::counter!("analytics_db_shed_total").increment(1);
        DbError::Overloaded(why.to_owned())
    }

    fn leave(&self, tenant: &str) {
        let mut tenants = lock(&self.per_tenant);
        if let Some(held) = tenants.get_mut(tenant) {
            *held = held.saturating_sub(1);
            if *held == 0 {
                tenants.remove(tenant);
            }
        }
    }

    /// Feeds a statement's outcome to the breaker.
    pub fn record<T>(self: &Arc<Self>, outcome: &Result<T, DbError>) {
        match outcome {
            Err(DbError::Unavailable(cause)) => {
                if self.breaker.record_failure() == Transition::Opened {
                    if self.replica.is_none() {
                        metrics::gauge!("analytics_db_breaker_open").set(1.0);
                    }
                    let database = self.replica.as_deref().unwrap_or("primary");
                    tracing::warn!(%cause, database, "database unreachable; breaker opened, refusing at once while probing");
                    let guard = Arc::clone(self);
                    tokio::spawn(async move { guard.probe_until_healthy().await });
                }
            }
            // Anything else means the database answered.
            _ => self.breaker.record_success(),
        }
    }

    /// While open: connect and `SELECT 1` every interval; the first answer closes it.
    async fn probe_until_healthy(self: Arc<Self>) {
        loop {
            tokio::time::sleep(self.probe_interval).await;
            let limit = self.probe_interval.max(Duration::from_millis(500));
            let answered = tokio::time::timeout(limit, async {
                let mut connection = self.connect.connect().await?;
                sqlx::query("SELECT 1").execute(&mut connection).await?;
                connection.close().await
            })
            .await;
            if matches!(answered, Ok(Ok(()))) {
                self.breaker.close();
                if self.replica.is_none() {
                    metrics::gauge!("analytics_db_breaker_open").set(0.0);
                }
                let database = self.replica.as_deref().unwrap_or("primary");
                tracing::info!(database, "database reachable again; breaker closed");
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn guard(in_flight: u32, queued: u32, per_tenant: u32) -> Arc<Guard> {
        let settings = DatabaseSettings {
            max_in_flight: in_flight,
            max_queued: queued,
            max_per_tenant: per_tenant,
            acquire_timeout_ms: 50,
            ..DatabaseSettings::default()
        };
        Guard::new(&settings, PgConnectOptions::new(), 2)
    }

    #[tokio::test]
    async fn over_the_slots_and_the_queue_requests_are_refused_at_once() {
        let guard = guard(1, 1, 10);
        let running = guard.admit("a").await.expect("first runs");
        let queued = {
            let guard = Arc::clone(&guard);
            tokio::spawn(async move { guard.admit("a").await.map(drop) })
        };
        tokio::time::sleep(Duration::from_millis(10)).await;
        let started = std::time::Instant::now();
        assert!(matches!(guard.admit("b").await, Err(DbError::Overloaded(_))));
        assert!(started.elapsed() < Duration::from_millis(40), "refused without waiting");
        drop(running);
        assert!(
            queued.await.expect("task").is_ok(),
            "the queued one ran when a slot freed"
        );
    }

    #[tokio::test]
    async fn one_tenant_cannot_take_every_place() {
        let guard = guard(2, 2, 2);
        let _a1 = guard.admit("a").await.expect("a1");
        let _a2 = guard.admit("a").await.expect("a2");
        assert!(matches!(guard.admit("a").await, Err(DbError::Overloaded(_))));
        let b = tokio::time::timeout(Duration::from_millis(100), guard.admit("b")).await;
        assert!(
            matches!(b, Ok(Err(DbError::Overloaded(_)))),
            "b waits for a slot, then times out"
        );
        drop(_a1);
        assert!(guard.admit("b").await.is_ok(), "b gets the freed slot");
    }
}
