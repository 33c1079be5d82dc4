//! What `ps` and `images` share with docker's: `--format` (`table`, `json`, or a template
//! such as `{{.Names}}\t{{.Status}}`, with an optional `table ` prefix for a header and
//! aligned columns) and `--filter KEY=VALUE` (the same key given twice matches either
//! value; different keys must all match).
//!
//! Templates are the subset of Go's text/template that docker's documentation uses:
//! `{{.Field}}` and `{{.Label "key"}}`, with `\t` and `\n` escapes. Anything else is refused
//! with the list of fields, rather than printed wrong.

use anyhow::{anyhow, bail};

/// A parsed `--format`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OutputFormat {
    Table,
    Json,
    Template { header: bool, parts: Vec<Part> },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Part {
    Text(String),
    Field(String),
    Label(String),
}

impl OutputFormat {
    /// Parses `--format`, checking every field against `fields`.
    pub fn parse(s: &str, fields: &[(&str, &str)]) -> anyhow::Result<OutputFormat> {
        match s {
            "table" | "" => return Ok(OutputFormat::Table),
            "json" => return Ok(OutputFormat::Json),
            _ => {}
        }
        let (header, body) = match s.strip_prefix("table") {
            Some(rest) if rest.starts_with([' ', '\t']) => (true, rest.trim_start()),
            _ => (false, s),
        };
        let body = body.replace("\\t", "\t").replace("\\n", "\n");
        let known = || {
            fields
                .iter()
                .map(|(f, _)| format!(".{f}"))
                .collect::<Vec<_>>()
                .join(" ")
        };
        let mut parts = Vec::new();
        let mut rest = body.as_str();
        while let Some(start) = rest.find("{{") {
            if start > 0 {
                parts.push(Part::Text(rest[..start].to_string()));
            }
            let end = rest[start..]
                .find("}}")
                .map(|e| start + e)
                .ok_or_else(|| anyhow!("invalid --format {s:?}: {{{{ without }}}}"))?;
            let inner = rest[start + 2..end].trim();
            if let Some(arg) = inner.strip_prefix(".Label ") {
                let key = arg.trim().trim_matches('"');
                parts.push(Part::Label(key.to_string()));
            } else if let Some(f) = inner.strip_prefix('.') {
                if !fields.iter().any(|(k, _)| *k == f) {
                    bail!(
                        "invalid --format {s:?}: no field .{f} (fields: {})",
                        known()
                    );
                }
                parts.push(Part::Field(f.to_string()));
            } else {
                bail!(
                    "invalid --format {s:?}: slate understands {{{{.Field}}}} and {{{{.Label \"key\"}}}} (fields: {})",
                    known()
                );
            }
            rest = &rest[end + 2..];
        }
        if !rest.is_empty() {
            parts.push(Part::Text(rest.to_string()));
        }
        if parts.iter().all(|p| matches!(p, Part::Text(_))) {
            bail!("invalid --format {s:?}: expected table, json or a template such as {{{{.ID}}}}");
        }
        Ok(OutputFormat::Template { header, parts })
    }
}

/// Renders `rows` (each a lookup of field name, or `Label key`) with a template; with
/// `header`, a header row from `fields`' titles and the columns aligned on tabs.
pub fn render<T>(
    header: bool,
    parts: &[Part],
    fields: &[(&str, &str)],
    rows: &[T],
    get: impl Fn(&T, &Part) -> String,
) -> String {
    let one = |row: &T| -> String {
        parts
            .iter()
            .map(|p| match p {
                Part::Text(t) => t.clone(),
                other => get(row, other),
            })
            .collect()
    };
    if !header {
        let mut out = String::new();
        for r in rows {
            out.push_str(&one(r));
            out.push('\n');
        }
        return out;
    }
    let title = |p: &Part| match p {
        Part::Field(f) => fields
            .iter()
            .find(|(k, _)| k == f)
            .map_or_else(|| f.to_uppercase(), |(_, t)| t.to_string()),
        Part::Label(k) => k.to_uppercase(),
        Part::Text(t) => t.clone(),
    };
    let head: String = parts.iter().map(title).collect();
    let cols: Vec<String> = head.split('\t').map(str::to_owned).collect();
    let cols_ref: Vec<&str> = cols.iter().map(String::as_str).collect();
    let body: Vec<Vec<String>> = rows
        .iter()
        .map(|r| one(r).split('\t').map(str::to_owned).collect())
        .collect();
    crate::output::table(&cols_ref, &body)
}

