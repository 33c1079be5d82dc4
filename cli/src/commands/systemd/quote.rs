//! Words of a systemd command line (`ExecStart=`, `ExecStop=`), written so that systemd hands
//! the program exactly the argument it was given.
//!
//! systemd.service(5), "Command lines", and `config_parse_exec`: the value is split into
//! words like a shell does (single or double quotes, C escapes such as `\\`, `\"`, `\n`,
//! `\xHH`), each word then has its `%` specifiers resolved, and at exec time `$NAME` and
//! `${NAME}` are replaced from the unit's environment. A bare `;` word separates commands.
//! So a literal `%` is written `%%` and a literal `$` is written `$$`, whether quoted or not
//! (a C escape does not help: `\x25` becomes `%` before specifiers are resolved).
//!
//! What [`word`] guarantees: a word made only of characters no rule touches is written as is
//! (`--memory=128m`, `nginx:alpine`); anything else is double-quoted with `\`, `"` and
//! control characters escaped. The empty word is `""`. A word never starts with `#` or `;`
//! unquoted, so it can also start a continuation line (systemd drops comment lines even in
//! the middle of a continued value). Unit files are UTF-8: a word that is not is refused.

use std::ffi::OsStr;
use std::fmt::Write as _;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum QuoteError {
    #[error("{0:?} is not UTF-8, and systemd unit files are UTF-8 only")]
    NotUtf8(String),
    #[error(
        "{0:?} cannot be the program of a unit's command line: systemd refuses quotes, \
         backslashes and control characters in it"
    )]
    UnsafeProgram(String),
}

/// Characters that mean nothing to systemd's word splitting, specifiers or variables.
fn plain(c: char) -> bool {
    c.is_ascii_alphanumeric() || "-_./:=,+@^~".contains(c)
}

/// One argument, as systemd must read it back.
pub fn word(arg: &OsStr) -> Result<String, QuoteError> {
    let s = arg
        .to_str()
        .ok_or_else(|| QuoteError::NotUtf8(arg.to_string_lossy().into_owned()))?;
    Ok(word_str(s))
}

