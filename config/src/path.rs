//! Request path normalization, as Istio's meshConfig `pathNormalization` asks of
//! Envoy, so that routing and authorization see the path the backend will
//! interpret: `/app/../admin` is `/admin`, and with MERGE_SLASHES `//admin` is too.

/// Istio's `pathNormalization.normalization`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Normalization {
    /// Leave the path as it came.
    None,
    /// RFC 3986: decode percent-encoded unreserved characters, resolve `.` and `..`.
    #[default]
    Base,
    /// BASE, then merge repeated slashes.
    MergeSlashes,
    /// BASE with `%2F` and `%5C` decoded to `/` first, then merge slashes.
    DecodeAndMergeSlashes,
}

impl Normalization {
    /// From Istio's name.
    pub fn from_name(name: &str) -> Option<Normalization> {
        Some(match name {
            "NONE" => Normalization::None,
            "DEFAULT" | "BASE" => Normalization::Base,
            "MERGE_SLASHES" => Normalization::MergeSlashes,
            "DECODE_AND_MERGE_SLASHES" => Normalization::DecodeAndMergeSlashes,
            _ => return None,
        })
    }
}

/// Why a path is refused (400).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// `%00`: a NUL byte in the path.
    Nul,
    /// A percent sign not followed by two hex digits.
    BadEscape,
}

fn unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Normalizes `path` (without the query). Returns None when nothing changes, so the
/// common case allocates nothing.
pub fn normalize(path: &str, mode: Normalization) -> Result<Option<String>, Refused> {
    if mode == Normalization::None {
        return Ok(None);
    }
    let bytes = path.as_bytes();
    let needs_work = bytes.contains(&b'%')
        || path.contains("/.")
        || (matches!(mode, Normalization::MergeSlashes | Normalization::DecodeAndMergeSlashes) && path.contains("//"))
        || (mode == Normalization::DecodeAndMergeSlashes && bytes.contains(&b'\\'));
    if !needs_work {
        return Ok(None);
    }
    // 1. Percent-decoding of unreserved characters (and, when asked, of slashes);
    //    other escapes are kept, with their hex digits uppercased.
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b == b'%' {
            let (Some(h), Some(l)) = (
                bytes.get(i + 1).copied().and_then(hex),
                bytes.get(i + 2).copied().and_then(hex),
            ) else {
                return Err(Refused::BadEscape);
            };
            let c = h * 16 + l;
            if c == 0 {
                return Err(Refused::Nul);
            }
            let slash = matches!(c, b'/' | b'\\') && mode == Normalization::DecodeAndMergeSlashes;
            if unreserved(c) || slash {
                decoded.push(if c == b'\\' { b'/' } else { c });
            } else {
                decoded.push(b'%');
                decoded.extend_from_slice(format!("{c:02X}").as_bytes());
            }
            i += 3;
            continue;
        }
        decoded.push(if b == b'\\' && mode == Normalization::DecodeAndMergeSlashes {
            b'/'
        } else {
            b
        });
        i += 1;
    }
    let decoded = String::from_utf8_lossy(&decoded).into_owned();
    // 2. Dot segments (RFC 3986 5.2.4), then 3. merged slashes.
    let merge = matches!(mode, Normalization::MergeSlashes | Normalization::DecodeAndMergeSlashes);
    let mut out: Vec<&str> = Vec::new();
    let segments: Vec<&str> = decoded.split('/').collect();
    let last = segments.len().saturating_sub(1);
    for (k, seg) in segments.iter().enumerate().skip(1) {
        match *seg {
            "." => {
                if k == last {
                    out.push("");
                }
            }
            ".." => {
                out.pop();
                if k == last {
                    out.push("");
                }
            }
            "" if merge && k != last => {}
            s => out.push(s),
        }
    }
    let mut normalized = String::with_capacity(decoded.len());
    for seg in &out {
        normalized.push('/');
        normalized.push_str(seg);
    }
    if normalized.is_empty() {
        normalized.push('/');
    }
    Ok((normalized != path).then_some(normalized))
}

#[cfg(test)]
mod tests {
    use super::*;
    use Normalization::*;

    fn norm(path: &str, mode: Normalization) -> Result<String, Refused> {
        normalize(path, mode).map(|n| n.unwrap_or_else(|| path.to_string()))
    }

    #[test]
    fn table() {
        let cases: &[(&str, Normalization, Result<&str, Refused>)] = &[
            ("/admin", Base, Ok("/admin")),
            ("/app/../admin", Base, Ok("/admin")),
            ("/app/./admin", Base, Ok("/app/admin")),
            ("/../admin", Base, Ok("/admin")),
            ("/%61dmin", Base, Ok("/admin")),
            ("/admin%2f", Base, Ok("/admin%2F")),
            ("/admin%2f", DecodeAndMergeSlashes, Ok("/admin/")),
            ("/admin%5Cx", DecodeAndMergeSlashes, Ok("/admin/x")),
            ("//admin", Base, Ok("//admin")),
            ("//admin", MergeSlashes, Ok("/admin")),
            ("/a//b///c", MergeSlashes, Ok("/a/b/c")),
            ("/ADMIN", Base, Ok("/ADMIN")),
            ("/admin;x", Base, Ok("/admin;x")),
            ("/admin/", MergeSlashes, Ok("/admin/")),
            ("/a/b/..", Base, Ok("/a/")),
            ("/admin%00", Base, Err(Refused::Nul)),
            ("/admin%zz", Base, Err(Refused::BadEscape)),
            ("//admin", None, Ok("//admin")),
            ("/app%2F..%2Fadmin", DecodeAndMergeSlashes, Ok("/admin")),
        ];
        for (path, mode, want) in cases {
            assert_eq!(
                norm(path, *mode).as_deref().map_err(|e| *e),
                *want,
                "{path} under {mode:?}"
            );
        }
        assert_eq!(
            normalize("/plain/path", Base),
            Ok(Option::None),
            "nothing to do, nothing allocated"
        );
    }
}
