//! Go's `%q` (strconv.Quote), which etcdctl's fields printer uses for keys and values.

/// Quotes `bytes` exactly as Go's `fmt.Sprintf("%q", string(bytes))`.
pub fn quote(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() + 2);
    out.push('"');
    let mut rest = bytes;
    while !rest.is_empty() {
        match std::str::from_utf8(rest) {
            Ok(s) => {
                push_str(&mut out, s);
                break;
            }
            Err(e) => {
                let (valid, after) = rest.split_at(e.valid_up_to());
                push_str(&mut out, std::str::from_utf8(valid).unwrap_or_default());
                // An invalid byte is written as \x.. and decoding resumes after it.
                out.push_str(&format!("\\x{:02x}", after[0]));
                rest = &after[1..];
            }
        }
    }
    out.push('"');
    out
}

fn push_str(out: &mut String, s: &str) {
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\x07' => out.push_str("\\a"),
            '\x08' => out.push_str("\\b"),
            '\x0c' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\x0b' => out.push_str("\\v"),
            c if (c as u32) < 0x20 || c == '\x7f' => out.push_str(&format!("\\x{:02x}", c as u32)),
            c if c.is_control() => {
                if (c as u32) < 0x10000 {
                    out.push_str(&format!("\\u{:04x}", c as u32))
                } else {
                    out.push_str(&format!("\\U{:08x}", c as u32))
                }
            }
            c => out.push(c),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::quote;

    #[test]
    fn quotes_like_go() {
        assert_eq!(quote(b"foo"), r#""foo""#);
        assert_eq!(quote(b"a\"b\\c"), r#""a\"b\\c""#);
        assert_eq!(quote(b"\n\t\x00\x7f"), r#""\n\t\x00\x7f""#);
        assert_eq!(quote(b"\xff\xfeok"), r#""\xff\xfeok""#);
        assert_eq!(quote("é".as_bytes()), "\"é\"");
        assert_eq!(quote("\u{85}".as_bytes()), r#""\u0085""#);
    }
}
