//! JWT claims as routing and authorization see them: a path into the verified
//! payload (`groups`, `a.b`, `[a][b]`) and Istio's rule for matching a claim's value
//! (a string, any string of a list, or a number or boolean as written).

use serde::Serialize;
use serde_json::Value;

/// Where a claim lives in the payload: one key per nesting level.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ClaimPath(pub Vec<String>);

/// Why a claim name cannot be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClaimPathError {
    /// `[a][b` and the like: bracketed names that are not closed.
    #[error("claim {0:?}: unbalanced brackets")]
    UnbalancedBrackets(String),
    /// An empty name (`a..b`, `[]`) or a bracket inside a dotted name.
    #[error("claim {0:?}: empty or malformed name")]
    MalformedName(String),
}

impl ClaimPath {
    /// Parses `name`, `a.b` (VirtualService and outputClaimToHeaders style) or
    /// `[a][b]` (AuthorizationPolicy style, which keeps dots inside names).
    pub fn parse(text: &str) -> Result<ClaimPath, ClaimPathError> {
        let parts: Vec<String> = if let Some(inner) = text.strip_prefix('[') {
            let inner = inner
                .strip_suffix(']')
                .ok_or_else(|| ClaimPathError::UnbalancedBrackets(text.to_string()))?;
            inner.split("][").map(str::to_string).collect()
        } else {
            text.split('.').map(str::to_string).collect()
        };
        if parts.iter().any(|p| p.is_empty() || p.contains('[') || p.contains(']')) {
            return Err(ClaimPathError::MalformedName(text.to_string()));
        }
        Ok(ClaimPath(parts))
    }

    /// The claim's value in `payload`, if present.
    pub fn lookup<'a>(&self, payload: &'a Value) -> Option<&'a Value> {
        self.0.iter().try_fold(payload, |v, key| v.get(key))
    }
}

/// Calls `test` on each string form of a claim value until it returns true: the
/// string itself, each string of a list, or a number or boolean as written.
pub fn any_value(value: &Value, mut test: impl FnMut(&str) -> bool) -> bool {
    match value {
        Value::String(s) => test(s),
        Value::Array(items) => items.iter().any(|item| match item {
            Value::String(s) => test(s),
            Value::Number(_) | Value::Bool(_) => test(&item.to_string()),
            _ => false,
        }),
        Value::Number(_) | Value::Bool(_) => test(&value.to_string()),
        Value::Null | Value::Object(_) => false,
    }
}

/// A claim value as one header value: strings as they are, numbers and booleans as
/// written; lists and objects have none (Envoy's claim_to_headers does the same).
pub fn header_value(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Number(_) | Value::Bool(_) => Some(value.to_string()),
        _ => None,
    }
}

/// How a VirtualService header match names a JWT claim.
pub const CLAIM_KEY: &str = "@request.auth.claims";

/// The claim path of an `@request.auth.claims.<name>` (or `[name]`) header key.
pub fn claim_key(key: &str) -> Option<&str> {
    let rest = key.strip_prefix(CLAIM_KEY)?;
    Some(rest.strip_prefix('.').unwrap_or(rest))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn paths_and_values() {
        let payload = json!({"sub": "alice", "groups": ["dev", "ops"], "org": {"team": "core", "size": 4},
                             "https://example.com/role": "admin", "admin": true});
        let find = |p: &str| ClaimPath::parse(p).ok().and_then(|c| c.lookup(&payload).cloned());
        assert_eq!(find("sub"), Some(json!("alice")));
        assert_eq!(find("org.team"), Some(json!("core")));
        assert_eq!(find("[org][team]"), Some(json!("core")));
        assert_eq!(find("[https://example.com/role]"), Some(json!("admin")));
        assert_eq!(find("org.missing"), None);
        assert!(ClaimPath::parse("a..b").is_err() && ClaimPath::parse("[a][b").is_err());
        assert_eq!(
            ClaimPath::parse("[a][b"),
            Err(ClaimPathError::UnbalancedBrackets("[a][b".into()))
        );
        assert_eq!(
            ClaimPath::parse("a..b"),
            Err(ClaimPathError::MalformedName("a..b".into()))
        );
        assert_eq!(
            ClaimPath::parse("[a]b]").map_err(|e| e.to_string()),
            Err("claim \"[a]b]\": empty or malformed name".to_string())
        );

        let groups = find("groups").unwrap_or_default();
        assert!(any_value(&groups, |s| s == "ops"));
        assert!(!any_value(&groups, |s| s == "root"));
        assert!(any_value(&json!(4), |s| s == "4") && any_value(&json!(true), |s| s == "true"));
        assert_eq!(header_value(&json!("x")), Some("x".into()));
        assert_eq!(header_value(&json!(4)), Some("4".into()));
        assert_eq!(header_value(&groups), None);
    }
}
