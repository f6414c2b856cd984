//! JSON values printed as YAML for `-o yaml`: block style, strings quoted only
//! where YAML would read them as something else. (The maintained YAML crates are
//! more than a printer of JSON values needs.)

use serde_json::Value;

/// `value` as a YAML document.
pub fn to_yaml(value: &Value) -> String {
    let mut out = String::new();
    if is_block(value) {
        block(&mut out, value, 0);
    } else {
        out.push_str(&scalar(value));
        out.push('\n');
    }
    out
}

/// Non-empty maps and lists are written as indented blocks; the rest inline.
fn is_block(v: &Value) -> bool {
    match v {
        Value::Object(m) => !m.is_empty(),
        Value::Array(a) => !a.is_empty(),
        _ => false,
    }
}

fn block(out: &mut String, v: &Value, indent: usize) {
    let pad = " ".repeat(indent);
    match v {
        Value::Object(m) => {
            for (k, x) in m {
                out.push_str(&pad);
                out.push_str(&string(k));
                out.push(':');
                nested(out, x, indent + 2);
            }
        }
        Value::Array(items) => {
            for x in items {
                out.push_str(&pad);
                out.push('-');
                if is_block(x) {
                    // The item's first line goes after the dash, the rest under it.
                    let mut inner = String::new();
                    block(&mut inner, x, indent + 2);
                    out.push(' ');
                    out.push_str(&inner[indent + 2..]);
                } else {
                    out.push(' ');
                    out.push_str(&scalar(x));
                    out.push('\n');
                }
            }
        }
        _ => {}
    }
}

fn nested(out: &mut String, x: &Value, indent: usize) {
    if is_block(x) {
        out.push('\n');
        block(out, x, indent);
    } else {
        out.push(' ');
        out.push_str(&scalar(x));
        out.push('\n');
    }
}

fn scalar(v: &Value) -> String {
    match v {
        Value::Null => "null".into(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => string(s),
        Value::Object(_) => "{}".into(),
        Value::Array(_) => "[]".into(),
    }
}

/// A string plain when YAML reads it back as the same string, else double-quoted
/// (a JSON string literal is a valid YAML double-quoted scalar).
fn string(s: &str) -> String {
    if plain_ok(s) {
        s.to_string()
    } else {
        serde_json::to_string(s).unwrap_or_else(|_| format!("\"{}\"", s.escape_default()))
    }
}

fn plain_ok(s: &str) -> bool {
    const RESERVED: &[&str] = &["true", "false", "yes", "no", "on", "off", "y", "n", "null", "~"];
    let Some(first) = s.chars().next() else {
        return false;
    };
    let looks_numeric = s.parse::<f64>().is_ok() || s.starts_with("0x") || s.starts_with("0o") || s.starts_with('.');
    !RESERVED.contains(&s.to_ascii_lowercase().as_str())
        && !looks_numeric
        // A leading digit could be a date or a base-60 number to a YAML 1.1 reader.
        && (first.is_ascii_alphabetic() || first == '/' || first == '_')
        && !s.ends_with(' ')
        && !s.ends_with(':')
        && !s.contains(": ")
        && !s.contains(" #")
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || " ._-/|:*@+=(),^$?".contains(c))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn nested_values() {
        let v = json!({
            "version": 3,
            "listeners": [
                {"port": 80, "hosts": ["a.example.com", "*.example.com"], "tls": null},
                {"port": 443, "empty": [], "map": {}}
            ],
            "name": "outbound|80||backend.default.svc.cluster.local"
        });
        let expected = "\
listeners:
  - hosts:
      - a.example.com
      - \"*.example.com\"
    port: 80
    tls: null
  - empty: []
    map: {}
    port: 443
name: outbound|80||backend.default.svc.cluster.local
version: 3
";
        assert_eq!(to_yaml(&v), expected);
    }

    #[test]
    fn quotes_what_yaml_would_misread() {
        for s in [
            "true",
            "No",
            "1.5",
            "10",
            "",
            "a: b",
            "x #y",
            "*",
            "-x",
            "line\nbreak",
            "ends:",
            "~",
        ] {
            assert!(string(s).starts_with('"'), "{s:?} must be quoted");
        }
        for s in [
            "outbound|80|v1|backend",
            "/api/v1",
            "secret default/app-tls",
            "a.example.com",
        ] {
            assert_eq!(string(s), s);
        }
        assert_eq!(to_yaml(&json!("plain")), "plain\n");
        assert_eq!(to_yaml(&json!([])), "[]\n");
    }
}
