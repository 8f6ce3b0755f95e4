//! Text that people see: which characters are invisible, so that two values that render the
//! same cannot differ by a character nobody can see.

/// Whether `c` renders as nothing, or changes how the text around it is ordered or shaped,
/// rather than showing a glyph of its own: control characters (C0, DEL, C1), every format
/// character (Unicode category Cf: zero-width space/joiners, U+FEFF, the soft hyphen, the bidi
/// embeddings, overrides and isolates, invisible operators, tag characters…), and the blank
/// letters and modifiers that are used to fake empty or look-alike text (Hangul fillers, the
/// combining grapheme joiner, Mongolian and Unicode variation selectors, Khmer inherent vowels,
/// the braille blank).
pub fn is_invisible(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            // Cf: format characters (Unicode 15.1).
            '\u{00AD}'
                | '\u{0600}'..='\u{0605}'
                | '\u{061C}'
                | '\u{06DD}'
                | '\u{070F}'
                | '\u{0890}'..='\u{0891}'
                | '\u{08E2}'
                | '\u{180E}'
                | '\u{200B}'..='\u{200F}'
                | '\u{202A}'..='\u{202E}'
                | '\u{2060}'..='\u{2064}'
                | '\u{2066}'..='\u{206F}'
                | '\u{FEFF}'
                | '\u{FFF9}'..='\u{FFFB}'
                | '\u{110BD}'
                | '\u{110CD}'
                | '\u{13430}'..='\u{1343F}'
                | '\u{1BCA0}'..='\u{1BCA3}'
                | '\u{1D173}'..='\u{1D17A}'
                | '\u{E0001}'
                | '\u{E0020}'..='\u{E007F}'
                // Blank or invisible letters and marks.
                | '\u{034F}'
                | '\u{115F}'..='\u{1160}'
                | '\u{17B4}'..='\u{17B5}'
                | '\u{180B}'..='\u{180D}'
                | '\u{180F}'
                | '\u{2800}'
                | '\u{3164}'
                | '\u{FE00}'..='\u{FE0F}'
                | '\u{FFA0}'
                | '\u{E0100}'..='\u{E01EF}'
        )
}

/// `s` with every run of whitespace (any Unicode white space: tabs, no-break and ideographic
/// spaces, line and paragraph separators…) replaced by one ASCII space, and trimmed. So
/// "Ada\u{00A0}Lovelace" and "Ada  Lovelace" both become "Ada Lovelace".
pub fn collapse_whitespace(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for word in s.split(char::is_whitespace).filter(|w| !w.is_empty()) {
        if !out.is_empty() {
            out.push(' ');
        }
        out.push_str(word);
    }
    out
}

/// `s` safe inside HTML content and double- or single-quoted attributes (`& < > " '`). The
/// worker's e-mails and the API's pages both render with it.
pub fn escape_html(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Whether any string or key of a JSON value holds a NUL (Postgres `jsonb` refuses `\u0000`).
pub fn json_contains_nul(v: &serde_json::Value) -> bool {
    use serde_json::Value;
    match v {
        Value::String(s) => s.contains('\0'),
        Value::Array(items) => items.iter().any(json_contains_nul),
        Value::Object(map) => map.iter().any(|(k, v)| k.contains('\0') || json_contains_nul(v)),
        Value::Null | Value::Bool(_) | Value::Number(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_a_nul_anywhere_in_json() {
        let clean = serde_json::json!({"a": ["x", {"b": 1, "c": null, "d": "ok"}]});
        assert!(!json_contains_nul(&clean));
        assert!(json_contains_nul(&serde_json::json!({"a": ["x", {"d": "o\u{0}k"}]})));
        assert!(json_contains_nul(&serde_json::json!({"k\u{0}": 1})));
        assert!(json_contains_nul(&serde_json::json!("\u{0}")));
    }

    #[test]
    fn html_is_escaped() {
        assert_eq!(
            escape_html(r#"<a href="x">O'Neil & co</a>"#),
            "&lt;a href=&quot;x&quot;&gt;O&#39;Neil &amp; co&lt;/a&gt;"
        );
    }

    #[test]
    fn invisible_characters() {
        for c in [
            '\u{0}',
            '\u{7F}',
            '\u{85}',
            '\u{AD}',
            '\u{200B}',
            '\u{200D}',
            '\u{200E}',
            '\u{202E}',
            '\u{2066}',
            '\u{2069}',
            '\u{2060}',
            '\u{FEFF}',
            '\u{3164}',
            '\u{115F}',
            '\u{FE0F}',
            '\u{E0041}',
            '\u{2800}',
        ] {
            assert!(is_invisible(c), "U+{:04X} is invisible", c as u32);
        }
        for c in ['a', 'é', 'ß', 'Ж', '中', '😀', ' ', '-', '\''] {
            assert!(!is_invisible(c), "{c:?} is visible");
        }
    }

    #[test]
    fn whitespace_collapses() {
        assert_eq!(
            collapse_whitespace("  Ada \u{00A0}\u{2003} Lovelace\u{3000}"),
            "Ada Lovelace"
        );
        assert_eq!(collapse_whitespace("a\u{2028}b"), "a b");
        assert_eq!(collapse_whitespace(" \u{00A0} "), "");
    }
}
