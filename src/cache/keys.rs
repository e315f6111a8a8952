//! The key space: the one owner of every Redis key (and channel) format this
//! server uses, and of the rule for which keys an operation may touch. Query
//! entries live under `{prefix}:query:{tenant}:{dataset}:{hash}`. Outside the
//! cache namespace, so that clearing the cache never touches them:
//! rate-limit state (`ratelimit:{prefix}:{tenant}`), version counters
//! (`version:{prefix}:{dataset}:...`) and leases (`lease:{entry key}`).
//!
//! In a Redis Cluster (`redis.mode = "cluster"`) the dataset segment of
//! entry and counter keys is a hash tag, `{dataset}`
//! (`analytics:query:acme:{sales}:<md5>`, `version:analytics:{sales}:gen`):
//! an entry and its counters are read in one pipeline or script, which a
//! cluster runs only on keys of one slot. Other modes keep the plain names.
//!
//! Every pattern an operator or tenant sends is confined to a namespace that
//! starts with a literal `{prefix}:`, so no pattern can reach other data in a
//! shared Redis.

use crate::model::freshness::{Bucket, Slot, Tag};

/// Whose entries an operation acts for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Owner<'a> {
    /// The admin token: any tenant's entries.
    Admin,
    /// A tenant key: its own namespace only.
    Tenant(&'a str),
}

/// The entries an operation covers: every entry, or narrowed to a tenant
/// and/or a dataset. Built only through [`KeySpace::scope`], which checks it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scope {
    tenant: Option<String>,
    dataset: Option<String>,
}

/// Why a scope was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScopeError {
    #[error("a tenant key acts on its own namespace only")]
    ForeignTenant,
    #[error("`{0}` is not a tenant id")]
    InvalidTenant(String),
    #[error("`{0}` is not a dataset name")]
    InvalidDataset(String),
    #[error("key must start with `{namespace}`: keys outside the caller's namespace cannot be deleted")]
    OutsideNamespace { namespace: String },
}

/// Key formats for one cache prefix; built once at start-up.
#[derive(Debug, Clone)]
pub struct KeySpace {
    prefix: String,
    /// Cluster mode: the dataset segment is a hash tag.
    hash_tags: bool,
}

impl KeySpace {
    /// `None` when `prefix` could escape confinement (glob or separator characters).
    pub fn new(prefix: &str) -> Option<Self> {
        is_safe_segment(prefix).then(|| Self {
            prefix: prefix.to_owned(),
            hash_tags: false,
        })
    }

    /// Cluster mode: `{dataset}` hash tags put an entry and its version
    /// counters in one slot.
    pub fn with_hash_tags(mut self, hash_tags: bool) -> Self {
        self.hash_tags = hash_tags;
        self
    }

