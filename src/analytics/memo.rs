//! The compile memo: a request body seen a moment ago maps straight to its
//! compiled query and cache key, so a repeated dashboard query skips JSON
//! parsing, name resolution, the canonical form and its MD5 (about an
//! eighth of a cache hit's CPU).
//!
//! Why it is safe:
//! - Entries are per tenant (the tenant id is the first level of the map),
//!   and a tenant's scope is fixed for the life of the process (tenants
//!   come from the settings), so one tenant's body never yields another's key.
//! - The model is loaded once per process; a new model means a new process.
//! - The TTL policy reads "today": an entry remembers its day and is
//!   recompiled once the day (UTC) has changed.
//! - Only bodies that compiled are kept; errors are recomputed each time.
//!
//! Bounded: at most [`MAX_BODY_BYTES`] per body and [`PER_TENANT`] bodies per
//! tenant (a full tenant map is emptied, then refilled by what is asked).

use std::sync::{Arc, RwLock};

use bytes::Bytes;
use foldhash::HashMap;

use crate::model::CompiledQuery;

/// Bodies longer than this are compiled every time (dashboards send a few
/// hundred bytes).
pub const MAX_BODY_BYTES: usize = 4_096;
/// Bodies remembered per tenant.
pub const PER_TENANT: usize = 2_048;

/// A compiled body: the query, its key, and the day it was compiled for.
pub struct Memoized {
    pub compiled: Arc<CompiledQuery>,
    pub key: Arc<str>,
    day: i32,
}

/// foldhash, not SipHash: a body is hashed on every hit. Bodies are the
/// client's, so a tenant could aim for collisions; the per-tenant bound
/// caps what that costs (and only that tenant's map).
#[derive(Default)]
pub struct CompileMemo {
    tenants: RwLock<HashMap<String, HashMap<Bytes, Arc<Memoized>>>>,
}

impl CompileMemo {
    /// The compiled form of `body` for `tenant`, if it was compiled on `day`
    /// (days since the common era, UTC).
    pub fn get(&self, tenant: &str, body: &[u8], day: i32) -> Option<Arc<Memoized>> {
        let tenants = self.tenants.read().unwrap_or_else(|poisoned| poisoned.into_inner());
        tenants.get(tenant)?.get(body).filter(|memo| memo.day == day).cloned()
    }

    /// Remembers `body`'s compiled form for `tenant`.
    pub fn put(&self, tenant: &str, body: &Bytes, day: i32, compiled: Arc<CompiledQuery>, key: Arc<str>) {
        if body.len() > MAX_BODY_BYTES {
            return;
        }
        let memo = Arc::new(Memoized { compiled, key, day });
        let mut tenants = self.tenants.write().unwrap_or_else(|poisoned| poisoned.into_inner());
        let bodies = tenants.entry(tenant.to_owned()).or_default();
        if bodies.len() >= PER_TENANT {
            bodies.clear();
        }
        bodies.insert(body.clone(), memo);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{CompileContext, QueryRequest, SemanticModel, StaleWindows, TenantScope, TtlPolicy};

    fn compiled(tenant: &str) -> Arc<CompiledQuery> {
        let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/config/model.toml")).expect("model");
        let model = SemanticModel::from_toml(&text).expect("valid");
        let context = CompileContext {
            ttl: TtlPolicy {
                default_seconds: 300,
                recent_seconds: 60,
                historical_seconds: 600,
                historical_after_days: 30,
            },
            stale: StaleWindows::default(),
            today: chrono::NaiveDate::from_ymd_opt(2026, 11, 23).expect("day"),
        };
        let request = QueryRequest::from_json(br#"{"metrics":["revenue"]}"#).expect("request");
        Arc::new(
            model
                .compile(&context, &TenantScope::unscoped(tenant), &request)
                .expect("compiles"),
        )
    }

    #[test]
    fn a_body_is_remembered_per_tenant_and_per_day() {
        let memo = CompileMemo::default();
        let body = Bytes::from_static(br#"{"metrics":["revenue"]}"#);
        memo.put("a", &body, 10, compiled("a"), Arc::from("key-a"));
        assert_eq!(
            memo.get("a", &body, 10).map(|m| m.key.to_string()),
            Some("key-a".into())
        );
        assert!(memo.get("b", &body, 10).is_none(), "another tenant never gets it");
        assert!(memo.get("a", &body, 11).is_none(), "a new day recompiles");
        assert!(
            memo.get("a", br#"{"metrics": ["revenue"]}"#, 10).is_none(),
            "bytes, not meaning"
        );
    }

    #[test]
    fn it_stays_bounded() {
        let memo = CompileMemo::default();
        let query = compiled("a");
        for i in 0..PER_TENANT + 10 {
            memo.put("a", &Bytes::from(format!("{i}")), 1, Arc::clone(&query), Arc::from("k"));
        }
        let size = memo.tenants.read().expect("lock")["a"].len();
        assert!(size <= PER_TENANT, "{size}");
        memo.put(
            "a",
            &Bytes::from(vec![b'x'; MAX_BODY_BYTES + 1]),
            1,
            query,
            Arc::from("k"),
        );
        assert!(
            memo.get("a", &vec![b'x'; MAX_BODY_BYTES + 1], 1).is_none(),
            "large bodies are not kept"
        );
    }
}
