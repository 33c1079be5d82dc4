//! The container's process: what to execute (args, env, the `PATH` search), as whom (uid, gid,
//! groups, umask), with which limits (rlimits), all prepared by the parent into C strings and
//! NULL-terminated pointer arrays, so the child's last steps before `execve` do not allocate.
//!
//! Guarantees: an executable that is not found anywhere on `PATH` yields `ENOENT` (docker's
//! 127), one that is found but cannot be executed yields its errno (`EACCES`, `ENOEXEC`...,
//! docker's 126), exactly as `execvp(3)` decides between the two.

use std::ffi::{c_char, CString};

use nix::errno::Errno;
use nix::unistd::{Gid, Uid};
use oci_spec::runtime::{PosixRlimitType, Process};

use crate::error::{Error, Stage};
use crate::syscall;

/// `PATH` used for the executable search when the spec's environment has none (docker's).
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// A resource limit: (resource, soft, hard).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Rlimit {
    pub resource: libc::c_int,
    pub soft: u64,
    pub hard: u64,
    pub name: PosixRlimitType,
}

/// Everything about the process to exec, ready for the child.
#[derive(Debug)]
pub(crate) struct ExecPlan {
    /// Where to look for the executable, in order.
    pub candidates: Vec<CString>,
    _argv: Vec<CString>,
    _env: Vec<CString>,
    argv_ptrs: Vec<*const c_char>,
    env_ptrs: Vec<*const c_char>,
    pub uid: Uid,
    pub gid: Gid,
    pub groups: Vec<Gid>,
    pub umask: Option<u32>,
    pub rlimits: Vec<Rlimit>,
    pub no_new_privs: bool,
    pub terminal: bool,
    pub oom_score_adj: Option<i32>,
}

fn cstring(what: &'static str, s: &[u8]) -> Result<CString, Error> {
    CString::new(s).map_err(|_| Error::Nul { what })
}

fn resource(t: PosixRlimitType) -> libc::c_int {
    use PosixRlimitType::*;
    (match t {
        RlimitCpu => libc::RLIMIT_CPU,
        RlimitFsize => libc::RLIMIT_FSIZE,
        RlimitData => libc::RLIMIT_DATA,
        RlimitStack => libc::RLIMIT_STACK,
        RlimitCore => libc::RLIMIT_CORE,
        RlimitRss => libc::RLIMIT_RSS,
        RlimitNproc => libc::RLIMIT_NPROC,
        RlimitNofile => libc::RLIMIT_NOFILE,
        RlimitMemlock => libc::RLIMIT_MEMLOCK,
        RlimitAs => libc::RLIMIT_AS,
        RlimitLocks => libc::RLIMIT_LOCKS,
        RlimitSigpending => libc::RLIMIT_SIGPENDING,
        RlimitMsgqueue => libc::RLIMIT_MSGQUEUE,
        RlimitNice => libc::RLIMIT_NICE,
        RlimitRtprio => libc::RLIMIT_RTPRIO,
        RlimitRttime => libc::RLIMIT_RTTIME,
    }) as libc::c_int
}

impl ExecPlan {
    pub fn new(process: &Process) -> Result<ExecPlan, Error> {
        let args = process.args().clone().unwrap_or_default();
        let arg0 = args.first().ok_or(Error::NoArgs)?;
        let argv = args
            .iter()
            .map(|a| cstring("process.args", a.as_bytes()))
            .collect::<Result<Vec<_>, _>>()?;
        let env_list = process.env().clone().unwrap_or_default();
        let env = env_list
            .iter()
            .map(|e| cstring("process.env", e.as_bytes()))
            .collect::<Result<Vec<_>, _>>()?;
        let path_var = env_list
            .iter()
            .rev()
            .find_map(|e| e.strip_prefix("PATH="))
            .unwrap_or(DEFAULT_PATH);
        let candidates = if arg0.contains('/') {
            vec![cstring("process.args", arg0.as_bytes())?]
        } else {
            path_var
                .split(':')
                .map(|dir| {
                    // An empty PATH entry means the current directory, as for execvp.
                    let dir = if dir.is_empty() { "." } else { dir };
                    cstring(
                        "PATH",
                        format!("{}/{arg0}", dir.trim_end_matches('/')).as_bytes(),
                    )
                })
                .collect::<Result<Vec<_>, _>>()?
        };
        let mut argv_ptrs: Vec<*const c_char> = argv.iter().map(|a| a.as_ptr()).collect();
        argv_ptrs.push(std::ptr::null());
        let mut env_ptrs: Vec<*const c_char> = env.iter().map(|e| e.as_ptr()).collect();
        env_ptrs.push(std::ptr::null());

        let user = process.user();
        let rlimits = process
            .rlimits()
            .iter()
            .flatten()
            .map(|r| Rlimit {
                resource: resource(r.typ()),
                soft: r.soft(),
                hard: r.hard(),
                name: r.typ(),
            })
            .collect();
        Ok(ExecPlan {
            candidates,
            _argv: argv,
            _env: env,
            argv_ptrs,
            env_ptrs,
            uid: Uid::from_raw(user.uid()),
            gid: Gid::from_raw(user.gid()),
            groups: user
                .additional_gids()
                .iter()
                .flatten()
                .map(|g| Gid::from_raw(*g))
                .collect(),
            umask: user.umask(),
            rlimits,
            no_new_privs: process.no_new_privileges().unwrap_or(false),
            terminal: process.terminal().unwrap_or(false),
            oom_score_adj: process.oom_score_adj(),
        })
    }