fn word_str(s: &str) -> String {
    let bare = !s.is_empty() && s.chars().all(|c| plain(c) || c == '%' || c == '$');
    let mut out = String::with_capacity(s.len() + 2);
    if !bare {
        out.push('"');
    }
    for c in s.chars() {
        match c {
            '%' => out.push_str("%%"),
            '$' => out.push_str("$$"),
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if c.is_control() && (c as u32) < 0x80 => {
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            // Other control characters (C1, U+0080..U+009F) as \u escapes: systemd decodes
            // them to the same UTF-8.
            c if c.is_control() => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    if !bare {
        out.push('"');
    }
    out
}

/// The program word (the first of a command line), after systemd's prefix characters such as
/// `-` (ignore failure). systemd refuses a program path with quotes, backslashes or control
/// characters ("Executable name contains special characters"), so those are refused here too.
pub fn program(path: &OsStr) -> Result<String, QuoteError> {
    let s = path
        .to_str()
        .ok_or_else(|| QuoteError::NotUtf8(path.to_string_lossy().into_owned()))?;
    if s.chars()
        .any(|c| c.is_control() || c == '\\' || c == '"' || c == '\'')
    {
        return Err(QuoteError::UnsafeProgram(s.to_owned()));
    }
    Ok(word_str(s))
}

/// The value of a setting that takes specifiers but no words (`Description=`): `%` doubled,
/// line breaks folded to spaces.
pub fn text(s: &str) -> String {
    s.replace('%', "%%").replace(['\n', '\r'], " ")
}

#[cfg(test)]
pub(crate) mod model {
    //! A model of systemd's reading of a command line, to check [`super::word`] against:
    //! `extract_first_word(EXTRACT_UNQUOTE|EXTRACT_CUNESCAPE)` word by word, the bare `;`
    //! separator, `%%` and `$$`. Only what the writer can produce needs to be right; anything
    //! else is an error. The VM test checks the same words against systemd itself.

    /// Splits one command line (continuations already joined) into its argv.
    pub fn split(line: &str) -> Result<Vec<String>, String> {
        let mut out = Vec::new();
        let mut chars = line.chars().peekable();
        loop {
            while chars.peek().is_some_and(|c| " \t".contains(*c)) {
                chars.next();
            }
            let Some(&first) = chars.peek() else {
                return Ok(out);
            };
            if first == ';' {
                let mut look = chars.clone();
                look.next();
                if look.peek().is_none_or(|c| " \t".contains(*c)) {
                    return Err("a bare ; separates commands".into());
                }
            }
            let mut w = String::new();
            let mut quote: Option<char> = None;
            while let Some(c) = chars.next() {
                match (quote, c) {
                    (None, ' ' | '\t') => break,
                    (None, '\'' | '"') => quote = Some(c),
                    (Some(q), c) if c == q => quote = None,
                    (_, '\\') => w.push(unescape(&mut chars)?),
                    (_, c) => w.push(c),
                }
            }
            if quote.is_some() {
                return Err(format!("unbalanced quote in {line:?}"));
            }
            out.push(resolve(&w)?);
        }
    }

    fn unescape(chars: &mut std::iter::Peekable<std::str::Chars>) -> Result<char, String> {
        let hex = |chars: &mut std::iter::Peekable<std::str::Chars>, n: usize| {
            let h: String = (0..n).filter_map(|_| chars.next()).collect();
            u32::from_str_radix(&h, 16)
                .ok()
                .and_then(char::from_u32)
                .ok_or(format!("bad escape \\{h}"))
        };
        match chars.next() {
            Some('\\') => Ok('\\'),
            Some('"') => Ok('"'),
            Some('\'') => Ok('\''),
            Some('n') => Ok('\n'),
            Some('t') => Ok('\t'),
            Some('r') => Ok('\r'),
            Some('s') => Ok(' '),
            Some('x') => hex(chars, 2),
            Some('u') => hex(chars, 4),
            other => Err(format!("unknown escape \\{other:?}")),
        }
    }

    /// Specifiers, then variables: only the doubled forms may appear in what slate writes.
    fn resolve(w: &str) -> Result<String, String> {
        let mut out = String::new();
        let mut it = w.chars().peekable();
        while let Some(c) = it.next() {
            // Consumes the second of a pair.
            if (c == '%' || c == '$') && it.next() != Some(c) {
                return Err(format!("{c} not doubled in {w:?}"));
            }
            out.push(c);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::OsString;
    use std::os::unix::ffi::OsStringExt;

    fn q(s: &str) -> String {
        word(OsStr::new(s)).expect("utf-8")
    }

    #[test]
    fn plain_words_stay_bare() {
        for s in [
            "nginx:alpine",
            "--memory=128m",
            "/srv/www:/www:ro",
            "a,b",
            "x@y+z~^",
        ] {
            assert_eq!(q(s), s);
        }
    }

    #[test]
    fn specifiers_and_variables_are_doubled() {
        assert_eq!(q("100%"), "100%%");
        assert_eq!(q("$HOME"), "$$HOME");
        assert_eq!(q("${X}"), "\"$${X}\"");
        assert_eq!(q("%n$$"), "%%n$$$$");
    }

    #[test]
    fn quotes_backslashes_and_spaces() {
        assert_eq!(q("a b"), "\"a b\"");
        assert_eq!(q(r#"say "hi""#), r#""say \"hi\"""#);
        assert_eq!(q(r"back\slash"), r#""back\\slash""#);
        assert_eq!(q("it's"), "\"it's\"");
        assert_eq!(q("tab\there\nnl"), "\"tab\\there\\nnl\"");
        assert_eq!(q("\x01\x7f"), "\"\\x01\\x7f\"");
        assert_eq!(q("é"), "\"é\"");
    }

    #[test]
    fn empty_and_separator_words_are_quoted() {
        assert_eq!(q(""), "\"\"");
        assert_eq!(q(";"), "\";\"");
        assert_eq!(q("#not-a-comment"), "\"#not-a-comment\"");
    }

    #[test]
    fn non_utf8_is_refused() {
        let bad = OsString::from_vec(vec![b'a', 0xff, b'b']);
        assert_eq!(
            word(&bad),
            Err(QuoteError::NotUtf8("a\u{fffd}b".to_owned()))
        );
        assert!(program(&bad).is_err());
    }

    #[test]
    fn program_paths_systemd_refuses_are_refused() {
        assert_eq!(
            program(OsStr::new("/usr/local/bin/slate")).unwrap(),
            "/usr/local/bin/slate"
        );
        assert_eq!(
            program(OsStr::new("/opt/my tools/slate")).unwrap(),
            "\"/opt/my tools/slate\""
        );
        assert_eq!(
            program(OsStr::new("/opt/100%/slate")).unwrap(),
            "/opt/100%%/slate"
        );
        for bad in ["/opt/a\"b/slate", "/opt/a\\b", "/opt/it's", "/opt/a\nb"] {
            assert!(
                matches!(program(OsStr::new(bad)), Err(QuoteError::UnsafeProgram(_))),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn every_word_round_trips_through_the_model() {
        let words = [
            "",
            " ",
            ";",
            "a b",
            "$",
            "$$",
            "%",
            "%%",
            "${HOME}",
            "$HOME",
            "\"",
            "'",
            "\\",
            "\\\"",
            "a\\",
            "\n",
            "\t\r",
            "\x1b[0m",
            "\u{85}",
            "日本",
            "#x",
            "-",
            "--",
            "it's \"q\" \\ $x %n",
        ];
        let line: Vec<String> = words.iter().map(|w| q(w)).collect();
        let back = model::split(&line.join(" ")).expect("parses");
        assert_eq!(back, words);
    }

    #[test]
    fn all_ascii_and_some_unicode_round_trip() {
        // Every printable and control ASCII character (NUL cannot be in an argument), alone,
        // at the start, in the middle and at the end of a word.
        let mut words = Vec::new();
        for b in 1u8..0x80 {
            let c = b as char;
            words.push(c.to_string());
            words.push(format!("{c}x"));
            words.push(format!("x{c}x"));
            words.push(format!("x{c}"));
        }
        words.extend(["\u{a0}", "\u{2028}", "\u{feff}", "🦀"].map(String::from));
        let line: Vec<String> = words.iter().map(|w| q(w)).collect();
        let back = model::split(&line.join(" ")).expect("parses");
        assert_eq!(back, words);
    }

    #[test]
    fn the_model_rejects_what_systemd_would_read_differently() {
        assert!(model::split("a ; b").is_err());
        assert!(model::split("50%").is_err());
        assert!(model::split("$HOME").is_err());
        assert!(model::split("\"open").is_err());
    }

    #[test]
    fn text_doubles_percent() {
        assert_eq!(text("100% web\nx"), "100%% web x");
    }
}
