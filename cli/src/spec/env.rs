//! The process environment, in docker's order of precedence: defaults (`PATH`, `HOSTNAME`,
//! `TERM` with `-t`), the image's `Env`, each `--env-file`, then each `-e`; a later value for a
//! name replaces the earlier one in place (docker's `ReplaceOrAppendEnvValues`), and `HOME`
//! comes last from the user's passwd entry only if nothing set it (runc does that at exec).

use std::path::{Path, PathBuf};

use super::SpecError;

/// docker's PATH for an image that sets none.
pub(crate) const DEFAULT_PATH: &str =
    "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

pub(crate) struct EnvInput<'a> {
    pub image_env: Vec<String>,
    pub env_files: &'a [PathBuf],
    pub env: &'a [String],
    pub hostname: &'a str,
    pub tty: bool,
    pub home: &'a str,
    pub host_env: &'a dyn Fn(&str) -> Option<String>,
}

/// An ordered environment where setting a name again replaces its value in place.
#[derive(Default)]
struct Env(Vec<(String, String)>);

impl Env {
    fn set(&mut self, name: &str, value: &str) {
        match self.0.iter_mut().find(|(n, _)| n == name) {
            Some(slot) => slot.1 = value.to_owned(),
            None => self.0.push((name.to_owned(), value.to_owned())),
        }
    }

    fn has(&self, name: &str) -> bool {
        self.0.iter().any(|(n, _)| n == name)
    }
}

pub(crate) fn build(input: &EnvInput) -> Result<Vec<String>, SpecError> {
    let mut env = Env::default();
    env.set("PATH", DEFAULT_PATH);
    env.set("HOSTNAME", input.hostname);
    if input.tty {
        env.set("TERM", "xterm");
    }
    for e in &input.image_env {
        // An entry without `=` is no variable; the image's mistake is skipped, not fatal.
        if let Some((n, v)) = e.split_once('=') {
            if !n.is_empty() {
                env.set(n, v);
            }
        }
    }
    for path in input.env_files {
        let bytes = std::fs::read(path).map_err(|source| SpecError::EnvFileRead {
            path: path.clone(),
            source,
        })?;
        for (name, value) in parse_env_file(path, &bytes, input.host_env)? {
            env.set(&name, &value);
        }
    }
    for e in input.env {
        let bad = |reason| SpecError::Env {
            value: e.clone(),
            reason,
        };
        match e.split_once('=') {
            Some(("", _)) => return Err(bad("no variable name before '='")),
            Some((n, v)) => env.set(n, v),
            // `-e NAME`: slate's own value; unset there means unset in the container, as docker.
            None if e.is_empty() => return Err(bad("expected NAME=VALUE or NAME")),
            None => {
                if let Some(v) = (input.host_env)(e) {
                    env.set(e, &v);
                }
            }
        }
    }
    if !env.has("HOME") {
        env.set("HOME", input.home);
    }
    let mut out = Vec::with_capacity(env.0.len());
    for (n, v) in env.0 {
        if n.contains('\0') || v.contains('\0') {
            return Err(SpecError::Env {
                value: n,
                reason: "contains a NUL byte",
            });
        }
        out.push(format!("{n}={v}"));
    }
    Ok(out)
}

