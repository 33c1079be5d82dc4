//! OCI hooks (`prestart`, `createRuntime`, `poststart`, `poststop`): programs the runtime
//! runs in its own namespaces at points of the life cycle ([`crate::lifecycle`]), each with
//! the container's state as JSON on its stdin and its own `timeout`.
//!
//! The first two may stop a container from being created (a failing one is the error);
//! the last two cannot undo what happened, so the spec makes a failure a warning and the
//! rest of the hooks and the life cycle go on.

use std::io::Write as _;
use std::os::fd::AsRawFd as _;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use nix::fcntl::{fcntl, FcntlArg, OFlag};
use oci_spec::runtime::Hook;

/// Why a hook did not succeed.
#[derive(Debug, thiserror::Error)]
pub enum HookError {
    #[error("cannot run the hook {path}")]
    Spawn {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the hook {path} failed ({status})")]
    Failed {
        path: PathBuf,
        status: std::process::ExitStatus,
    },
    #[error("the hook {path} timed out after {secs} s")]
    TimedOut { path: PathBuf, secs: i64 },
    /// The state did not fit a pipe (`/proc/sys/fs/pipe-max-size`, 1 MiB by default).
    #[error("the container's state ({0} bytes) does not fit a hook's stdin pipe; raise /proc/sys/fs/pipe-max-size or trim the annotations")]
    StateTooLarge(usize),
    #[error("{op} failed")]
    Io {
        op: &'static str,
        #[source]
        source: std::io::Error,
    },
}

impl HookError {
    /// What happened, without the hook's path (for a message that names it already).
    pub fn reason(&self) -> String {
        match self {
            HookError::Spawn { source, .. } => format!("could not run: {source}"),
            HookError::Failed { status, .. } => format!("failed ({status})"),
            HookError::TimedOut { secs, .. } => format!("timed out after {secs} s"),
            other => other.to_string(),
        }
    }