    /// The candidate at `index`, for messages.
    pub fn candidate(&self, index: u32) -> String {
        self.candidates
            .get(index as usize)
            .map(|c| c.to_string_lossy().into_owned())
            .unwrap_or_default()
    }

    /// Child: applies the rlimits; a limit the kernel refuses is reported with its index.
    pub fn apply_rlimits(&self) -> Result<(), (u32, Errno)> {
        for (i, r) in self.rlimits.iter().enumerate() {
            syscall::setrlimit(r.resource, r.soft, r.hard).map_err(|e| (i as u32, e))?;
        }
        Ok(())
    }

    /// Child: tries every candidate like `execvp(3)`. Returns only on failure, with the
    /// candidate that decided the error: the first one that exists but failed, else the last.
    ///
    /// CVE-2019-5736: a candidate reached through a `/proc` magic link (`/bin/evil ->
    /// /proc/self/exe`, `/proc/1/root/...`) is refused with [`Stage::ExecMagicLink`]: such a
    /// path leads to a file another process chose (the runtime's own binary, the host's
    /// root), never to a program of the image.
    pub fn exec(&self) -> (Stage, u32, Errno) {
        let mut decisive: Option<(u32, Errno)> = None;
        for (i, path) in self.candidates.iter().enumerate() {
            if syscall::through_magic_link(path) {
                return (Stage::ExecMagicLink, i as u32, Errno::ELOOP);
            }
            let err = syscall::execve(path, &self.argv_ptrs, &self.env_ptrs);
            match err {
                Errno::ENOENT | Errno::ENOTDIR => {}
                e => {
                    if decisive.is_none() {
                        decisive = Some((i as u32, e));
                    }
                }
            }
        }
        let (index, errno) = decisive.unwrap_or((
            self.candidates.len().saturating_sub(1) as u32,
            Errno::ENOENT,
        ));
        (Stage::Exec, index, errno)
    }
}

/// The display form of an rlimit type for messages (`RLIMIT_NOFILE`).
pub(crate) fn rlimit_name(t: PosixRlimitType) -> String {
    let s = format!("{t:?}");
    let rest = s.strip_prefix("Rlimit").unwrap_or(&s);
    format!("RLIMIT_{}", rest.to_uppercase())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use oci_spec::runtime::ProcessBuilder;

    #[test]
    #[allow(clippy::unwrap_used)]
    fn path_search_candidates() {
        let p = ProcessBuilder::default()
            .args(vec!["sh".to_string()])
            .env(vec!["PATH=/bin:/usr/bin/".to_string()])
            .build()
            .unwrap();
        let plan = ExecPlan::new(&p).unwrap();
        assert_eq!(plan.candidate(0), "/bin/sh");
        assert_eq!(plan.candidate(1), "/usr/bin/sh");
        let p = ProcessBuilder::default()
            .args(vec!["/x/y".to_string()])
            .build()
            .unwrap();
        assert_eq!(ExecPlan::new(&p).unwrap().candidates.len(), 1);
    }

    #[test]
    fn rlimit_names() {
        assert_eq!(rlimit_name(PosixRlimitType::RlimitNofile), "RLIMIT_NOFILE");
    }
}
