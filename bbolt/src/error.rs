use std::fmt::Write as _;

/// Everything that can go wrong reading or writing a bbolt file.
///
/// Messages name the page, element or bucket at fault so that a damaged snapshot can be
/// diagnosed from the error alone.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The bytes are not a bbolt database at all (no valid meta page).
    #[error("not a bbolt file: {0}")]
    NotBbolt(String),
    /// A bbolt file whose structure is inconsistent: a bad offset, length, page id or tree.
    #[error("corrupt bbolt file: {0}")]
    Corrupt(String),
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
    /// The writer was given a bucket name or key that is not strictly after the previous one.
    #[error("out of order: {0}")]
    Unsorted(String),
    /// A key, value or page size beyond what bbolt accepts.
    #[error("too large: {0}")]
    TooLarge(String),
    /// A call the writer cannot honour (an empty key, `put` before any `bucket`, a bad page
    /// size, use after an I/O failure).
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
}

/// A key for an error message: printable ASCII as is, other bytes escaped, long keys cut so
/// that a message stays one readable line.
pub(crate) fn show(key: &[u8]) -> String {
    const MAX: usize = 64;
    let mut out = String::from("\"");
    for &b in key.iter().take(MAX) {
        if b.is_ascii_graphic() && b != b'"' && b != b'\\' || b == b' ' {
            out.push(char::from(b));
        } else {
            let _ = write!(out, "\\x{b:02x}");
        }
    }
    out.push('"');
    if key.len() > MAX {
        let _ = write!(out, "... ({} bytes)", key.len());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::show;

    #[test]
    fn show_escapes_and_cuts() {
        assert_eq!(show(b"key/a b"), "\"key/a b\"");
        assert_eq!(show(b"\x00_\"\\"), "\"\\x00_\\x22\\x5c\"");
        let long = vec![b'a'; 100];
        assert!(show(&long).ends_with("... (100 bytes)"));
    }
}
