//! The canonical path: the request target parsed once into the path every rule sees and the cell
//! receives, so that no spelling of a path can mean one thing to the gateway and another to a cell.
//!
//! granian hands the application a path it has already percent-decoded once (RSGI gives no raw
//! target), so `%2F` arrives as `/` and `%2e%2e` as `..`: this module works on that decoded path.
//! It refuses what no rule should have to reason about (control characters, backslashes, path
//! parameters, text that was not UTF-8, an escape that survived the decoding where configured),
//! removes dot segments (RFC 3986 section 5.2.4) and merges repeated slashes, as Envoy's
//! `normalize_path` and `merge_slashes` do. The cell receives the canonical path re-encoded so
//! that one decoding on its side gives back exactly the path the rules saw.

use crate::reason::{Reason, Refusal};
use serde::Deserialize;
use std::borrow::Cow;
use std::fmt::Write;

/// What to do with an escaped slash or backslash (`%2F`, `%5C`) still in the path after the
/// server's decoding, named after Envoy's `path_with_escaped_slashes_action`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EscapedSlashes {
    /// 400 bad_path (the default).
    #[default]
    RejectRequest,
    /// The escape is kept as text: rules see `%2F` and the cell receives it encoded as `%252F`.
    KeepUnchanged,
    /// `%2F` becomes a slash before normalisation (`%5C` becomes a backslash, which is refused).
    UnescapeAndForward,
}

/// How request paths are made canonical.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PathSettings {
    /// Remove `.` and `..` segments (RFC 3986 section 5.2.4).
    pub normalize_path: bool,
    /// Merge repeated slashes into one.
    pub merge_slashes: bool,
    pub path_with_escaped_slashes_action: EscapedSlashes,
}

impl Default for PathSettings {
    fn default() -> Self {
        PathSettings {
            normalize_path: true,
            merge_slashes: true,
            path_with_escaped_slashes_action: EscapedSlashes::RejectRequest,
        }
    }
}

/// A request's canonical path: what the rules see, and the same path encoded for the wire.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CanonicalPath<'a> {
    path: Cow<'a, str>,
    wire: Cow<'a, str>,
}

impl<'a> CanonicalPath<'a> {
    /// The path every rule sees (decoded).
    pub fn path(&self) -> &str {
        &self.path
    }

    /// The path as the cell receives it: percent-encoded so that decoding it once gives `path`.
    pub fn wire(&self) -> &str {
        &self.wire
    }
}

fn bad_path(detail: String) -> Refusal {
    Refusal::new(Reason::BadPath, detail)
}

/// The canonical form of `decoded` (a path as the server decoded it), or 400 bad_path saying why.
pub fn canonicalize<'a>(
    decoded: &'a str,
    settings: &PathSettings,
) -> Result<CanonicalPath<'a>, Refusal> {
    if !decoded.starts_with('/') {
        return Err(bad_path(format!(
            "the request target {decoded:?} is not origin-form (it must start with '/')"
        )));
    }
    if is_canonical_as_is(decoded.as_bytes(), settings) {
        return Ok(CanonicalPath {
            path: Cow::Borrowed(decoded),
            wire: Cow::Borrowed(decoded),
        });
    }
    let unescaped = check_characters(decoded, settings)?;
    let source: &str = unescaped.as_deref().unwrap_or(decoded);
    let path = match resolve_segments(source, settings) {
        Some(resolved) => Cow::Owned(resolved),
        None => match unescaped {
            Some(owned) => Cow::Owned(owned),
            None => Cow::Borrowed(decoded),
        },
    };
    let wire = match &path {
        Cow::Borrowed(text) if !needs_encoding(text) => Cow::Borrowed(*text),
        text if !needs_encoding(text) => Cow::Owned(text.to_string()),
        text => Cow::Owned(encode(text)),
    };
    Ok(CanonicalPath { path, wire })
}