    /// The dataset segment of a key: `{dataset}` in cluster mode.
    fn ds(&self, dataset: &str) -> String {
        if self.hash_tags {
            format!("{{{dataset}}}")
        } else {
            dataset.to_owned()
        }
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The key of one query entry. `tenant` and `dataset` are validated names
    /// (tenant ids at start-up, datasets by the model); `hash` is hex.
    pub fn query_key(&self, tenant: &str, dataset: &str, hash: &str) -> String {
        format!("{}:query:{tenant}:{}:{hash}", self.prefix, self.ds(dataset))
    }

    /// The key of a tenant's shared rate-limit state.
    pub fn rate_limit_key(&self, tenant: &str) -> String {
        format!("ratelimit:{}:{tenant}", self.prefix)
    }

    /// The version counter of one tag of `dataset`.
    pub fn version_key(&self, dataset: &str, tag: &Tag) -> String {
        let bucket = match tag.bucket {
            Bucket::All => "all".to_owned(),
            Bucket::Year(year) => format!("y{year}"),
            Bucket::Month(year, month) => format!("m{year}-{month:02}"),
        };
        let slot = match &tag.slot {
            Slot::Any => "*".to_owned(),
            Slot::Column(dimension) => format!("@{dimension}"),
            Slot::Value(dimension, value) => format!("{dimension}={value}"),
        };
        format!("version:{}:{}:{bucket}:{slot}", self.prefix, self.ds(dataset))
    }

    /// The counter bumped when everything of `dataset` changes.
    pub fn generation_key(&self, dataset: &str) -> String {
        format!("version:{}:{}:gen", self.prefix, self.ds(dataset))
    }

    /// The counter bumped when everything of `tenant`'s entries of `dataset` changes.
    pub fn tenant_generation_key(&self, dataset: &str, tenant: &str) -> String {
        format!("version:{}:{}:gen:{tenant}", self.prefix, self.ds(dataset))
    }

    /// The cross-instance lease on computing one entry.
    pub fn lease_key(&self, entry_key: &str) -> String {
        format!("lease:{entry_key}")
    }

    /// The pub/sub channel on which instances tell each other's L1 what to drop.
    pub fn invalidation_channel(&self) -> String {
        format!("invalidations:{}", self.prefix)
    }

    /// Everything this server stores in the cache: `{prefix}:`.
    fn namespace(&self) -> String {
        format!("{}:", self.prefix)
    }

    /// One tenant's entries: `{prefix}:query:{tenant}:`.
    fn tenant_namespace(&self, tenant: &str) -> String {
        format!("{}:query:{tenant}:", self.prefix)
    }

    /// The namespace `owner` may act in.
    fn owner_namespace(&self, owner: Owner<'_>) -> String {
        match owner {
            Owner::Admin => self.namespace(),
            Owner::Tenant(tenant) => self.tenant_namespace(tenant),
        }
    }

    /// The entries `owner` asks for: a tenant may name only itself; the admin
    /// may narrow to any tenant. Both may narrow to a dataset.
    pub fn scope(&self, owner: Owner<'_>, tenant: Option<&str>, dataset: Option<&str>) -> Result<Scope, ScopeError> {
        let tenant = match (owner, tenant) {
            (Owner::Tenant(own), Some(asked)) if asked != own => return Err(ScopeError::ForeignTenant),
            (Owner::Tenant(own), _) => Some(own),
            (Owner::Admin, asked) => asked,
        };
        if let Some(tenant) = tenant.filter(|t| !is_safe_segment(t)) {
            return Err(ScopeError::InvalidTenant(tenant.to_owned()));
        }
        if let Some(dataset) = dataset.filter(|d| !is_safe_segment(d)) {
            return Err(ScopeError::InvalidDataset(dataset.to_owned()));
        }
        Ok(Scope {
            tenant: tenant.map(str::to_owned),
            dataset: dataset.map(str::to_owned),
        })
    }

    /// The SCAN pattern for `scope`, with the operator's `pattern` confined
    /// inside it: `*` means every entry of the scope, never other keys.
    pub fn pattern(&self, scope: &Scope, pattern: Option<&str>) -> String {
        let namespace = match (&scope.tenant, &scope.dataset) {
            (Some(tenant), Some(dataset)) => format!("{}{}:", self.tenant_namespace(tenant), self.ds(dataset)),
            (Some(tenant), None) => self.tenant_namespace(tenant),
            // Datasets are safe segments (no glob characters), so the literal
            // `{prefix}:` still bounds what this can match.
            (None, Some(dataset)) => format!("{}:query:*:{}:", self.prefix, self.ds(dataset)),
            (None, None) => self.namespace(),
        };
        confine(&namespace, pattern)
    }

    /// Checks that `owner` may delete `key`.
    pub fn check_delete(&self, owner: Owner<'_>, key: &str) -> Result<(), ScopeError> {
        let namespace = self.owner_namespace(owner);
        if within(&namespace, key) {
            Ok(())
        } else {
            Err(ScopeError::OutsideNamespace { namespace })
        }
    }
}

/// Confines a client-supplied SCAN pattern to `namespace`. A pattern that
/// already starts with the namespace literally is kept; anything else is
/// appended to it. Either way the result starts with the namespace, so it can
/// only match keys inside it: `*` becomes `analytics:*`, never all of Redis.
fn confine(namespace: &str, pattern: Option<&str>) -> String {
    match pattern.map(str::trim).filter(|p| !p.is_empty()) {
        None => format!("{namespace}*"),
        Some(p) if p.starts_with(namespace) => p.to_owned(),
        Some(p) => format!("{namespace}{p}"),
    }
}

/// Whether `key` lies inside `namespace` (for single-key deletes).
fn within(namespace: &str, key: &str) -> bool {
    key.starts_with(namespace) && key.len() > namespace.len()
}

/// Redis-style glob match, for applying a clear pattern to L1 keys.
pub fn glob_matches(pattern: &str, key: &str) -> bool {
    glob::Pattern::new(pattern)
        .map(|p| {
            p.matches_with(
                key,
                glob::MatchOptions {
                    case_sensitive: true,
                    require_literal_separator: false,
                    require_literal_leading_dot: false,
                },
            )
        })
        .unwrap_or(false)
}

/// Names that go into keys (prefix, tenant ids, datasets) must hold no glob
/// or separator characters, or confinement could be escaped.
pub fn is_safe_segment(segment: &str) -> bool {
    !segment.is_empty()
        && segment.len() <= 64
        && segment
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys() -> KeySpace {
        KeySpace::new("analytics").expect("safe prefix")
    }

    fn everything() -> Scope {
        keys().scope(Owner::Admin, None, None).expect("admin scope")
    }

    #[test]
    fn star_is_confined_to_the_namespace() {
        assert_eq!(keys().pattern(&everything(), Some("*")), "analytics:*");
        assert_eq!(keys().pattern(&everything(), None), "analytics:*");
        assert_eq!(keys().pattern(&everything(), Some("  ")), "analytics:*");
    }

    #[test]
    fn patterns_inside_the_namespace_are_kept() {
        assert_eq!(
            keys().pattern(&everything(), Some("analytics:query:*:sales:*")),
            "analytics:query:*:sales:*"
        );
    }

    #[test]
    fn patterns_outside_the_namespace_are_nested_inside_it() {
        assert_eq!(keys().pattern(&everything(), Some("session:*")), "analytics:session:*");
        assert_eq!(
            keys().pattern(&everything(), Some("analytic?:*")),
            "analytics:analytic?:*"
        );
        let tenant_a = keys().scope(Owner::Tenant("a"), None, None).expect("own scope");
        assert_eq!(
            keys().pattern(&tenant_a, Some("analytics:query:b:*")),
            "analytics:query:a:analytics:query:b:*"
        );
    }

    #[test]
    fn every_confined_pattern_only_matches_namespace_keys() {
        for pattern in ["*", "?*", "[a-z]*", "analytics*", "*:*", "\\*", "analytics:*"] {
            let confined = keys().pattern(&everything(), Some(pattern));
            assert!(!glob_matches(&confined, "session:42"), "{pattern} escaped");
            assert!(!glob_matches(&confined, "analyticsX:1"), "{pattern} escaped");
            assert!(
                !glob_matches(&confined, &keys().rate_limit_key("a")),
                "{pattern} reached rate-limit state"
            );
        }
    }

    #[test]
    fn scopes_narrow_to_tenant_and_dataset() {
        let k = keys();
        let key = k.query_key("acme", "sales", "abc");
        assert_eq!(key, "analytics:query:acme:sales:abc");
        let cases = [
            (
                Owner::Admin,
                Some("acme"),
                Some("sales"),
                "analytics:query:acme:sales:*",
                true,
            ),
            (Owner::Admin, Some("other"), None, "analytics:query:other:*", false),
            (Owner::Admin, None, Some("sales"), "analytics:query:*:sales:*", true),
            (Owner::Tenant("acme"), None, None, "analytics:query:acme:*", true),
        ];
        for (owner, tenant, dataset, expected, matches) in cases {
            let pattern = k.pattern(&k.scope(owner, tenant, dataset).expect("scope"), None);
            assert_eq!(pattern, expected);
            assert_eq!(glob_matches(&pattern, &key), matches, "{pattern}");
        }
    }

    #[test]
    fn a_tenant_cannot_scope_another_tenant_or_escape_with_names() {
        let k = keys();
        assert_eq!(
            k.scope(Owner::Tenant("a"), Some("b"), None),
            Err(ScopeError::ForeignTenant)
        );
        assert!(k.scope(Owner::Tenant("a"), Some("a"), None).is_ok());
        assert!(matches!(
            k.scope(Owner::Admin, Some("*"), None),
            Err(ScopeError::InvalidTenant(_))
        ));
        assert!(matches!(
            k.scope(Owner::Admin, None, Some("s*")),
            Err(ScopeError::InvalidDataset(_))
        ));
    }

    #[test]
    fn deletes_stay_inside_the_owners_namespace() {
        let k = keys();
        let own = k.query_key("a", "sales", "abc");
        let other = k.query_key("b", "sales", "abc");
        assert!(k.check_delete(Owner::Admin, &own).is_ok());
        assert!(k.check_delete(Owner::Tenant("a"), &own).is_ok());
        assert!(k.check_delete(Owner::Tenant("a"), &other).is_err());
        assert!(k.check_delete(Owner::Admin, "analytics:").is_err());
        assert!(k.check_delete(Owner::Admin, "other:analytics:x").is_err());
        assert!(k.check_delete(Owner::Admin, &k.rate_limit_key("a")).is_err());
    }

    #[test]
    fn version_keys_lease_keys_and_channels_stay_out_of_the_cache_namespace() {
        let k = keys();
        let tag = Tag {
            bucket: Bucket::Month(2026, 3),
            slot: Slot::Value("channel_id".into(), "2".into()),
        };
        assert_eq!(
            k.version_key("sales", &tag),
            "version:analytics:sales:m2026-03:channel_id=2"
        );
        let any = Tag {
            bucket: Bucket::All,
            slot: Slot::Any,
        };
        assert_eq!(k.version_key("sales", &any), "version:analytics:sales:all:*");
        let entry = k.query_key("a", "sales", "abc");
        for key in [
            k.version_key("sales", &tag),
            k.generation_key("sales"),
            k.tenant_generation_key("sales", "a"),
            k.lease_key(&entry),
        ] {
            assert!(!glob_matches(&k.pattern(&everything(), None), &key), "{key}");
        }
    }

    #[test]
    fn cluster_keys_tag_the_dataset_so_an_entry_meets_its_counters() {
        let k = keys().with_hash_tags(true);
        let entry = k.query_key("acme", "sales", "abc");
        assert_eq!(entry, "analytics:query:acme:{sales}:abc");
        assert_eq!(k.generation_key("sales"), "version:analytics:{sales}:gen");
        assert_eq!(
            k.tenant_generation_key("sales", "acme"),
            "version:analytics:{sales}:gen:acme"
        );
        let any = Tag {
            bucket: Bucket::All,
            slot: Slot::Any,
        };
        assert_eq!(k.version_key("sales", &any), "version:analytics:{sales}:all:*");
        let scope = k.scope(Owner::Admin, Some("acme"), Some("sales")).expect("scope");
        let pattern = k.pattern(&scope, None);
        assert_eq!(pattern, "analytics:query:acme:{sales}:*");
        assert!(glob_matches(&pattern, &entry));
        let by_dataset = k.pattern(&k.scope(Owner::Admin, None, Some("sales")).expect("scope"), None);
        assert!(glob_matches(&by_dataset, &entry), "{by_dataset}");
        assert!(k.check_delete(Owner::Tenant("acme"), &entry).is_ok());
    }

    #[test]
    fn unsafe_segments_are_refused() {
        assert!(is_safe_segment("tenant-1_a"));
        assert!(!is_safe_segment("a*"));
        assert!(!is_safe_segment("a:b"));
        assert!(!is_safe_segment(""));
        assert!(KeySpace::new("a:b").is_none());
    }
}
