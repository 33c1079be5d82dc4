//! `slate doctor`: what to ask before the first run and after a failure. Each check probes the
//! real thing where it can (it mounts a tiny detached overlay on the store's file system, loads
//! the device filter, installs the seccomp filter and creates a user namespace in short-lived
//! children, connects to the registries) and prints one line: OK, WARN or FAIL, its name, what
//! it found and, unless OK, the exact fix on the same line. `--format json` prints the same as
//! `{"checks": [{name, status, detail, fix?}], "ok", "warn", "fail"}`.
//!
//! Exit status: 1 when any check FAILs (a plain `slate run` would fail here), else 0; a WARN is
//! something only some runs or flags meet (a disabled memory controller refuses `--memory`).
//!
//! The probes that fork run before the registry checks start their threads.

mod cgroups;
mod host;
mod network;
mod storage;

use clap::Args;

use crate::cli::Format;
use crate::config::Settings;

#[derive(Debug, Args)]
pub struct DoctorArgs {
    /// Output format
    #[arg(long, value_enum, default_value = "table")]
    pub format: Format,
    /// Do not try to reach the registries (an air-gapped board that gets images by `slate load`)
    #[arg(long, visible_alias = "no-network")]
    pub offline: bool,
}

/// A check's verdict, worst last.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Status {
    Ok,
    Warn,
    Fail,
}

impl Status {
    fn label(self) -> &'static str {
        match self {
            Status::Ok => "OK",
            Status::Warn => "WARN",
            Status::Fail => "FAIL",
        }
    }
}

/// One line of the report.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Check {
    /// Stable, for scripts: `kernel`, `cgroup-memory`, `registry:docker.io`...
    pub name: String,
    pub status: Status,
    /// What was found.
    pub detail: String,
    /// What to do, for WARN and FAIL.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fix: Option<String>,
}

impl Check {
    pub fn ok(name: impl Into<String>, detail: impl Into<String>) -> Check {
        Check {
            name: name.into(),
            status: Status::Ok,
            detail: detail.into(),
            fix: None,
        }
    }

    pub fn warn(
        name: impl Into<String>,
        detail: impl Into<String>,
        fix: impl Into<String>,
    ) -> Check {
        Check {
            name: name.into(),
            status: Status::Warn,
            detail: detail.into(),
            fix: Some(fix.into()),
        }
    }

    pub fn fail(
        name: impl Into<String>,
        detail: impl Into<String>,
        fix: impl Into<String>,
    ) -> Check {
        Check {
            name: name.into(),
            status: Status::Fail,
            detail: detail.into(),
            fix: Some(fix.into()),
        }
    }
}

pub fn run(settings: &Settings, args: DoctorArgs) -> anyhow::Result<u8> {
    let mut checks = vec![host::privileges(), host::kernel(), host::arch()];
    checks.extend(cgroups::checks());
    checks.push(host::seccomp());
    checks.push(host::userns());
    checks.push(host::cni(settings));
    checks.extend(storage::checks(settings));
    if args.offline {
        checks.push(Check::ok(
            "registries",
            "not checked (--offline): images come from `slate load` or the store",
        ));
    } else {
        checks.extend(network::checks(settings));
    }
    let count = |s| checks.iter().filter(|c| c.status == s).count();
    let (ok, warn, fail) = (count(Status::Ok), count(Status::Warn), count(Status::Fail));
    match args.format {
        Format::Json => {
            let v = serde_json::json!({ "checks": checks, "ok": ok, "warn": warn, "fail": fail });
            println!("{}", serde_json::to_string_pretty(&v)?);
        }
        Format::Table => {
            print!("{}", render(&checks));
            println!("{} checks: {ok} OK, {warn} WARN, {fail} FAIL", checks.len());
        }
    }
    Ok(if fail > 0 { 1 } else { 0 })
}

/// One line per check: status, name, what was found, and the fix after ` -- fix: `.
fn render(checks: &[Check]) -> String {
    let width = checks.iter().map(|c| c.name.len()).max().unwrap_or(0);
    let mut out = String::new();
    for c in checks {
        out.push_str(&format!(
            "{:<4}  {:<width$}  {}",
            c.status.label(),
            c.name,
            c.detail
        ));
        if let Some(fix) = &c.fix {
            out.push_str(" -- fix: ");
            out.push_str(fix);
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_per_check_with_the_fix_on_it() {
        let checks = vec![
            Check::ok("kernel", "6.1.0"),
            Check::warn(
                "cgroup-memory",
                "not available",
                "append cgroup_enable=memory",
            ),
        ];
        assert_eq!(
            render(&checks),
            "OK    kernel         6.1.0\n\
             WARN  cgroup-memory  not available -- fix: append cgroup_enable=memory\n"
        );
    }

    #[test]
    fn json_names_the_status_like_the_table() {
        let v = serde_json::to_value(Check::fail("overlayfs", "refused", "use ext4")).unwrap();
        assert_eq!(v["status"], "FAIL");
        assert_eq!(v["fix"], "use ext4");
        let v = serde_json::to_value(Check::ok("kernel", "6.1")).unwrap();
        assert!(v.get("fix").is_none());
        assert!(Status::Fail > Status::Warn && Status::Warn > Status::Ok);
    }
}
