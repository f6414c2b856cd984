//! Regexes as Envoy's `safe_regex` takes them: RE2 syntax matching the whole value,
//! compiled once per bundle and shared by every use of the same pattern (a compiled
//! regex costs kilobytes, and large tables repeat patterns).

use std::collections::HashMap;
use std::sync::Arc;

use regex::{Regex, RegexBuilder};

/// Why a pattern cannot be used as a regex.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum RegexError {
    /// Not valid syntax, or compiled past the size limit.
    // regex's message quotes the wrapped `^(?:...)$` pattern with a caret on
    // several lines; only its last line (the reason) is shown, with the pattern as
    // written. The error is kept whole rather than as `#[source]`, so that reporters
    // walking the chain do not repeat the reason.
    #[error("invalid regex {pattern:?}: {}", reason(.error))]
    Invalid {
        /// The pattern as written in the resource.
        pattern: String,
        /// What the regex crate refused.
        error: regex::Error,
    },
}

fn reason(error: &regex::Error) -> String {
    error.to_string().lines().last().unwrap_or("").to_string()
}

/// Compiled regexes by (pattern, case-insensitive).
#[derive(Debug, Default)]
pub struct RegexCache {
    compiled: HashMap<(String, bool), Arc<Regex>>,
}

impl RegexCache {
    /// The compiled `re`, shared with every earlier use of the same pattern.
    pub fn get(&mut self, re: &str, ignore_case: bool) -> Result<Arc<Regex>, RegexError> {
        let key = (re.to_string(), ignore_case);
        if let Some(r) = self.compiled.get(&key) {
            return Ok(r.clone());
        }
        let r = Arc::new(compile_full_match(re, ignore_case)?);
        self.compiled.insert(key, r.clone());
        Ok(r)
    }
}

/// Compiles an RE2-style regex that must match the whole value, as Envoy's safe_regex does.
pub fn compile_full_match(re: &str, ignore_case: bool) -> Result<Regex, RegexError> {
    RegexBuilder::new(&format!("^(?:{re})$"))
        .case_insensitive(ignore_case)
        .size_limit(1 << 20)
        .build()
        .map_err(|error| RegexError::Invalid {
            pattern: re.to_string(),
            error,
        })
}

/// RE2/Envoy substitutions use `\1`; the regex crate uses `${1}`.
pub fn re2_replacement(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        match (c, chars.peek()) {
            ('\\', Some(d)) if d.is_ascii_digit() => {
                out.push_str(&format!("${{{d}}}"));
                chars.next();
            }
            ('$', _) => out.push_str("$$"),
            _ => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_match_whole_values_and_are_shared() {
        let mut cache = RegexCache::default();
        let a = cache.get("/api/v[0-9]+", false).expect("valid");
        assert!(a.is_match("/api/v2"));
        assert!(!a.is_match("/api/v2/users"), "the whole value must match");
        let b = cache.get("/api/v[0-9]+", false).expect("valid");
        assert!(Arc::ptr_eq(&a, &b), "one compilation per pattern");
        assert!(cache.get("/API", true).expect("valid").is_match("/api"));
        assert!(cache.get("(", false).is_err());
    }

    #[test]
    fn errors_name_the_pattern_and_the_reason() {
        let err = compile_full_match("/users/(unclosed", false).expect_err("unclosed group");
        assert!(matches!(&err, RegexError::Invalid { pattern, .. } if pattern == "/users/(unclosed"));
        assert_eq!(
            err.to_string(),
            "invalid regex \"/users/(unclosed\": error: unclosed group"
        );
        let big = compile_full_match("\\w{1000}", false).expect_err("past the size limit");
        assert_eq!(
            big.to_string(),
            "invalid regex \"\\\\w{1000}\": Compiled regex exceeds size limit of 1048576 bytes."
        );
    }

    #[test]
    fn re2_substitutions_become_regex_crate_ones() {
        assert_eq!(re2_replacement(r"/v\1/\2"), "/v${1}/${2}");
        assert_eq!(re2_replacement("$x"), "$$x");
    }
}