/// Refuses characters no rule should see; returns the path with `%2F` unescaped when configured
/// to (None: unchanged).
fn check_characters(decoded: &str, settings: &PathSettings) -> Result<Option<String>, Refusal> {
    let mut unescape = false;
    for (at, c) in decoded.char_indices() {
        match c {
            '\u{0}'..='\u{1f}' | '\u{7f}'..='\u{9f}' => {
                return Err(bad_path(format!(
                    "control character U+{:04X} at byte {at} of the path",
                    c as u32
                )))
            }
            '\\' => return Err(bad_path(format!("backslash at byte {at} of the path"))),
            ';' => {
                return Err(bad_path(format!(
                    "path parameter (';') at byte {at} of the path"
                )))
            }
            '\u{fffd}' => {
                return Err(bad_path(
                    "the path is not UTF-8 once percent-decoded".to_owned(),
                ))
            }
            '%' => {
                let escape = decoded.get(at + 1..at + 3).unwrap_or("");
                if escape.eq_ignore_ascii_case("2f") || escape.eq_ignore_ascii_case("5c") {
                    match settings.path_with_escaped_slashes_action {
                        EscapedSlashes::RejectRequest => {
                            return Err(bad_path(format!(
                                "escaped slash %{escape} at byte {at} of the path (it was encoded \
                                 twice)"
                            )))
                        }
                        EscapedSlashes::KeepUnchanged => {}
                        EscapedSlashes::UnescapeAndForward if escape.eq_ignore_ascii_case("5c") => {
                            return Err(bad_path(format!(
                                "escaped backslash %{escape} at byte {at} of the path"
                            )))
                        }
                        EscapedSlashes::UnescapeAndForward => unescape = true,
                    }
                }
            }
            _ => {}
        }
    }
    if !unescape {
        return Ok(None);
    }
    let mut out = String::with_capacity(decoded.len());
    let mut rest = decoded;
    while let Some(at) = rest.find('%') {
        out.push_str(&rest[..at]);
        let escape = rest.get(at + 1..at + 3).unwrap_or("");
        if escape.eq_ignore_ascii_case("2f") {
            out.push('/');
            rest = &rest[at + 3..];
        } else {
            out.push('%');
            rest = &rest[at + 1..];
        }
    }
    out.push_str(rest);
    Ok(Some(out))
}

/// Whether a segment is `.` or `..`.
fn is_dot_segment(segment: &str) -> bool {
    segment == "." || segment == ".."
}

/// The path with dot segments removed and slashes merged as configured; None when nothing
/// changes (the common case, found without allocating).
fn resolve_segments(path: &str, settings: &PathSettings) -> Option<String> {
    let segments = || path[1..].split('/');
    let count = segments().count();
    let changes = segments().enumerate().any(|(index, segment)| {
        (settings.normalize_path && is_dot_segment(segment))
            || (settings.merge_slashes && segment.is_empty() && index + 1 < count)
    });
    if !changes {
        return None;
    }
    let mut kept: Vec<&str> = Vec::with_capacity(count);
    let mut trailing_slash = false;
    for (index, segment) in segments().enumerate() {
        let last = index + 1 == count;
        trailing_slash = false;
        match segment {
            "." if settings.normalize_path => trailing_slash = true,
            ".." if settings.normalize_path => {
                kept.pop();
                trailing_slash = true;
            }
            "" if last => trailing_slash = true,
            "" if settings.merge_slashes => {}
            segment => kept.push(segment),
        }
    }
    let mut out = String::with_capacity(path.len());
    for segment in &kept {
        out.push('/');
        out.push_str(segment);
    }
    if trailing_slash || kept.is_empty() {
        out.push('/');
    }
    Some(out)
}

