//! `slate exec`: runs a command in a running container. The process is the container's own,
//! from the spec it was started with (saved in the state dir), with the command, environment,
//! user and working directory changed as asked: same namespaces, cgroup, capabilities,
//! seccomp filter, no_new_privs and rlimits (see `slate_runtime::exec`, which also explains the
//! CVE-2019-5736 and CVE-2024-21626 measures).

use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context};
use nix::unistd::Pid;
use slate_runtime::exec::{exec, read_container_file, ExecOptions};

use super::ExitWith;
use crate::config::Settings;
use crate::containers;
use crate::state::Status;
use crate::EXIT_SLATE_FAILED;

/// The most of `/etc/passwd` or `/etc/group` read to resolve `-u`.
const MAX_ID_FILE: u64 = 4 << 20;

#[derive(Debug, clap::Args)]
pub struct ExecArgs {
    /// Keep standard input open
    #[arg(short, long)]
    pub interactive: bool,
    /// Allocate a pseudo-TTY
    #[arg(short, long)]
    pub tty: bool,
    /// User: name|uid[:group|gid], resolved through the container's /etc/passwd and /etc/group
    #[arg(short, long)]
    pub user: Option<String>,
    /// Set environment variables (NAME=VALUE, or NAME to take it from slate's environment)
    #[arg(short, long = "env", value_name = "NAME[=VALUE]")]
    pub env: Vec<String>,
    /// Working directory inside the container
    #[arg(short, long)]
    pub workdir: Option<String>,
    /// Container name or id (prefix)
    pub container: String,
    /// Command and arguments
    #[arg(required = true, trailing_var_arg = true, allow_hyphen_values = true)]
    pub command: Vec<String>,
}

pub fn run(settings: &Settings, args: ExecArgs) -> anyhow::Result<u8> {
    let (mut opts, name) =
        prepare(settings, &args).map_err(|e| ExitWith::wrap(EXIT_SLATE_FAILED, e))?;
    if !args.interactive {
        // The process gets our stdio; without -i, an empty stdin as with docker.
        let null = std::fs::File::open("/dev/null").context("cannot open /dev/null")?;
        opts.stdio[0] = Some(null.into());
    }
    match exec(opts) {
        Ok(status) => Ok(u8::try_from(status.code() & 0xff).unwrap_or(EXIT_SLATE_FAILED)),
        Err(e) => {
            let code = u8::try_from(e.exit_code()).unwrap_or(EXIT_SLATE_FAILED);
            Err(ExitWith::wrap(
                code,
                anyhow!(e).context(format!("cannot exec in container {name}")),
            ))
        }
    }
}

fn prepare(settings: &Settings, args: &ExecArgs) -> anyhow::Result<(ExecOptions, String)> {
    let sd = containers::open_swept(settings)?;
    let rec = sd.find(&args.container)?;
    let pid = match rec.pid {
        Some(p) if rec.status == Status::Running && rec.container_alive() => Pid::from_raw(p),
        _ => bail!("container {} is not running", rec.name),
    };
    if crate::commands::lifecycle::is_paused(&sd, &rec.id) {
        bail!(
            "container {} is paused: `slate unpause {}` first",
            rec.name,
            rec.name
        );
    }
    let spec_path = sd.config_path(&rec.id)?;
    let spec = slate_runtime::bundle::load(&spec_path)
        .with_context(|| format!("cannot read {}", spec_path.display()))?;
    let mut process = spec
        .process()
        .clone()
        .ok_or_else(|| anyhow!("{} has no process", spec_path.display()))?;
    process.set_args(Some(args.command.clone()));
    process.set_terminal(Some(args.tty));
    process.set_console_size(None);

    let mut env = process.env().clone().unwrap_or_default();
    if let Some(u) = &args.user {
        let read = |p: &str| {
            read_container_file(pid, Path::new(p), MAX_ID_FILE)
                .ok()
                .flatten()
        };
        let user = crate::spec::user::resolve(Some(u), &read)?;
        let mut spec_user = process.user().clone();
        spec_user.set_uid(user.uid);
        spec_user.set_gid(user.gid);
        spec_user.set_additional_gids(Some(user.additional_gids.clone()));
        process.set_user(spec_user);
        set_env(&mut env, &format!("HOME={}", user.home));
    }
    if args.tty && !env.iter().any(|e| e.starts_with("TERM=")) {
        env.push("TERM=xterm".to_string());
    }
    for e in &args.env {
        if e.contains('=') {
            set_env(&mut env, e);
        } else if let Ok(v) = std::env::var(e) {
            set_env(&mut env, &format!("{e}={v}"));
        }
    }
    process.set_env(Some(env));
    if let Some(w) = &args.workdir {
        let w = PathBuf::from(w);
        let cwd = if w.is_absolute() {
            w
        } else {
            process.cwd().join(w)
        };
        process.set_cwd(cwd);
    }

    let seccomp = spec.linux().as_ref().and_then(|l| l.seccomp().clone());
    let cgroup = slate_runtime::cgroups::Cgroup::open_recorded(
        &rec.id,
        rec.cgroups_path.as_deref(),
        &rec.cgroup_paths,
    )
    .with_context(|| format!("cannot find the cgroup of container {}", rec.name))?;
    // Last look before joining: still the same process (not a reused PID)?
    if !rec.container_alive() {
        bail!("container {} is not running", rec.name);
    }
    Ok((
        ExecOptions {
            pid,
            process,
            seccomp,
            seccomp_cache: Some(crate::commands::run::seccomp_cache(&rec.store_root)),
            cgroup: Some(cgroup),
            stdio: [None, None, None],
        },
        rec.name,
    ))
}

/// Sets `NAME=VALUE` in `env`, replacing an earlier value of NAME.
fn set_env(env: &mut Vec<String>, kv: &str) {
    let name = kv.split('=').next().unwrap_or(kv);
    env.retain(|e| e.split('=').next() != Some(name));
    env.push(kv.to_string());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_overrides_replace() {
        let mut env = vec!["A=1".to_string(), "B=2".to_string()];
        set_env(&mut env, "A=3");
        set_env(&mut env, "C=4");
        assert_eq!(env, vec!["B=2", "A=3", "C=4"]);
    }
}
