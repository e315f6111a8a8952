//! Key namespaces: every key an admin or tenant may touch is confined to its
//! namespace, so no pattern can reach other data in a shared Redis.

/// The namespace of all query entries: `{prefix}:`.
pub fn namespace(prefix: &str) -> String {
    format!("{prefix}:")
}

/// The namespace of one tenant's entries: `{prefix}:query:{tenant}:`.
pub fn tenant_namespace(prefix: &str, tenant: &str) -> String {
    format!("{prefix}:query:{tenant}:")
}

/// Confines a client-supplied SCAN pattern to `namespace`. A pattern that
/// already starts with the namespace literally is kept; anything else is
/// appended to it. Either way the result starts with the namespace as a
/// literal (namespaces hold no glob characters), so it can only match keys
/// inside it: `*` becomes `analytics:*`, never all of Redis.
pub fn confine(namespace: &str, pattern: Option<&str>) -> String {
    match pattern.map(str::trim).filter(|p| !p.is_empty()) {
        None => format!("{namespace}*"),
        Some(p) if p.starts_with(namespace) => p.to_owned(),
        Some(p) => format!("{namespace}{p}"),
    }
}

/// Whether `key` lies inside `namespace` (for single-key deletes).
pub fn within(namespace: &str, key: &str) -> bool {
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

/// Names that go into keys (prefix, tenant ids) must hold no glob or
/// separator characters, or confinement could be escaped.
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

    #[test]
    fn star_is_confined_to_the_namespace() {
        assert_eq!(confine("analytics:", Some("*")), "analytics:*");
        assert_eq!(confine("analytics:", None), "analytics:*");
        assert_eq!(confine("analytics:", Some("  ")), "analytics:*");
    }

    #[test]
    fn patterns_inside_the_namespace_are_kept() {
        assert_eq!(
            confine("analytics:", Some("analytics:query:*:sales:*")),
            "analytics:query:*:sales:*"
        );
    }

    #[test]
    fn patterns_outside_the_namespace_are_nested_inside_it() {
        assert_eq!(confine("analytics:", Some("session:*")), "analytics:session:*");
        assert_eq!(confine("analytics:", Some("analytic?:*")), "analytics:analytic?:*");
        let tenant = tenant_namespace("analytics", "a");
        assert_eq!(
            confine(&tenant, Some("analytics:query:b:*")),
            "analytics:query:a:analytics:query:b:*"
        );
    }

    #[test]
    fn every_confined_pattern_only_matches_namespace_keys() {
        for pattern in ["*", "?*", "[a-z]*", "analytics*", "*:*", "\\*", "analytics:*"] {
            let confined = confine("analytics:", Some(pattern));
            assert!(!glob_matches(&confined, "session:42"), "{pattern} escaped");
            assert!(!glob_matches(&confined, "analyticsX:1"), "{pattern} escaped");
        }
    }

    #[test]
    fn within_requires_the_namespace_prefix() {
        assert!(within("analytics:", "analytics:query:default:sales:abc"));
        assert!(!within("analytics:", "analytics:"));
        assert!(!within("analytics:", "other:analytics:x"));
    }

    #[test]
    fn unsafe_segments_are_refused() {
        assert!(is_safe_segment("tenant-1_a"));
        assert!(!is_safe_segment("a*"));
        assert!(!is_safe_segment("a:b"));
        assert!(!is_safe_segment(""));
    }
}
