//! Operations on containers (detached, and foreground ones through their records) shared by the verbs (`stop`, `kill`, `rm`, `run
//! --replace`...): stopping with the stop signal then SIGKILL, removing, waiting, and the sweep
//! that cleans up after dead supervisors.
//!
//! The sweep runs at the start of every container command, under the state dir's lock. A run is
//! dead when its record says it is active but its supervisor is gone (PID and start time, so a
//! reused PID does not count). What it left is then removed: the container's processes (the
//! cgroup's, which covers a PID 1 that outlived its supervisor), the cgroup, the run dir (upper,
//! work, mount point) and any host mount below it. Running containers and the image store are
//! never touched: only what the dead record names.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context;
use nix::sys::signal::Signal;
use nix::unistd::Pid;
use slate_runtime::cgroups::Cgroup;

use crate::state::{self, Record, StateDir, Status};
use crate::supervisor::remove_run_dir;

/// How long a just-created record without a supervisor counts as starting, not dead.
const CREATE_GRACE: Duration = Duration::from_secs(60);

/// Finds and cleans up dead runs. The caller holds the state dir's lock.
pub fn sweep(sd: &StateDir) -> anyhow::Result<()> {
    for rec in sd.list()? {
        if rec.is_active() && is_dead(&rec) {
            tracing::info!(id = %rec.short_id(), name = %rec.name, "cleaning up after a dead supervisor");
            cleanup_dead(sd, rec);
        }
    }
    Ok(())
}

fn is_dead(rec: &Record) -> bool {
    if rec.supervisor_pid.is_none() {
        let young = crate::output::parse_rfc3339(&rec.created)
            .is_some_and(|t| state::now().0 - t < CREATE_GRACE.as_secs() as i64);
        return !young;
    }
    !rec.supervisor_alive()
}

