//! Control-plane key schema (the original's, prefixed by a run scope).
//!
//! ```text
//! {scope}:agent:{alias}            lease record, TTL refreshed by heartbeat
//! {scope}:exchange:{alias}:{peer}  EndpointInfo of alias for peer
//! {scope}:mr:{alias}:{name}        MailboxInfo (registered region)
//! {scope}:stream:{alias}           rendezvous notifications for alias (kept at start)
//! {scope}:inbox:{alias}            cleanup events for alias
//! ```
//!
//! One builder makes every key, so producer and consumer cannot disagree (the
//! original popped `:inbox:{alias}` while pushing `inbox:{alias}` with an empty
//! scope). Names are restricted to `[A-Za-z0-9._-]` so they can never contain a
//! separator or a SCAN glob character.

/// Name of the mailbox region under `mr:{alias}:{name}`.
pub const MAILBOX_MR: &str = "mailbox";
const MAX_ALIAS: usize = 64;
const MAX_SCOPE: usize = 128;

/// A scope or alias that is not a safe key component.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("{what} must not be empty")]
    Empty { what: &'static str },
    #[error("{what} {name:?} is longer than {max} characters")]
    TooLong {
        what: &'static str,
        name: String,
        max: usize,
    },
    #[error("{what} {name:?} may only contain letters, digits, '.', '_' and '-'")]
    BadChar { what: &'static str, name: String },
}

fn validate(what: &'static str, name: &str, max: usize, allow_empty: bool) -> Result<(), NameError> {
    if name.is_empty() && !allow_empty {
        return Err(NameError::Empty { what });
    }
    if name.len() > max {
        return Err(NameError::TooLong {
            what,
            name: name.chars().take(max).collect(),
            max,
        });
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
    {
        return Err(NameError::BadChar {
            what,
            name: name.to_string(),
        });
    }
    Ok(())
}

/// Check an agent alias.
///
/// # Errors
/// [`NameError`] for an empty, long or unsafe alias.
pub fn validate_alias(alias: &str) -> Result<(), NameError> {
    validate("alias", alias, MAX_ALIAS, false)
}

/// Key builder for one run scope.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Keys {
    prefix: String,
}

impl Keys {
    /// Keys under `scope` (empty = no prefix at all).
    ///
    /// # Errors
    /// [`NameError`] for an unsafe scope.
    pub fn new(scope: &str) -> Result<Self, NameError> {
        validate("scope", scope, MAX_SCOPE, true)?;
        Ok(Keys {
            prefix: if scope.is_empty() {
                String::new()
            } else {
                format!("{scope}:")
            },
        })
    }

    pub fn agent(&self, alias: &str) -> String {
        format!("{}agent:{alias}", self.prefix)
    }
    pub fn exchange(&self, alias: &str, peer: &str) -> String {
        format!("{}exchange:{alias}:{peer}", self.prefix)
    }
    pub fn mr(&self, alias: &str, name: &str) -> String {
        format!("{}mr:{alias}:{name}", self.prefix)
    }
    pub fn stream(&self, alias: &str) -> String {
        format!("{}stream:{alias}", self.prefix)
    }
    pub fn inbox(&self, alias: &str) -> String {
        format!("{}inbox:{alias}", self.prefix)
    }

    /// SCAN patterns of the keys an earlier incarnation of `alias` may have
    /// left behind and that must go before we publish (exchange and MR keys).
    /// The stream is deliberately not among them: notifications sent before we
    /// started must survive (they carry incarnations, so stale ones are ignored).
    pub fn stale_patterns(&self, alias: &str) -> Vec<String> {
        vec![
            format!("{}exchange:{alias}:*", self.prefix),
            format!("{}mr:{alias}:*", self.prefix),
        ]
    }

    /// SCAN pattern matching every key of this scope.
    pub fn scope_pattern(&self) -> String {
        format!("{}*", self.prefix)
    }
}

/// Match a key against a pattern whose only glob is an optional trailing `*`
/// (the only form [`Keys`] produces).
pub fn pattern_matches(pattern: &str, key: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => key.starts_with(prefix),
        None => key == pattern,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schema() {
        let k = Keys::new("run1").unwrap();
        assert_eq!(k.agent("w"), "run1:agent:w");
        assert_eq!(k.exchange("d", "w"), "run1:exchange:d:w");
        assert_eq!(k.mr("d", MAILBOX_MR), "run1:mr:d:mailbox");
        assert_eq!(k.stream("w"), "run1:stream:w");
        assert_eq!(k.inbox("w"), "run1:inbox:w");
        assert_eq!(k.scope_pattern(), "run1:*");
    }

    #[test]
    fn empty_scope_has_no_leading_colon() {
        let k = Keys::new("").unwrap();
        assert_eq!(k.inbox("w"), "inbox:w");
        assert_eq!(k.agent("w"), "agent:w");
    }

    #[test]
    fn unsafe_names_refused() {
        assert!(matches!(Keys::new("a*b"), Err(NameError::BadChar { .. })));
        assert!(matches!(Keys::new("a:b"), Err(NameError::BadChar { .. })));
        assert!(matches!(validate_alias(""), Err(NameError::Empty { .. })));
        assert!(matches!(
            validate_alias(&"x".repeat(65)),
            Err(NameError::TooLong { .. })
        ));
        assert!(validate_alias("bench-worker.2_a").is_ok());
    }

    #[test]
    fn stale_patterns_cover_own_keys_only() {
        let k = Keys::new("s").unwrap();
        let pats = k.stale_patterns("d");
        let hit = |key: &str| pats.iter().any(|p| pattern_matches(p, key));
        assert!(hit(&k.exchange("d", "w")));
        assert!(hit(&k.mr("d", MAILBOX_MR)));
        assert!(!hit(&k.stream("d")));
        assert!(!hit(&k.agent("d")));
        assert!(!hit(&k.exchange("dd", "w")));
        assert!(!hit(&k.exchange("w", "d")));
    }
}