    /// The hook's path, where the failure is one hook's.
    pub fn path(&self) -> Option<&std::path::Path> {
        match self {
            HookError::Spawn { path, .. }
            | HookError::Failed { path, .. }
            | HookError::TimedOut { path, .. } => Some(path),
            _ => None,
        }
    }
}

/// Runs `hooks` in order; the first failure stops them and is the error (`prestart`,
/// `createRuntime`).
pub fn run(hooks: &[Hook], state: &serde_json::Value) -> Result<(), HookError> {
    run_indexed(hooks, state).map_err(|(_, e)| e)
}

/// [`run`], the failure with the index of the hook that failed (the container's process
/// reports in-container hooks by index).
pub(crate) fn run_indexed(
    hooks: &[Hook],
    state: &serde_json::Value,
) -> Result<(), (usize, HookError)> {
    let input = state_bytes(state).map_err(|e| (0, e))?;
    for (i, h) in hooks.iter().enumerate() {
        run_one(h, &input).map_err(|e| (i, e))?;
    }
    Ok(())
}

/// Runs every hook of `hooks`; a failing one does not stop the rest (`poststart`,
/// `poststop`). Returns the failures, which the caller reports as warnings.
pub fn run_all(hooks: &[Hook], state: &serde_json::Value) -> Vec<HookError> {
    let input = match state_bytes(state) {
        Ok(i) => i,
        Err(e) => return vec![e],
    };
    hooks
        .iter()
        .filter_map(|h| run_one(h, &input).err())
        .inspect(|e| tracing::debug!(error = %e, "hook failed"))
        .collect()
}

fn state_bytes(state: &serde_json::Value) -> Result<Vec<u8>, HookError> {
    serde_json::to_vec(state).map_err(|e| HookError::Io {
        op: "serialising the state",
        source: e.into(),
    })
}

fn run_one(h: &Hook, input: &[u8]) -> Result<(), HookError> {
    let path = h.path();
    let mut cmd = std::process::Command::new(path);
    if let Some((first, rest)) = h.args().as_deref().unwrap_or_default().split_first() {
        std::os::unix::process::CommandExt::arg0(&mut cmd, first);
        cmd.args(rest);
    }
    // The hook's environment is the spec's, nothing of the runtime's.
    cmd.env_clear();
    for e in h.env().iter().flatten() {
        if let Some((k, v)) = e.split_once('=') {
            cmd.env(k, v);
        }
    }
    cmd.stdin(state_pipe(input)?);
    let mut child = cmd.spawn().map_err(|source| HookError::Spawn {
        path: path.clone(),
        source,
    })?;
    let timeout = h.timeout().filter(|t| *t > 0);
    let deadline = timeout.map(|t| Instant::now() + Duration::from_secs(t as u64));
    let status = loop {
        let waited = child.try_wait().map_err(|source| HookError::Io {
            op: "waiting for a hook",
            source,
        })?;
        if let Some(s) = waited {
            break s;
        }
        if deadline.is_some_and(|d| Instant::now() > d) {
            let _ = child.kill();
            let _ = child.wait();
            return Err(HookError::TimedOut {
                path: path.clone(),
                secs: timeout.unwrap_or_default(),
            });
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    if !status.success() {
        return Err(HookError::Failed {
            path: path.clone(),
            status,
        });
    }
    Ok(())
}

/// A hook's stdin: a pipe that already holds the whole state, its write end closed.
///
/// Written before the hook starts, while this process still holds the read end, so a hook
/// that never reads its stdin (`/bin/true`) can neither block the runtime past the hook's
/// timeout nor end it by SIGPIPE, which a caller may keep at its default (runc's Go runtime
/// gets EPIPE for such pipes; a Rust program with SIGPIPE's default would be killed).
fn state_pipe(input: &[u8]) -> Result<std::process::Stdio, HookError> {
    let io = |op| {
        move |e: nix::errno::Errno| HookError::Io {
            op,
            source: e.into(),
        }
    };
    let (r, w) = nix::unistd::pipe2(OFlag::O_CLOEXEC | OFlag::O_NONBLOCK)
        .map_err(io("making a pipe for a hook's stdin"))?;
    // 64 KiB by default; a state with large annotations asks for more.
    let cap = fcntl(w.as_raw_fd(), FcntlArg::F_GETPIPE_SZ).unwrap_or(0);
    if usize::try_from(cap).unwrap_or(0) < input.len() {
        let want = libc::c_int::try_from(input.len()).unwrap_or(libc::c_int::MAX);
        fcntl(w.as_raw_fd(), FcntlArg::F_SETPIPE_SZ(want))
            .map_err(|_| HookError::StateTooLarge(input.len()))?;
    }
    let mut w = std::fs::File::from(w);
    w.write_all(input).map_err(|source| HookError::Io {
        op: "writing the state to a hook's stdin",
        source,
    })?;
    drop(w);
    // The hook reads at its own pace: blocking, as any program expects its stdin.
    fcntl(r.as_raw_fd(), FcntlArg::F_SETFL(OFlag::empty()))
        .map_err(io("setting up a hook's stdin"))?;
    Ok(std::process::Stdio::from(r))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// The program's path, then its argv (arg0 first), as a spec writes a hook.
    fn hook(path_and_argv: &[&str], timeout: Option<i64>) -> Hook {
        let mut h = Hook::default();
        h.set_path(PathBuf::from(path_and_argv[0]))
            .set_args(Some(
                path_and_argv[1..].iter().map(|s| s.to_string()).collect(),
            ))
            .set_timeout(timeout);
        h
    }

    #[test]
    fn each_hook_reads_the_state_and_the_first_failure_stops_them() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("log");
        let note = format!("cat >> {}; echo >> {}", log.display(), log.display());
        let state = serde_json::json!({"id": "c1", "big": "x".repeat(100 * 1024)});
        let ok = hook(&["/bin/sh", "sh", "-c", &note], None);
        // Never reads its stdin: neither blocks nor ends the caller.
        let deaf = hook(&["/bin/true", "true"], None);
        run(&[deaf.clone(), ok.clone(), deaf], &state).unwrap();
        let got = std::fs::read_to_string(&log).unwrap();
        assert_eq!(got.trim(), state.to_string());
        let bad = hook(&["/bin/sh", "sh", "-c", "exit 3"], None);
        let e = run(&[bad.clone(), ok.clone()], &state).unwrap_err();
        assert!(matches!(e, HookError::Failed { .. }), "{e}");
        assert_eq!(
            std::fs::read_to_string(&log).unwrap(),
            got,
            "stopped at the failure"
        );
        // run_all goes on past it.
        assert_eq!(run_all(&[bad, ok], &state).len(), 1);
        assert_eq!(std::fs::read_to_string(&log).unwrap().lines().count(), 2);
    }

    #[test]
    fn a_hook_past_its_timeout_is_killed() {
        let slow = hook(&["/bin/sleep", "sleep", "30"], Some(1));
        let e = run(&[slow], &serde_json::json!({})).unwrap_err();
        assert!(matches!(e, HookError::TimedOut { secs: 1, .. }), "{e}");
    }

    #[test]
    fn the_environment_is_the_hooks_alone() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("env");
        let mut h = hook(
            &["/bin/sh", "sh", "-c", &format!("env > {}", out.display())],
            None,
        );
        h.set_env(Some(vec!["ONLY=this".to_string()]));
        run(&[h], &serde_json::json!({})).unwrap();
        let env = std::fs::read_to_string(&out).unwrap();
        assert!(env.contains("ONLY=this"), "{env}");
        assert!(!env.contains("HOME="), "{env}");
    }
}