/// The bytes that may stand for themselves in a path: RFC 3986 `pchar` and `/`, less `%`.
const PATH_BYTES: [bool; 256] = {
    let mut table = [false; 256];
    let allowed = b"-._~!$&'()*+,=:@/";
    let mut i = 0;
    while i < allowed.len() {
        table[allowed[i] as usize] = true;
        i += 1;
    }
    let mut c = 0;
    while c < 256 {
        if (c as u8).is_ascii_alphanumeric() {
            table[c] = true;
        }
        c += 1;
    }
    table
};

#[inline]
fn is_path_byte(byte: u8) -> bool {
    PATH_BYTES[byte as usize]
}

/// Whether `path` (starting with `/`) is already canonical and needs no encoding: the common
/// case, decided in one pass over the bytes without allocating.
#[inline]
fn is_canonical_as_is(path: &[u8], settings: &PathSettings) -> bool {
    let is_dot = |segment: &[u8]| segment == b"." || segment == b"..";
    let mut segment_start = 1;
    for (at, &byte) in path.iter().enumerate().skip(1) {
        if byte == b'/' {
            let segment = &path[segment_start..at];
            if (settings.merge_slashes && segment.is_empty())
                || (settings.normalize_path && is_dot(segment))
            {
                return false;
            }
            segment_start = at + 1;
        } else if !is_path_byte(byte) {
            return false;
        }
    }
    !(settings.normalize_path && is_dot(&path[segment_start..]))
}

fn needs_encoding(path: &str) -> bool {
    !path.bytes().all(is_path_byte)
}

