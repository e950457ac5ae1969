//! The runtime's one lock-poisoning policy, the daemon's too: a panic while holding a lock
//! leaves plain data (maps of zones and loaded files) that stays usable, so the guard is
//! taken anyway rather than spreading the panic.

use std::sync::{Mutex, MutexGuard};

/// Locks `m`, recovering the guard from a poisoned lock.
pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