/// `--filter` values, by key.
#[derive(Debug, Default)]
pub struct Filters(Vec<(String, String)>);

impl Filters {
    pub fn parse(flags: &[String], keys: &[&str]) -> anyhow::Result<Filters> {
        let mut out = Vec::new();
        for f in flags {
            let (k, v) = f
                .split_once('=')
                .ok_or_else(|| anyhow!("invalid --filter {f:?}: expected KEY=VALUE"))?;
            if !keys.contains(&k) {
                bail!(
                    "invalid --filter {f:?}: unknown key {k} (slate filters on {})",
                    keys.join(", ")
                );
            }
            out.push((k.to_string(), v.to_string()));
        }
        Ok(Filters(out))
    }

    /// Whether every key given has at least one value `matches` accepts.
    pub fn accept(&self, matches: &dyn Fn(&str, &str) -> bool) -> bool {
        let mut keys: Vec<&str> = self.0.iter().map(|(k, _)| k.as_str()).collect();
        keys.dedup();
        keys.iter().all(|k| {
            self.0
                .iter()
                .filter(|(fk, _)| fk == k)
                .any(|(_, v)| matches(k, v))
        })
    }
}

/// `label=KEY` or `label=KEY=VALUE` against a label map.
pub fn label_matches(labels: &std::collections::BTreeMap<String, String>, want: &str) -> bool {
    match want.split_once('=') {
        Some((k, v)) => labels.get(k).is_some_and(|l| l == v),
        None => labels.contains_key(want),
    }
}

/// docker's `reference=` patterns: `*` matches within a path component.
pub fn glob(pattern: &str, text: &str) -> bool {
    fn rec(p: &[u8], t: &[u8]) -> bool {
        match (p.first(), t.first()) {
            (None, None) => true,
            (Some(b'*'), _) => {
                rec(&p[1..], t) || (!t.is_empty() && t[0] != b'/' && rec(p, &t[1..]))
            }
            (Some(a), Some(b)) if a == b => rec(&p[1..], &t[1..]),
            _ => false,
        }
    }
    rec(pattern.as_bytes(), text.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    const F: &[(&str, &str)] = &[
        ("ID", "CONTAINER ID"),
        ("Names", "NAMES"),
        ("Status", "STATUS"),
    ];

    #[test]
    fn templates() {
        assert_eq!(
            OutputFormat::parse("table", F).unwrap(),
            OutputFormat::Table
        );
        assert_eq!(OutputFormat::parse("json", F).unwrap(), OutputFormat::Json);
        let OutputFormat::Template { header, parts } =
            OutputFormat::parse("{{.Names}}: {{ .Status }} {{.Label \"app\"}}", F).unwrap()
        else {
            panic!()
        };
        assert!(!header);
        let get = |_: &(), p: &Part| match p {
            Part::Field(f) if f == "Names" => "web".to_string(),
            Part::Field(_) => "Up".to_string(),
            Part::Label(k) => format!("<{k}>"),
            Part::Text(_) => unreachable!(),
        };
        assert_eq!(render(false, &parts, F, &[()], get), "web: Up <app>\n");
        let OutputFormat::Template { header, parts } =
            OutputFormat::parse("table {{.ID}}\\t{{.Names}}", F).unwrap()
        else {
            panic!()
        };
        assert!(header);
        let out = render(true, &parts, F, &[()], get);
        assert_eq!(out.lines().next().unwrap(), "CONTAINER ID   NAMES");
        for bad in ["{{.Nope}}", "{{.Names", "{{json .}}", "plain"] {
            assert!(OutputFormat::parse(bad, F).is_err(), "{bad}");
        }
    }

    #[test]
    fn filters_and_globs() {
        let f = Filters::parse(
            &["name=a".into(), "name=b".into(), "status=running".into()],
            &["name", "status"],
        )
        .unwrap();
        assert!(f.accept(&|k, v| (k == "name" && v == "b") || (k == "status" && v == "running")));
        assert!(!f.accept(&|k, v| k == "name" && v == "b"));
        assert!(Filters::parse(&["bogus=1".into()], &["name"]).is_err());
        assert!(Filters::parse(&["novalue".into()], &["name"]).is_err());
        assert!(glob("nginx*", "nginx:alpine"));
        assert!(glob("*/web:*", "registry.example.com/web:1"));
        assert!(!glob("nginx", "nginx:alpine"));
        assert!(!glob("*:1", "a/b:1"));
    }
}