/// Percent-encodes every byte of `path` that may not stand for itself (upper-case hex).
fn encode(path: &str) -> String {
    let mut out = String::with_capacity(path.len() + 16);
    for byte in path.bytes() {
        if is_path_byte(byte) {
            out.push(byte as char);
        } else {
            // Writing to a String cannot fail.
            let _ = write!(out, "%{byte:02X}");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn canon(path: &str) -> Result<String, String> {
        canonicalize(path, &PathSettings::default())
            .map(|c| c.path().to_owned())
            .map_err(|r| {
                assert_eq!(r.reason, Reason::BadPath);
                r.detail
            })
    }

    fn wire(path: &str) -> String {
        canonicalize(path, &PathSettings::default())
            .unwrap()
            .wire()
            .to_owned()
    }

    #[test]
    fn a_canonical_path_is_borrowed_unchanged() {
        let c = canonicalize("/api/transfers", &PathSettings::default()).unwrap();
        assert!(matches!(c.path, Cow::Borrowed(_)));
        assert!(matches!(c.wire, Cow::Borrowed(_)));
        assert_eq!(c.wire(), "/api/transfers");
    }

    #[test]
    fn dot_segments_are_removed_as_rfc_3986_does() {
        // RFC 3986 section 5.2.4's own examples, on absolute paths.
        assert_eq!(canon("/a/b/c/./../../g").unwrap(), "/a/g");
        assert_eq!(canon("/mid/content=5/../6").unwrap(), "/mid/6");
        for (input, expected) in [
            ("/api/./transfers", "/api/transfers"),
            ("/api/x/../transfers", "/api/transfers"),
            ("/../api/transfers", "/api/transfers"),
            ("/api/transfers/.", "/api/transfers/"),
            ("/api/transfers/..", "/api/"),
            ("/a/..", "/"),
            ("/..", "/"),
            ("/.", "/"),
            ("/", "/"),
            ("/a/.../b", "/a/.../b"),
            ("/a/..b/c", "/a/..b/c"),
        ] {
            assert_eq!(canon(input).unwrap(), expected, "{input}");
        }
    }

    #[test]
    fn repeated_slashes_are_merged() {
        assert_eq!(canon("//api///transfers").unwrap(), "/api/transfers");
        assert_eq!(canon("/api/transfers//").unwrap(), "/api/transfers/");
        assert_eq!(canon("//").unwrap(), "/");
        assert_eq!(canon("/a//../b").unwrap(), "/b");
    }

    #[test]
    fn what_no_rule_should_see_is_refused() {
        assert!(canon("/a\u{0}b").unwrap_err().contains("U+0000"));
        assert!(canon("/a\nb").unwrap_err().contains("U+000A"));
        assert!(canon("/a\u{7f}").unwrap_err().contains("U+007F"));
        assert!(canon("/a\u{85}").unwrap_err().contains("U+0085"));
        assert!(canon("/api\\transfers").unwrap_err().contains("backslash"));
        assert!(canon("/api;jsessionid=1/transfers")
            .unwrap_err()
            .contains("path parameter"));
        assert!(canon("/api/\u{fffd}").unwrap_err().contains("UTF-8"));
        assert!(canon("api/transfers").unwrap_err().contains("origin-form"));
        assert!(canon("*").unwrap_err().contains("origin-form"));
        assert!(canon("").unwrap_err().contains("origin-form"));
        assert!(canon("/api%2Ftransfers").unwrap_err().contains("%2F"));
        assert!(canon("/api%5ctransfers").unwrap_err().contains("%5c"));
    }

    #[test]
    fn escaped_slashes_follow_the_configured_action() {
        let keep = PathSettings {
            path_with_escaped_slashes_action: EscapedSlashes::KeepUnchanged,
            ..PathSettings::default()
        };
        let c = canonicalize("/api%2Ftransfers", &keep).unwrap();
        assert_eq!(c.path(), "/api%2Ftransfers");
        assert_eq!(c.wire(), "/api%252Ftransfers");
        let unescape = PathSettings {
            path_with_escaped_slashes_action: EscapedSlashes::UnescapeAndForward,
            ..PathSettings::default()
        };
        let c = canonicalize("/api%2F..%2ftransfers/x%41", &unescape).unwrap();
        assert_eq!(c.path(), "/transfers/x%41");
        assert_eq!(c.wire(), "/transfers/x%2541");
        assert!(canonicalize("/a%5Cb", &unescape).is_err());
    }

    #[test]
    fn normalisation_can_be_turned_off() {
        let raw = PathSettings {
            normalize_path: false,
            merge_slashes: false,
            ..PathSettings::default()
        };
        let c = canonicalize("/a//./../b", &raw).unwrap();
        assert_eq!(c.path(), "/a//./../b");
        let merge_only = PathSettings {
            normalize_path: false,
            ..PathSettings::default()
        };
        assert_eq!(
            canonicalize("/a//./b", &merge_only).unwrap().path(),
            "/a/./b"
        );
    }

    #[test]
    fn the_wire_form_decodes_to_the_canonical_path() {
        assert_eq!(wire("/a b/#/?/%/é"), "/a%20b/%23/%3F/%25/%C3%A9");
        assert_eq!(wire("/~user/a:b@c!$&'()*+,="), "/~user/a:b@c!$&'()*+,=");
        for path in ["/a b/./c", "/x?y/../z#", "/%41/é/"] {
            let c = canonicalize(path, &PathSettings::default()).unwrap();
            assert_eq!(percent_decode(c.wire()), c.path(), "{path}");
        }
    }

    fn percent_decode(text: &str) -> String {
        let bytes = text.as_bytes();
        let mut out = Vec::new();
        let mut i = 0;
        while i < bytes.len() {
            if bytes[i] == b'%' {
                out.push(u8::from_str_radix(&text[i + 1..i + 3], 16).unwrap());
                i += 3;
            } else {
                out.push(bytes[i]);
                i += 1;
            }
        }
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn canonical_paths_are_fixed_points() {
        let samples = [
            "/a/./b/../../c//d/",
            "//..//./x",
            "/a/%2e%2e/b",
            "/é/../ü",
            "/a/b/c/../../../../..",
        ];
        for sample in samples {
            let once = canon(sample).unwrap();
            assert_eq!(canon(&once).unwrap(), once, "{sample}");
            assert!(!once.contains("//"), "{sample} -> {once}");
            assert!(!once.split('/').any(is_dot_segment), "{sample} -> {once}");
        }
    }
}
