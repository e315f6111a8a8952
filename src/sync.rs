//! Locking shared by every module: a mutex whose holder panicked is used
//! as it is, because every map and log guarded here is left consistent by
//! single inserts and removals.

use std::sync::{Mutex, MutexGuard};

/// Locks `mutex`, recovering it if a holder panicked.
pub fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}