/// docker's `--env-file` format: one NAME=VALUE per line, the value verbatim (no quotes, no
/// expansion); blank lines and lines starting with `#` skipped; `NAME` alone takes slate's
/// own value (and is left out when slate has none).
fn parse_env_file(
    path: &Path,
    bytes: &[u8],
    host_env: &dyn Fn(&str) -> Option<String>,
) -> Result<Vec<(String, String)>, SpecError> {
    let text = std::str::from_utf8(bytes).map_err(|_| SpecError::EnvFileLine {
        path: path.to_path_buf(),
        line: 1 + bytes
            .iter()
            .take(
                std::str::from_utf8(bytes)
                    .err()
                    .map_or(0, |e| e.valid_up_to()),
            )
            .filter(|&&b| b == b'\n')
            .count(),
        reason: "not valid UTF-8",
    })?;
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut out = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let bad = |reason| SpecError::EnvFileLine {
            path: path.to_path_buf(),
            line: i + 1,
            reason,
        };
        let line = raw.trim_start();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (name, value) = match line.split_once('=') {
            Some((n, v)) => (n, Some(v)),
            None => (line.trim_end(), None),
        };
        if name.is_empty() {
            return Err(bad("no variable name before '='"));
        }
        if name.chars().any(char::is_whitespace) {
            return Err(bad("the variable name contains whitespace"));
        }
        match value {
            Some(v) => out.push((name.to_owned(), v.to_owned())),
            None => {
                if let Some(v) = host_env(name) {
                    out.push((name.to_owned(), v));
                }
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn host(name: &str) -> Option<String> {
        match name {
            "FROM_HOST" => Some("host value".into()),
            _ => None,
        }
    }

    fn input<'a>(image_env: &[&str], env: &'a [String], files: &'a [PathBuf]) -> EnvInput<'a> {
        EnvInput {
            image_env: image_env.iter().map(|s| s.to_string()).collect(),
            env_files: files,
            env,
            hostname: "abc123",
            tty: false,
            home: "/root",
            host_env: &host,
        }
    }

    #[test]
    fn defaults_without_image_env() {
        let env = build(&input(&[], &[], &[])).unwrap();
        assert_eq!(
            env,
            vec![
                format!("PATH={DEFAULT_PATH}"),
                "HOSTNAME=abc123".to_string(),
                "HOME=/root".to_string()
            ]
        );
    }

    #[test]
    fn image_path_replaces_default_in_place_and_tty_sets_term() {
        let mut i = input(
            &["PATH=/opt/bin", "A=1", "junk-without-equals", "=x"],
            &[],
            &[],
        );
        i.tty = true;
        let env = build(&i).unwrap();
        assert_eq!(env[0], "PATH=/opt/bin");
        assert!(env.contains(&"TERM=xterm".to_string()));
        assert!(env.contains(&"A=1".to_string()));
        assert!(!env
            .iter()
            .any(|e| e.starts_with("junk") || e.starts_with('=')));
    }

    #[test]
    fn precedence_image_then_files_then_flags() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("app.env");
        std::fs::write(
            &f,
            "\u{feff}# comment\n\n   \nA=from file\nB= spaced \"quoted\" \nFROM_HOST\nUNSET_ON_HOST\n  C=indented\n",
        )
        .unwrap();
        let files = vec![f];
        let flags = vec![
            "B=from flag".to_string(),
            "FROM_HOST".to_string(),
            "UNSET_ON_HOST".to_string(),
            "HOME=/custom".to_string(),
            "EMPTY=".to_string(),
        ];
        let env = build(&input(&["A=image", "B=image", "Z=image"], &flags, &files)).unwrap();
        assert!(env.contains(&"A=from file".to_string()));
        assert!(env.contains(&"B=from flag".to_string()));
        assert!(env.contains(&"Z=image".to_string()));
        assert!(env.contains(&"C=indented".to_string()));
        assert!(env.contains(&"FROM_HOST=host value".to_string()));
        assert!(env.contains(&"EMPTY=".to_string()));
        assert!(!env.iter().any(|e| e.starts_with("UNSET_ON_HOST")));
        assert!(env.contains(&"HOME=/custom".to_string()));
        assert_eq!(env.iter().filter(|e| e.starts_with("HOME=")).count(), 1);
        // in place: A keeps the image's position (after PATH and HOSTNAME)
        assert_eq!(env[2], "A=from file");
    }

    #[test]
    fn env_file_value_is_verbatim() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("e");
        std::fs::write(&f, "Q=\"a b\" # not a comment\nEQ=a=b\n").unwrap();
        let files = vec![f];
        let env = build(&input(&[], &[], &files)).unwrap();
        assert!(env.contains(&"Q=\"a b\" # not a comment".to_string()));
        assert!(env.contains(&"EQ=a=b".to_string()));
    }

    #[test]
    fn env_file_errors_name_file_and_line() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("bad.env");
        std::fs::write(&f, "OK=1\n=novalue\n").unwrap();
        let files = vec![f.clone()];
        let e = build(&input(&[], &[], &files)).unwrap_err();
        assert!(matches!(e, SpecError::EnvFileLine { line: 2, .. }), "{e}");
        assert!(e.to_string().contains("bad.env line 2"), "{e}");

        std::fs::write(&f, "MY VAR=1\n").unwrap();
        assert!(build(&input(&[], &[], &files)).is_err());

        std::fs::write(&f, b"A=1\nB=\xff\n").unwrap();
        let e = build(&input(&[], &[], &files)).unwrap_err();
        assert!(matches!(e, SpecError::EnvFileLine { line: 2, .. }), "{e}");

        let missing = vec![dir.path().join("missing")];
        assert!(matches!(
            build(&input(&[], &[], &missing)),
            Err(SpecError::EnvFileRead { .. })
        ));
    }

    #[test]
    fn bad_flags() {
        for f in ["=x", ""] {
            let flags = vec![f.to_string()];
            assert!(matches!(
                build(&input(&[], &flags, &[])),
                Err(SpecError::Env { .. })
            ));
        }
    }
}
