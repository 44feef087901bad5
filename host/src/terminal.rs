//! The one filter between text the host did not write (plugin logs, progress
//! messages, summaries, errors, journal contents) and the operator's
//! terminal: control characters become visible escapes, so no plugin can
//! move the cursor, erase or forge lines, set the clipboard or reverse text.

use std::borrow::Cow;

/// Whether `character` must not reach a terminal as it is: C0 controls but
/// newline and tab, DEL, C1 controls (some terminals read U+009B as CSI),
/// and the Unicode bidirectional overrides, embeddings and isolates, which
/// reorder what is drawn after them.
fn is_unsafe(character: char) -> bool {
    matches!(character,
        '\u{0}'..='\u{8}'
        | '\u{b}'..='\u{1f}'
        | '\u{7f}'..='\u{9f}'
        | '\u{61c}'
        | '\u{200e}'
        | '\u{200f}'
        | '\u{202a}'..='\u{202e}'
        | '\u{2066}'..='\u{2069}')
}

/// Text for a terminal: every unsafe character written as `\u{1b}`, the
/// rest unchanged.
pub fn text(text: &str) -> Cow<'_, str> {
    escape_with(text, |character, out| {
        out.push_str(&format!("\\u{{{:x}}}", u32::from(character)));
    })
}

/// A JSON document for a terminal: every unsafe character left raw by the
/// serializer (DEL, C1, bidi) written as a JSON `\u` escape, so the
/// document means exactly the same and draws harmlessly.
pub fn json(line: &str) -> Cow<'_, str> {
    escape_with(line, |character, out| {
        out.push_str(&format!("\\u{:04x}", u32::from(character)));
    })
}

fn escape_with(text: &str, escape: impl Fn(char, &mut String)) -> Cow<'_, str> {
    if !text.chars().any(is_unsafe) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 16);
    for character in text.chars() {
        if is_unsafe(character) {
            escape(character, &mut out);
        } else {
            out.push(character);
        }
    }
    Cow::Owned(out)
}

/// [`text`], into an owned string.
pub fn owned(value: &str) -> String {
    text(value).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_sequences_become_visible() {
        assert_eq!(
            text("\x1b[2K\r  ✓ approved by alice"),
            "\\u{1b}[2K\\u{d}  ✓ approved by alice"
        );
        assert_eq!(text("\x1b]52;c;cm0=\x07"), "\\u{1b}]52;c;cm0=\\u{7}");
        assert_eq!(text("\u{9b}31m \u{7f}"), "\\u{9b}31m \\u{7f}");
        assert_eq!(text("a\u{202e}b\u{2066}c"), "a\\u{202e}b\\u{2066}c");
    }

    #[test]
    fn ordinary_text_newlines_and_tabs_pass_unchanged() {
        let plain = "line one\n\tline two: ✓ 日本語 — ok";
        assert!(matches!(text(plain), Cow::Borrowed(_)));
        assert_eq!(text(plain), plain);
    }

    #[test]
    fn json_keeps_its_meaning() {
        let line = serde_json::json!({"message": "\u{1b}[2J\u{9b}\u{202e}x"}).to_string();
        let safe = json(&line);
        assert!(!safe.chars().any(is_unsafe), "{safe}");
        let back: serde_json::Value = serde_json::from_str(&safe).unwrap();
        assert_eq!(back["message"], "\u{1b}[2J\u{9b}\u{202e}x");
    }
}
