//! Cluster and database names. They come from the network, so they are checked before
//! anything else sees them; they never become paths (files are named by a hash).

use crate::error::{Error, Result};
use crate::segment::format::MAX_NAME_LEN;

/// Checks a cluster or database name: 1 to 128 bytes of printable ASCII other than space,
/// `/` and `\`, not starting with `.` (so never `.` or `..`).
pub fn validate(kind: &str, name: &str) -> Result<()> {
    let shown: String = name.chars().take(40).flat_map(char::escape_default).collect();
    let bad = |why: &str| Err(Error::InvalidName(format!("{kind} name \"{shown}\" {why}")));
    if name.is_empty() {
        return bad("is empty");
    }
    if name.len() > MAX_NAME_LEN {
        return bad(&format!("is {} bytes long; the limit is {MAX_NAME_LEN}", name.len()));
    }
    if let Some(c) = name.bytes().find(|b| !b.is_ascii_graphic() || *b == b'/' || *b == b'\\') {
        return bad(&format!("contains byte {c:#04x}; allowed are printable ASCII without space, '/' and '\\'"));
    }
    if name.starts_with('.') {
        return bad("starts with '.'");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::validate;

    #[test]
    fn accepts_ordinary_names() {
        for name in ["app.db", "LFSC0123456789ABCDEF", "my-db_2", "x"] {
            assert!(validate("database", name).is_ok(), "{name}");
        }
    }

    #[test]
    fn refuses_paths_and_junk() {
        let long = "a".repeat(129);
        for name in ["", ".", "..", "../x", "a/b", "a\\b", "a\0b", "a b", "\u{e9}", ".hidden", long.as_str()] {
            assert!(validate("database", name).is_err(), "{name:?}");
        }
    }
}