/// Removes what a run whose supervisor died left behind and marks it exited.
fn cleanup_dead(sd: &StateDir, mut rec: Record) {
    if rec.container_alive() {
        if let Some(pid) = rec.pid {
            let _ = nix::sys::signal::kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
    }
    remove_cgroup(&rec);
    crate::network::release_recorded(sd, &rec.id);
    if !rec.auto_remove && !rec.foreground {
        crate::commands::lifecycle::keep_etc_files(sd, &rec);
    }
    let _ = std::fs::remove_file(
        sd.dir(&rec.id)
            .join(crate::commands::lifecycle::PAUSED_FILE),
    );
    unmount_below(&rec.run_dir);
    remove_run_dir(&rec.run_dir);
    rec.status = Status::Exited;
    rec.exit_code = Some(rec.exit_code.unwrap_or(137));
    rec.pid = None;
    rec.pid_start = None;
    rec.error = Some("the supervisor died; slate cleaned up after it".into());
    rec.finished = Some(state::now_rfc3339());
    // A foreground run's record goes with the run, however it ended.
    if rec.auto_remove || rec.foreground {
        remove_files(sd, &rec);
    } else if let Err(e) = sd.save(&rec) {
        tracing::warn!("{e:#}");
    }
}

/// Kills whatever is left in the container's cgroup and deletes it.
fn remove_cgroup(rec: &Record) {
    match Cgroup::open_recorded(&rec.id, rec.cgroups_path.as_deref(), &rec.cgroup_paths) {
        Ok(cg) => {
            if let Err(e) = cg.remove() {
                tracing::warn!(id = %rec.short_id(), error = %e, "cannot remove the cgroup of a dead container");
            }
        }
        Err(slate_runtime::cgroups::CgroupError::NotFound { .. }) => {}
        Err(e) => {
            tracing::warn!(id = %rec.short_id(), error = %e, "cannot open the cgroup of a dead container")
        }
    }
}

/// Lazily unmounts anything mounted at or below `dir` on the host, deepest first. slate's
/// overlay lives in the container's mount namespace, so normally there is nothing; this covers
/// mounts made by hand or by older versions.
fn unmount_below(dir: &Path) {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut points: Vec<String> = info
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(unescape)
        .filter(|m| Path::new(m).starts_with(dir))
        .collect();
    points.sort_by_key(|m| std::cmp::Reverse(m.len()));
    for m in points {
        if let Err(e) = nix::mount::umount2(m.as_str(), nix::mount::MntFlags::MNT_DETACH) {
            tracing::warn!(mount = %m, error = %e, "cannot unmount a dead run's mount");
        }
    }
}

fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 4 <= b.len() {
            if let Some(v) = std::str::from_utf8(&b[i + 1..i + 4])
                .ok()
                .and_then(|o| u8::from_str_radix(o, 8).ok())
            {
                out.push(v);
                i += 4;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Sends `sig` to the container's PID 1, if it is still the process the record names.
pub fn signal(rec: &Record, sig: Signal) -> anyhow::Result<bool> {
    if !rec.container_alive() {
        return Ok(false);
    }
    let Some(pid) = rec.pid else { return Ok(false) };
    match nix::sys::signal::kill(Pid::from_raw(pid), sig) {
        Ok(()) => Ok(true),
        Err(nix::errno::Errno::ESRCH) => Ok(false),
        Err(e) => Err(e).with_context(|| format!("cannot send {sig} to container {}", rec.name)),
    }
}

/// Waits until the record is no longer active (or gone); false on timeout.
pub fn wait_inactive(sd: &StateDir, id: &str, timeout: Duration) -> bool {
    let until = Instant::now() + timeout;
    loop {
        match sd.load(id) {
            Ok(r) if r.is_active() => {
                if !r.supervisor_alive() && r.supervisor_pid.is_some() {
                    // The supervisor died meanwhile: clean up ourselves.
                    cleanup_dead(sd, r);
                    return true;
                }
            }
            _ => return true,
        }
        if Instant::now() >= until {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// How a stop went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stopped {
    /// It was not running, or ended on its stop signal.
    Cleanly,
    /// It ignored its stop signal for the whole timeout: SIGKILL ended it.
    Killed,
}

/// `slate stop`: no more restarts, the stop signal, then SIGKILL after `timeout` (to PID 1;
/// the supervisor then kills whatever else is in the cgroup as it removes it).
pub fn stop(sd: &StateDir, rec: &Record, timeout: Duration) -> anyhow::Result<Stopped> {
    if !rec.is_active() {
        return Ok(Stopped::Cleanly);
    }
    sd.request_stop(&rec.id)?;
    if is_dead(rec) {
        cleanup_dead(sd, rec.clone());
        return Ok(Stopped::Cleanly);
    }
    crate::commands::lifecycle::thaw_if_paused(sd, rec);
    let sig = rec.stop_signal.parse::<Signal>().unwrap_or(Signal::SIGTERM);
    if !signal(rec, sig)? {
        // No container process yet: a foreground `slate run` still pulling or preparing. It
        // stops on SIGTERM (the next sweep removes what it leaves).
        signal_starting_foreground(rec, Signal::SIGTERM)?;
    }
    if wait_inactive(sd, &rec.id, timeout) {
        return Ok(Stopped::Cleanly);
    }
    kill_hard(sd, &rec.id)?;
    if !wait_inactive(sd, &rec.id, Duration::from_secs(10)) {
        anyhow::bail!("container {} is still running after SIGKILL", rec.name);
    }
    Ok(Stopped::Killed)
}

/// Signals the `slate run` of a foreground container that has no process yet (pulling):
/// it is the only thing to stop then.
fn signal_starting_foreground(rec: &Record, sig: Signal) -> anyhow::Result<()> {
    if !rec.foreground || rec.pid.is_some() || !rec.supervisor_alive() {
        return Ok(());
    }
    let Some(pid) = rec.supervisor_pid else {
        return Ok(());
    };
    match nix::sys::signal::kill(Pid::from_raw(pid), sig) {
        Ok(()) | Err(nix::errno::Errno::ESRCH) => Ok(()),
        Err(e) => {
            Err(e).with_context(|| format!("cannot send {sig} to the slate run of {}", rec.name))
        }
    }
}

/// SIGKILL to PID 1, which takes the rest of its PID namespace with it.
///
/// The cgroup is left to the container's supervisor, which kills whatever is left in it
/// and deletes it as soon as it has reaped PID 1. Killing the cgroup from here as well
/// raced that removal: two processes freezing, killing and thawing the same v1 cgroup,
/// the supervisor deleting it between this process's freeze and thaw, and `rm -f` warning
/// that it could not thaw a cgroup that was gone. A supervisor that died is found by
/// [`wait_inactive`], which cleans up after it (cgroup included).
pub fn kill_hard(sd: &StateDir, id: &str) -> anyhow::Result<()> {
    let rec = sd.load(id)?;
    crate::commands::lifecycle::thaw_if_paused(sd, &rec);
    if !signal(&rec, Signal::SIGKILL)? {
        signal_starting_foreground(&rec, Signal::SIGKILL)?;
    }
    Ok(())
}

/// Removes an exited container's record and logs.
pub fn remove_files(sd: &StateDir, rec: &Record) {
    match std::fs::remove_dir_all(&rec.log_dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => {
            tracing::warn!(dir = %rec.log_dir.display(), error = %e, "cannot remove the logs")
        }
    }
    // Normally released by its supervisor already; not when that died.
    crate::network::release_recorded(sd, &rec.id);
    if let Err(e) = sd.remove(&rec.id) {
        tracing::warn!("{e:#}");
    }
}

/// `slate rm [-f]`: refuses a running container unless forced (then kills it first).
pub fn remove(sd: &StateDir, rec: &Record, force: bool) -> anyhow::Result<()> {
    // As it is now: a foreground run removes its own record when it ends (after a stop, say).
    if !sd.dir(&rec.id).exists() {
        return Ok(());
    }
    let fresh = sd.load(&rec.id).unwrap_or_else(|_| rec.clone());
    let rec = &fresh;
    if rec.is_active() {
        if !force {
            anyhow::bail!(
                "container {} is {}: stop it first, or use rm -f",
                rec.name,
                rec.status.as_str()
            );
        }
        sd.request_stop(&rec.id)?;
        if is_dead(rec) {
            cleanup_dead(sd, rec.clone());
        } else {
            kill_hard(sd, &rec.id)?;
            if !wait_inactive(sd, &rec.id, Duration::from_secs(10)) {
                anyhow::bail!("container {} is still running after SIGKILL", rec.name);
            }
        }
    }
    // The record may be gone already (`--rm`).
    let rec = sd.load(&rec.id).unwrap_or_else(|_| rec.clone());
    remove_files(sd, &rec);
    Ok(())
}

/// Runs `f` for each key (container names or ids of one command line) at once, one thread
/// each, and returns the results in the keys' order.
pub fn for_each_parallel<F>(keys: &[String], f: F) -> Vec<anyhow::Result<()>>
where
    F: Fn(&str) -> anyhow::Result<()> + Sync,
{
    if keys.len() == 1 {
        return vec![f(&keys[0])];
    }
    std::thread::scope(|s| {
        let handles: Vec<_> = keys.iter().map(|k| s.spawn(|| f(k))).collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(anyhow::anyhow!("a worker thread panicked")))
            })
            .collect()
    })
}

/// Prints each key that worked (stdout, as docker) and each error (one line on stderr), in
/// the keys' order; the exit status: 1 if any failed.
pub fn report(keys: &[String], results: Vec<anyhow::Result<()>>) -> u8 {
    let mut failed = false;
    for (key, res) in keys.iter().zip(results) {
        match res {
            Ok(()) => println!("{key}"),
            Err(e) => {
                eprintln!("slate: {}", format!("{e:#}").replace('\n', " "));
                failed = true;
            }
        }
    }
    u8::from(failed)
}

/// Opens the state dir and cleans up after dead runs first, as every container command does.
pub fn open_swept(settings: &crate::config::Settings) -> anyhow::Result<StateDir> {
    let sd = StateDir::open(&settings.state_dir)?;
    let _lock = sd.lock()?;
    sweep(&sd)?;
    Ok(sd)
}
