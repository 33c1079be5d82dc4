//! Creating a container: the parent prepares every plan from the spec, clones the child into
//! its namespaces, places it (cgroup, id maps) and releases it; the child sets itself up and
//! execs, or reports exactly which step failed.
//!
//! Sync protocol over a `SOCK_SEQPACKET` socketpair (one record per message, both ends
//! close-on-exec):
//!
//! | when                       | direction      | message                                  |
//! |----------------------------|----------------|------------------------------------------|
//! | child is placed            | parent → child | one byte: go                             |
//! | terminal: true, pty opened | child → parent | `PTY_MASTER` record + the master (SCM_RIGHTS) |
//! | a setup step failed        | child → parent | [`ChildFailure`], 12 bytes, then exit    |
//! | the app exec'd             | child → parent | nothing: EOF, as exec closed the socket  |
//!
//! Guarantees: `spawn` returns only once the app runs (or with an error, after the child and
//! everything else it created are gone). The clone happens only from a single-threaded process
//! (else [`Error::MultiThreaded`]): the child may then use everything its parent could,
//! allocation included, without inheriting a lock held by a thread that does not exist in it.

use std::ffi::CString;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::PathBuf;
use std::sync::Arc;

use nix::errno::Errno;
use nix::sched::CloneFlags;
use nix::sys::signal::{kill, Signal};
use nix::sys::socket::{
    recvmsg, socketpair, AddressFamily, ControlMessageOwned, MsgFlags, SockFlag, SockType,
};
use nix::sys::stat::{umask, Mode};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::{setresgid, setresuid, Pid};
use oci_spec::runtime::{ContainerState, Spec, State};

use crate::caps::CapsPlan;
use crate::cgroups::Cgroup;
use crate::confine::{at, Confinement};
use crate::error::{ChildFailure, Error, Stage};
use crate::mounts::{HostRootMount, MountPlan, Rootfs};
use crate::namespaces::{clone_into, Namespaces};
use crate::process::{rlimit_name, ExecPlan};
use crate::pty;
use crate::seccomp;
use crate::syscall::{self, Cloned};

/// What to run and how.
#[derive(Debug)]
pub struct ContainerOptions {
    /// Container id: names its cgroup.
    pub id: String,
    pub spec: Spec,
    pub rootfs: Rootfs,
    /// Run a minimal init as PID 1 that forwards signals to the app and reaps orphans.
    pub init: bool,
    /// Descriptors 3..3+n stay open in the container (socket activation); all others above
    /// 2 are closed before exec.
    pub preserve_fds: u32,
    /// Where the compiled form of the spec's `linux.seccomp` is cached between starts
    /// ([`seccomp::compile_cached`]); `None` compiles it on every start. The spec is the
    /// one statement of the filter: nothing else can install another.
    pub seccomp_cache: Option<PathBuf>,
    /// With a terminal (`process.terminal`): whether [`crate::supervise`] relays the caller's
    /// stdin into it (docker's `-it`) or gives the app a terminal with no input (`-t` alone:
    /// the host terminal's input is left alone, so a ^C there signals the caller, which
    /// forwards it). Default `true`. Without a terminal the container inherits the caller's
    /// stdin as it is; a caller that attaches none redirects it before spawning.
    pub attach_stdin: bool,
    /// On cgroup v2, create the process inside its cgroup (`clone3(CLONE_INTO_CGROUP)`)
    /// where the kernel allows, rather than clone it in the caller's cgroup and move it with
    /// a write to `cgroup.procs`. Default `true`; `false` takes the fallback path on purpose
    /// (to test or measure it), which old kernels and seccomp'd hosts take anyway.
    pub clone_into_cgroup: bool,
    /// Where the created process waits for start, right before it execs the app
    /// ([`Container::create`]). `None`: on its sync channel, for [`Created::start`] of this
    /// process. A FIFO path: in an open of it for writing, which returns once anyone opens
    /// it for reading, so that another process can start it (the OCI `start`, see
    /// [`crate::lifecycle`]).
    pub start_gate: Option<PathBuf>,
    /// The process's stdin, stdout and stderr; `None` leaves the caller's own. (A terminal,
    /// `process.terminal`, takes all three.) [`Container::create`] closes its copies once the
    /// process has its own, so the reader of a pipe given here sees EOF when the container's
    /// last writer is gone; the caller's descriptors are never touched.
    pub stdio: [Option<OwnedFd>; 3],
    /// The OCI state the spec's `createContainer` and `startContainer` hooks read on their
    /// stdin (they run inside the container, see [`InContainerHooks`]); the runtime sets its
    /// `pid` and `status`. `Null`: a state of the id alone.
    pub hook_state: serde_json::Value,
    /// Called once the container's namespaces and rootfs mounts exist, before `pivot_root`
    /// (where the spec runs `prestart` and `createRuntime` hooks), with its pid; the process
    /// waits until it returns, and an error ends the create. `None`: no stop there.
    pub before_pivot: Option<BeforePivot>,
    /// The process gets SIGKILL when the process that spawned it dies (default `true`: a
    /// container never outlives its supervisor unnoticed). An OCI `create` exits at once and
    /// leaves the container to whoever reaps it (containerd's shim, conmon): `false`.
    pub die_with_parent: bool,
}

impl ContainerOptions {
    pub fn new(id: impl Into<String>, spec: Spec, rootfs: Rootfs) -> ContainerOptions {
        ContainerOptions {
            id: id.into(),
            spec,
            rootfs,
            init: false,
            preserve_fds: 0,
            seccomp_cache: None,
            attach_stdin: true,
            clone_into_cgroup: true,
            start_gate: None,
            stdio: [None, None, None],
            hook_state: serde_json::Value::Null,
            before_pivot: None,
            die_with_parent: true,
        }
    }
}

/// See [`ContainerOptions::before_pivot`].
pub struct BeforePivot(pub Box<dyn FnMut(Pid) -> Result<(), Error>>);

impl std::fmt::Debug for BeforePivot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("BeforePivot(..)")
    }
}

/// How the container's process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitStatus {
    /// It exited with this code.
    Exited(i32),
    /// It was killed by this signal.
    Signaled(Signal),
}

impl ExitStatus {
    /// The shell's (and docker's) number for it: the code, or 128 + the signal.
    pub fn code(&self) -> i32 {
        match self {
            ExitStatus::Exited(c) => *c,
            ExitStatus::Signaled(s) => 128 + *s as i32,
        }
    }
}

/// A running container. Dropping it without [`Container::wait`] kills it.
#[derive(Debug)]
pub struct Container {
    id: String,
    pid: Pid,
    pub(crate) pty_master: Option<OwnedFd>,
    /// See [`ContainerOptions::attach_stdin`].
    pub(crate) attach_stdin: bool,
    status: Option<ExitStatus>,
    /// Removed once the container is reaped.
    cgroup: Option<Cgroup>,
    /// Without a mount namespace: the rootfs mount in the host's, removed once reaped.
    host_root: Option<HostRootMount>,
    /// Left to run on its own ([`Container::detach`]): dropping the handle does nothing.
    detached: bool,
}

/// Everything the child needs, prepared before the clone.
struct Plan {
    ns: Namespaces,
    mounts: MountPlan,
    exec: ExecPlan,
    caps: CapsPlan,
    hostname: Option<CString>,
    domainname: Option<CString>,
    sysctl: Vec<(CString, CString)>,
    init: bool,
    preserve_fds: u32,
    /// See [`reserve_preserved`]: closed by the child before exec.
    reserved: Vec<OwnedFd>,
    /// The child stops before pivot_root for [`ContainerOptions::before_pivot`].
    stop_before_pivot: bool,
    hooks: Option<InContainerHooks>,
    /// The host terminal's size, for a container terminal.
    winsize: Option<libc::winsize>,
    seccomp: Option<Arc<seccomp::Program>>,
    /// See [`ContainerOptions::start_gate`]: the FIFO, opened O_PATH before the clone (its
    /// host path is out of reach once the child has pivoted), and the `/proc/self/fd` path
    /// the child reopens it by.
    start_gate: Option<(OwnedFd, CString)>,
    stdio: [Option<OwnedFd>; 3],
    die_with_parent: bool,
}

/// Receives one record of the sync protocol and the descriptor passed with it, if any.
fn recv_record(sock: &OwnedFd, buf: &mut [u8]) -> Result<(usize, Option<OwnedFd>), Errno> {
    let mut iov = [std::io::IoSliceMut::new(buf)];
    let mut space = nix::cmsg_space!([std::os::fd::RawFd; 1]);
    let msg = recvmsg::<()>(
        sock.as_raw_fd(),
        &mut iov,
        Some(&mut space),
        MsgFlags::MSG_CMSG_CLOEXEC,
    )?;
    let mut fd = None;
    for c in msg.cmsgs()? {
        if let ControlMessageOwned::ScmRights(fds) = c {
            for raw in fds {
                // SAFETY: SCM_RIGHTS installed a new descriptor in this process for us alone.
                let owned = unsafe { std::os::fd::FromRawFd::from_raw_fd(raw) };
                fd = Some(owned);
            }
        }
    }
    Ok((msg.bytes, fd))
}

/// A sysctl is allowed only when it belongs to a namespace the container has to itself, so
/// that writing it cannot change the host (the same rule as runc's).
fn check_sysctl(key: &str, ns: &Namespaces) -> Result<(), Error> {
    const IPC: &[&str] = &[
        "kernel.msgmax",
        "kernel.msgmnb",
        "kernel.msgmni",
        "kernel.sem",
        "kernel.shmall",
        "kernel.shmmax",
        "kernel.shmmni",
        "kernel.shm_rmid_forced",
    ];
    let (namespace, flag) = if IPC.contains(&key) || key.starts_with("fs.mqueue.") {
        ("ipc", CloneFlags::CLONE_NEWIPC)
    } else if key.starts_with("net.") {
        ("network", CloneFlags::CLONE_NEWNET)
    } else if key == "kernel.hostname" || key == "kernel.domainname" {
        ("uts", CloneFlags::CLONE_NEWUTS)
    } else {
        return Err(Error::Sysctl {
            key: key.to_string(),
            reason: "it is not namespaced, so it would change the host",
        });
    };
    if !ns.private(flag) {
        return Err(Error::Sysctl {
            key: key.to_string(),
            reason: match namespace {
                "ipc" => "the container shares the host's ipc namespace",
                "network" => "the container shares the host's network namespace",
                _ => "the container shares the host's uts namespace",
            },
        });
    }
    if key.contains("..") || key.contains('/') {
        return Err(Error::Sysctl {
            key: key.to_string(),
            reason: "it is not a sysctl name",
        });
    }
    Ok(())
}

/// Fails unless this process runs one thread: forking a process with others would copy
/// the locks they hold (a malloc arena, say) into the child, held forever.
///
/// A thread that was just joined can still be listed for a moment: the kernel wakes
/// `pthread_join` (CLONE_CHILD_CLEARTID) before it unlinks the exiting task. `slate run`
/// joins its volume-copy thread right before it creates the container, and once in a while
/// (seen in CI) met it still there; so a count above one is read again for up to 100 ms.
pub(crate) fn single_threaded() -> Result<(), Error> {
    let count = || {
        std::fs::read_dir("/proc/self/task")
            .map(|d| d.count())
            .unwrap_or(1)
    };
    let mut n = count();
    for _ in 0..100 {
        if n <= 1 {
            return Ok(());
        }
        std::thread::sleep(std::time::Duration::from_millis(1));
        n = count();
    }
    if n <= 1 {
        return Ok(());
    }
    Err(Error::MultiThreaded(n))
}

impl Container {
    /// Creates and starts the container: returns once its process has exec'd the app.
    pub fn spawn(opts: ContainerOptions) -> Result<Container, Error> {
        Container::create(opts)?.start()
    }

    /// Creates the container (the OCI `create`): namespaces, cgroup, mounts, pivot_root,
    /// capabilities and seccomp are in place and the process waits at its start gate, right
    /// before it execs the app, until [`Created::start`] (or, with
    /// [`ContainerOptions::start_gate`], anyone who opens the FIFO for reading).
    pub fn create(opts: ContainerOptions) -> Result<Created, Error> {
        single_threaded()?;
        // First, before this call opens anything of its own.
        let reserved = reserve_preserved(opts.preserve_fds)?;
        let spec = &opts.spec;
        let process = spec
            .process()
            .as_ref()
            .ok_or(Error::SpecMissing("process"))?;
        let ns = Namespaces::from_spec(spec)?;
        let hostname = match spec.hostname() {
            Some(h) if !h.is_empty() => {
                if !ns.private(CloneFlags::CLONE_NEWUTS) {
                    return Err(Error::NeedsNamespace {
                        what: "a hostname",
                        namespace: "uts",
                    });
                }
                Some(CString::new(h.as_bytes()).map_err(|_| Error::Nul { what: "hostname" })?)
            }
            _ => None,
        };
        let domainname = match spec.domainname() {
            Some(d) if !d.is_empty() => {
                if !ns.private(CloneFlags::CLONE_NEWUTS) {
                    return Err(Error::NeedsNamespace {
                        what: "a domain name",
                        namespace: "uts",
                    });
                }
                Some(CString::new(d.as_bytes()).map_err(|_| Error::Nul { what: "domainname" })?)
            }
            _ => None,
        };
        let mut sysctl = Vec::new();
        for (k, v) in spec
            .linux()
            .as_ref()
            .and_then(|l| l.sysctl().as_ref())
            .into_iter()
            .flatten()
        {
            check_sysctl(k, &ns)?;
            let path = format!("/proc/sys/{}", k.replace('.', "/"));
            let nul = |_| Error::Nul { what: "sysctl" };
            sysctl.push((
                CString::new(path).map_err(nul)?,
                CString::new(v.as_bytes()).map_err(nul)?,
            ));
        }
        let linux_seccomp = spec.linux().as_ref().and_then(|l| l.seccomp().as_ref());
        let gate_owner = ns.host_ids(process.user().uid(), process.user().gid());
        let mut plan = Plan {
            mounts: MountPlan::new(spec, &opts.rootfs, ns.private(CloneFlags::CLONE_NEWIPC))?,
            exec: ExecPlan::new(process)?,
            caps: CapsPlan::new(process.capabilities().as_ref())?,
            ns,
            hostname,
            domainname,
            sysctl,
            init: opts.init,
            preserve_fds: opts.preserve_fds,
            reserved,
            stop_before_pivot: opts.before_pivot.is_some(),
            hooks: InContainerHooks::from_spec(spec, &opts.id, &opts.hook_state),
            // The spec's console size wins over the host terminal's.
            winsize: process
                .console_size()
                .map(|b| libc::winsize {
                    ws_row: b.height().min(u16::MAX as u64) as u16,
                    ws_col: b.width().min(u16::MAX as u64) as u16,
                    ws_xpixel: 0,
                    ws_ypixel: 0,
                })
                .or_else(pty::host_winsize),
            seccomp: match linux_seccomp {
                Some(profile) => Some(Arc::new(seccomp::compile_cached(
                    profile,
                    opts.seccomp_cache.as_deref(),
                )?)),
                None => None,
            },
            start_gate: match &opts.start_gate {
                Some(p) => {
                    let fd: OwnedFd = std::fs::OpenOptions::new()
                        .read(true)
                        .custom_flags(libc::O_PATH)
                        .open(p)
                        .map_err(|source| Error::Io {
                            op: "opening the start gate",
                            source,
                        })?
                        .into();
                    let via = CString::new(format!("/proc/self/fd/{}", fd.as_raw_fd()))
                        .map_err(|_| Error::Nul { what: "start gate" })?;
                    // The process opens the gate as the spec's user, maybe without
                    // CAP_DAC_OVERRIDE or in a user namespace where the host's root is no
                    // one: it must own it. (Through the descriptor: the inode just opened.)
                    let (uid, gid) = gate_owner;
                    std::os::unix::fs::chown(format!("/proc/self/fd/{}", fd.as_raw_fd()), uid, gid)
                        .map_err(|source| Error::Io {
                            op: "handing the start gate to the container's user",
                            source,
                        })?;
                    Some((fd, via))
                }
                None => None,
            },
            stdio: crate::confine::stdio_above_2(opts.stdio)
                .map_err(Error::sys("moving the container's stdio above 2"))?,
            die_with_parent: opts.die_with_parent,
        };
        // No mount namespace of its own: the container's mounts are the host's, on a rootfs
        // mount removed with the container (or by a failed start's return, on drop).
        let host_root = if plan.ns.private(CloneFlags::CLONE_NEWNS) {
            None
        } else {
            Some(plan.mounts.in_host_namespace()?)
        };
        let (parent_sock, child_sock) = socketpair(
            AddressFamily::Unix,
            SockType::SeqPacket,
            None,
            SockFlag::SOCK_CLOEXEC,
        )
        .map_err(Error::sys("socketpair"))?;

        // The cgroup namespace is created by the child once it sits in its cgroup (see
        // child_setup), so that the namespace's root is the container's cgroup, not ours.
        let flags = plan.ns.clone_flags - CloneFlags::CLONE_NEWCGROUP;
        let linux = spec.linux().as_ref();
        let cgroup = Cgroup::create(
            &opts.id,
            linux.and_then(|l| l.cgroups_path().as_deref()),
            linux.and_then(|l| l.resources().as_ref()),
        )?;
        // What /sys/fs/cgroup shows depends on the cgroup's directories, known only now.
        let own_cgroupns = plan.ns.clone_flags.contains(CloneFlags::CLONE_NEWCGROUP);
        if let Err(e) = plan.mounts.show_cgroups(&cgroup.view(), own_cgroupns) {
            if let Err(ce) = cgroup.remove() {
                tracing::warn!(error = %ce, "removing the cgroup of a failed start");
            }
            return Err(e);
        }
        // On cgroup v2 the child is born in its cgroup (clone3), so it never runs outside it
        // and there is no cgroup.procs to write. O_PATH: clone3 needs no read access.
        let cgroup_dir = cgroup.unified_dir().filter(|_| opts.clone_into_cgroup).and_then(|d| {
            std::fs::OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_PATH | libc::O_DIRECTORY)
                .open(d)
                .map_err(|e| tracing::debug!(dir = %d.display(), error = %e, "cannot open the cgroup for clone3"))
                .ok()
        });
        let (cloned, in_cgroup) = match clone_into(
            plan.ns.pid_join.as_ref(),
            flags,
            cgroup_dir.as_ref().map(|f| f.as_fd()),
        ) {
            Ok(c) => c,
            Err(e) => {
                if let Err(ce) = cgroup.remove() {
                    tracing::warn!(error = %ce, "removing the cgroup of a failed start");
                }
                return Err(e);
            }
        };
        let pid = match cloned {
            Cloned::Child => {
                drop(parent_sock);
                // A host cgroupfs directory has no business in the container (CVE-2024-21626:
                // a leaked one served as a cwd outside the root).
                drop(cgroup_dir);
                child_main(&plan, child_sock)
            }
            Cloned::Parent(pid) => pid,
        };
        drop(child_sock);
        drop(cgroup_dir);
        // The child has its own copies now; ours would keep its pipes open past its exit.
        plan.stdio = [None, None, None];
        plan.reserved.clear();
        if in_cgroup {
            tracing::debug!(pid = pid.as_raw(), "cloned into its cgroup (clone3)");
        }
        let mut container = Container {
            id: opts.id,
            pid,
            pty_master: None,
            attach_stdin: opts.attach_stdin,
            status: None,
            cgroup: Some(cgroup),
            host_root,
            detached: false,
        };
        tracing::debug!(id = %container.id, pid = pid.as_raw(), "container process cloned");
        // From here on, dropping `container` on an error kills and reaps the child.
        container.release(&plan, &parent_sock, in_cgroup, opts.before_pivot)?;
        Ok(Created {
            container,
            plan: Box::new(plan),
            sock: parent_sock,
        })
    }

    fn release(
        &mut self,
        plan: &Plan,
        sock: &OwnedFd,
        in_cgroup: bool,
        mut before_pivot: Option<BeforePivot>,
    ) -> Result<(), Error> {
        // The container must be in its cgroup before it execs (and before it can fork).
        if let Some(cg) = self.cgroup.as_ref().filter(|_| !in_cgroup) {
            cg.add_task(self.pid)?;
            tracing::debug!(
                pid = self.pid.as_raw(),
                "moved into its cgroup (cgroup.procs)"
            );
        }
        plan.ns.write_id_maps(self.pid)?;
        if let Some(adj) = plan.exec.oom_score_adj {
            std::fs::write(format!("/proc/{}/oom_score_adj", self.pid), adj.to_string()).map_err(
                |source| Error::Io {
                    op: "setting oom_score_adj",
                    source,
                },
            )?;
        }
        // The release carries the pid, which the process cannot see from inside its pid
        // namespace and its in-container hooks' state must name.
        syscall::write_all(sock.as_fd(), &self.pid.as_raw().to_ne_bytes())
            .map_err(Error::sys("releasing the container process"))?;
        match self.follow(plan, sock, before_pivot.as_mut())? {
            true => Ok(()),
            // Every process stops at the gate before it execs: an exec'd or ended one
            // skipped it.
            false => Err(Error::Protocol),
        }
    }

    /// Reads the child's reports until it waits at its gate (`true`) or has exec'd or
    /// ended (`false`); a failure it reports is the error. A stop before pivot_root runs
    /// `before_pivot`, then lets the child go on.
    fn follow(
        &mut self,
        plan: &Plan,
        sock: &OwnedFd,
        mut before_pivot: Option<&mut BeforePivot>,
    ) -> Result<bool, Error> {
        let mut buf = [0u8; ChildFailure::SIZE];
        let got = loop {
            let (n, fd) = match recv_record(sock, &mut buf) {
                Ok(r) => r,
                Err(Errno::EINTR) => continue,
                Err(e) => return Err(Error::sys("reading from the container process")(e)),
            };
            if n == ChildFailure::SIZE && buf == ChildFailure::PTY_MASTER {
                self.pty_master = Some(fd.ok_or(Error::Protocol)?);
                continue;
            }
            if n == ChildFailure::SIZE && buf == ChildFailure::AT_GATE {
                // Set up and waiting for `start`: created.
                return Ok(true);
            }
            if n == ChildFailure::SIZE && buf == ChildFailure::BEFORE_PIVOT {
                let cb = before_pivot.as_mut().ok_or(Error::Protocol)?;
                (cb.0)(self.pid)?;
                syscall::write_all(sock.as_fd(), &[1])
                    .map_err(Error::sys("resuming the container process"))?;
                continue;
            }
            break n;
        };
        if got == 0 {
            // EOF: exec closed the child's end. A child that died without a word also gives
            // EOF; tell the two apart without blocking.
            return match waitpid(self.pid, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::StillAlive) => Ok(false),
                Ok(status) => {
                    self.status = to_status(status);
                    // An app that exec'd and exited at once is a success too.
                    if plan.init || self.status.is_some() {
                        Ok(false)
                    } else {
                        Err(Error::ChildDied)
                    }
                }
                Err(e) => Err(Error::sys("waitpid")(e)),
            };
        }
        let failure = if got == ChildFailure::SIZE {
            ChildFailure::decode(&buf).ok_or(Error::Protocol)?
        } else {
            return Err(Error::Protocol);
        };
        Err(plan.error(failure))
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    /// The master of the container's terminal (`process.terminal: true`), for a caller that
    /// relays it itself instead of through [`crate::supervise`] (a detached run, say).
    pub fn take_pty_master(&mut self) -> Option<OwnedFd> {
        self.pty_master.take()
    }

    /// Leaves the container to run on its own, as an OCI `create` does: whoever reaps it
    /// (containerd's shim, conmon, init) waits for it, and `delete` removes its cgroup.
    /// Returns its pid.
    pub fn detach(mut self) -> Pid {
        self.detached = true;
        if let Some(m) = self.host_root.take() {
            m.keep();
        }
        self.pid
    }

    /// Where the rootfs of a container without a mount namespace of its own is mounted in
    /// the host's, and that mount's id: what [`crate::mounts::unmount_host_rootfs`] removes
    /// once a detached container is gone.
    pub fn host_root_mount(&self) -> Option<(&std::path::Path, u64)> {
        self.host_root.as_ref().map(|m| m.id())
    }

    /// The container process, as seen from the host.
    pub fn pid(&self) -> Pid {
        self.pid
    }

    /// The directories of the container's cgroup (one per hierarchy on v1), for a record:
    /// known here, so nobody has to detect the host's cgroups again to find them.
    pub fn cgroup_paths(&self) -> Vec<PathBuf> {
        self.cgroup.as_ref().map(|c| c.paths()).unwrap_or_default()
    }

    /// Sends `signal` to the container's PID 1. (A PID 1 without a handler for it ignores
    /// everything but SIGKILL and SIGSTOP; `init: true` forwards to the app instead.)
    pub fn kill(&self, signal: Signal) -> Result<(), Error> {
        if self.status.is_some() {
            return Ok(());
        }
        kill(self.pid, signal).map_err(Error::sys("kill"))
    }

    /// The container's state in the terms of the OCI runtime command line (`state`): running
    /// until reaped, then stopped. `bundle` is reported as given.
    pub fn state(&mut self, bundle: &std::path::Path) -> Result<State, Error> {
        let running = self.try_wait()?.is_none();
        let status = if running {
            ContainerState::Running
        } else {
            ContainerState::Stopped
        };
        let mut state = State::default();
        state.set_id(self.id.clone());
        state.set_status(status);
        state.set_pid(if running {
            Some(self.pid.as_raw())
        } else {
            None
        });
        state.set_bundle(bundle.to_path_buf());
        Ok(state)
    }

    /// Reaps the container if it has exited, without blocking.
    pub fn try_wait(&mut self) -> Result<Option<ExitStatus>, Error> {
        if self.status.is_some() {
            return Ok(self.status);
        }
        match waitpid(self.pid, Some(WaitPidFlag::WNOHANG)) {
            Ok(s) => {
                self.status = to_status(s);
                Ok(self.status)
            }
            Err(Errno::EINTR) => Ok(None),
            Err(e) => Err(Error::sys("waitpid")(e)),
        }
    }

    /// Waits for the container to exit, reaps it and removes its cgroup (killing anything
    /// left in it). If the removal fails, the error is returned and a second call returns the
    /// status.
    pub fn wait(&mut self) -> Result<ExitStatus, Error> {
        let status = loop {
            if let Some(s) = self.status {
                break s;
            }
            match waitpid(self.pid, None) {
                Ok(s) => self.status = to_status(s),
                Err(Errno::EINTR) => {}
                Err(e) => return Err(Error::sys("waitpid")(e)),
            }
        };
        // Unmounted (on drop) before the cgroup goes: that removal may fail and return.
        self.host_root = None;
        if let Some(cg) = self.cgroup.take() {
            cg.remove()?;
        }
        Ok(status)
    }
}

/// A created container: set up and waiting at its start gate (the OCI `created` state).
/// Dropping it kills the process and removes what it had, as for a [`Container`].
pub struct Created {
    container: Container,
    /// What the child was given, to name the step of a failure it reports after the gate.
    plan: Box<Plan>,
    /// The sync channel: the go byte goes out on it, exec closes the child's end.
    sock: OwnedFd,
}

impl std::fmt::Debug for Created {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Created")
            .field("container", &self.container)
            .finish_non_exhaustive()
    }
}

impl Created {
    /// The waiting process, as seen from the host: the OCI state's pid.
    pub fn pid(&self) -> Pid {
        self.container.pid
    }

    /// See [`Container::take_pty_master`]: the terminal exists from `create` on (runc sends
    /// it to the console socket then).
    pub fn take_pty_master(&mut self) -> Option<OwnedFd> {
        self.container.take_pty_master()
    }

    /// See [`Container::cgroup_paths`].
    pub fn cgroup_paths(&self) -> Vec<PathBuf> {
        self.container.cgroup_paths()
    }

    /// See [`Container::host_root_mount`].
    pub fn host_root_mount(&self) -> Option<(&std::path::Path, u64)> {
        self.container.host_root_mount()
    }

    /// Lets the process exec the app, and returns once it has. With a FIFO gate
    /// ([`ContainerOptions::start_gate`]) this process opens its other end, as an OCI
    /// `start` from another process would; either way a failing exec is this call's error.
    pub fn start(mut self) -> Result<Container, Error> {
        let passed = match &self.plan.start_gate {
            Some((fd, _)) => open_gate(fd)?,
            None => {
                syscall::write_all(self.sock.as_fd(), &[1])
                    .map_err(Error::sys("starting the container process"))?;
                true
            }
        };
        // A failure the process reports (a startContainer hook, the exec) comes first: it
        // says more than a gate that closed without its byte.
        if self.container.follow(&self.plan, &self.sock, None)? {
            // A second stop at the gate: not what a child of this runtime does.
            return Err(Error::Protocol);
        }
        if !passed {
            return Err(Error::ChildDied);
        }
        Ok(self.container)
    }

    /// Leaves the created container to whoever opens its FIFO gate and reaps it (the OCI
    /// `create`, which exits here; see [`Container::detach`]). Returns its pid.
    pub fn detach(self) -> Pid {
        self.container.detach()
    }
}

/// Opens the FIFO gate's reading end (the child waits in its open for writing) and waits
/// for it to pass ([`crate::lifecycle::pass_gate`]).
fn open_gate(gate: &OwnedFd) -> Result<bool, Error> {
    let mut f =
        std::fs::File::open(format!("/proc/self/fd/{}", gate.as_raw_fd())).map_err(|source| {
            Error::Io {
                op: "opening the start gate",
                source,
            }
        })?;
    match crate::lifecycle::pass_gate(&mut f) {
        Ok(passed) => Ok(passed),
        Err(source) => Err(Error::Io {
            op: "reading the start gate",
            source,
        }),
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        if self.detached {
            return;
        }
        if self.status.is_none() {
            let _ = kill(self.pid, Signal::SIGKILL);
        }
        if let Err(e) = self.wait() {
            tracing::warn!(id = %self.id, error = %e, "cleaning up a dropped container");
        }
    }
}

fn to_status(s: WaitStatus) -> Option<ExitStatus> {
    match s {
        WaitStatus::Exited(_, c) => Some(ExitStatus::Exited(c)),
        WaitStatus::Signaled(_, sig, _) => Some(ExitStatus::Signaled(sig)),
        _ => None,
    }
}

impl Plan {
    /// Turns the child's report into an error that names the step.
    fn error(&self, f: ChildFailure) -> Error {
        let source = Errno::from_raw(f.errno);
        match f.stage {
            Stage::Exec => {
                let path = self.exec.candidate(f.index);
                if source == Errno::ENOENT {
                    // The name alone, as the user wrote it, reads best when PATH was searched.
                    Error::ExecNotFound(path)
                } else {
                    Error::ExecDenied { path, source }
                }
            }
            Stage::ExecMagicLink => Error::ExecMagicLink(self.exec.candidate(f.index)),
            Stage::Rlimit => {
                let step = self
                    .exec
                    .rlimits
                    .get(f.index as usize)
                    .map(|r| {
                        format!(
                            "set {} to soft {} hard {} (the hard limit cannot be raised)",
                            rlimit_name(r.name),
                            r.soft,
                            r.hard
                        )
                    })
                    .unwrap_or_default();
                Error::Setup { step, source }
            }
            Stage::JoinNamespace => Error::Setup {
                step: self
                    .ns
                    .joins
                    .get(f.index as usize)
                    .map(|j| format!("join namespace {}", j.path.display()))
                    .unwrap_or_default(),
                source,
            },
            Stage::Sysctl => Error::Setup {
                step: self
                    .sysctl
                    .get(f.index as usize)
                    .map(|(k, _)| format!("write {}", k.to_string_lossy()))
                    .unwrap_or_default(),
                source,
            },
            Stage::CreateContainerHook | Stage::StartContainerHook => {
                let (kind, list) = match (f.stage, &self.hooks) {
                    (Stage::CreateContainerHook, Some(h)) => ("createContainer", &h.create[..]),
                    (_, Some(h)) => ("startContainer", &h.start[..]),
                    _ => ("in-container", &[][..]),
                };
                Error::Hook {
                    kind,
                    path: list
                        .get(f.index as usize)
                        .map(|h| h.path().clone())
                        .unwrap_or_default(),
                    why: InContainerHooks::why(f.errno),
                }
            }
            Stage::CwdOutsideRoot => Error::Setup {
                step: "the working directory is outside the container's root".to_string(),
                source,
            },
            stage => {
                let mut step = self.mounts.describe(stage, f.index);
                if step.is_empty() {
                    step = stage_name(stage).to_string();
                }
                Error::Setup { step, source }
            }
        }
    }
}

fn stage_name(s: Stage) -> &'static str {
    match s {
        Stage::Sync => "wait for the runtime",
        Stage::CgroupNamespace => "create the cgroup namespace",
        Stage::Loopback => "bring up the loopback interface",
        Stage::MountPropagation => "make the mount tree private",
        Stage::PivotRoot => "pivot_root into the rootfs",
        Stage::ReadonlyRoot => "make the rootfs read-only",
        Stage::Hostname => "set the hostname",
        Stage::NoNewPrivs => "set no_new_privs",
        Stage::Seccomp => "install the seccomp filter",
        Stage::Bounding => "drop capabilities from the bounding set",
        Stage::Groups => "set the additional groups",
        Stage::Gid => "set the gid",
        Stage::Uid => "set the uid",
        Stage::Capabilities => "set the capabilities",
        Stage::Cwd => "change to the working directory",
        Stage::Terminal => "attach the terminal",
        Stage::CloseFds => "close inherited descriptors",
        Stage::StartGate => "wait for start",
        Stage::Stdio => "set up stdin, stdout and stderr",
        Stage::Fork => "fork the app under init",
        Stage::CreateContainerHook => "run a createContainer hook",
        Stage::StartContainerHook => "run a startContainer hook",
        _ => "set up the container",
    }
}

/// The child: sets itself up, execs the app, or reports the failing step and exits.
fn child_main(plan: &Plan, sock: OwnedFd) -> ! {
    let failure = match child_setup(plan, &sock) {
        Ok(never) => match never {},
        Err(f) => f,
    };
    let _ = syscall::write_all(sock.as_fd(), &failure.encode());
    let code = match (failure.stage, Errno::from_raw(failure.errno)) {
        (Stage::Exec, Errno::ENOENT) => 127,
        (Stage::Exec | Stage::ExecMagicLink, _) => 126,
        _ => 125,
    };
    syscall::exit_now(code)
}

enum Never {}

fn child_setup(plan: &Plan, sock: &OwnedFd) -> Result<Never, ChildFailure> {
    // CVE-2019-5736: until it execs, this process is slate (a sealed copy, see crate::seal);
    // non-dumpable, the container's processes cannot open its /proc/<pid>/exe, fd or mem
    // without CAP_SYS_PTRACE. execve makes the app dumpable again.
    nix::sys::prctl::set_dumpable(false).map_err(at(Stage::Sync, 0))?;
    // The caller's ignored signals and blocked mask must not reach the app.
    syscall::reset_signal_dispositions();
    nix::sys::signal::sigprocmask(
        nix::sys::signal::SigmaskHow::SIG_SETMASK,
        Some(&nix::sys::signal::SigSet::empty()),
        None,
    )
    .map_err(at(Stage::Sync, 0))?;
    // Die with the supervisor rather than outlive it unsupervised.
    if plan.die_with_parent {
        nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).map_err(at(Stage::Sync, 0))?;
    }
    let host_pid = wait_for_release(sock).map_err(at(Stage::Sync, 0))?;
    crate::confine::install_stdio(&plan.stdio)?;
    // A session of its own, as runc gives it: a ^C typed at the host terminal reaches the
    // container once, through the supervisor, not a second time through the terminal's
    // foreground process group; and a container terminal can become its controlling one.
    nix::unistd::setsid().map_err(at(Stage::Sync, 0))?;
    for (i, j) in plan.ns.joins.iter().enumerate() {
        nix::sched::setns(&j.fd, j.kind).map_err(at(Stage::JoinNamespace, i as u32))?;
    }
    if plan.ns.clone_flags.contains(CloneFlags::CLONE_NEWCGROUP) {
        // Now that the parent has moved us into the container's cgroup, it becomes the root
        // of our cgroup namespace.
        nix::sched::unshare(CloneFlags::CLONE_NEWCGROUP).map_err(at(Stage::CgroupNamespace, 0))?;
    }
    if plan.ns.clone_flags.contains(CloneFlags::CLONE_NEWUSER) {
        // Become the namespace's root (mapped by the parent) for the setup that follows.
        setresgid(0.into(), 0.into(), 0.into()).map_err(at(Stage::Gid, 0))?;
        setresuid(0.into(), 0.into(), 0.into()).map_err(at(Stage::Uid, 0))?;
    }
    if plan.ns.clone_flags.contains(CloneFlags::CLONE_NEWNET) {
        // A new network namespace has only `lo`, and it starts down: bring it up as docker
        // and runc do, so that 127.0.0.1 works even with `--network none`. A namespace joined
        // by path is someone else's and is left as it is.
        syscall::loopback_up().map_err(at(Stage::Loopback, 0))?;
    }
    // Device nodes and mount points get exactly the modes asked for.
    umask(Mode::empty());

    let root = plan.mounts.setup_rootfs()?;
    if plan.stop_before_pivot {
        // The runtime's own hooks (prestart, createRuntime) see the mounts where the spec
        // puts them, the rootfs still at its host path.
        syscall::write_all(sock.as_fd(), &ChildFailure::BEFORE_PIVOT)
            .map_err(at(Stage::Sync, 0))?;
        wait_for_go(sock).map_err(at(Stage::Sync, 0))?;
    }
    if let Some(h) = &plan.hooks {
        // In the container's namespaces, the host's paths still in view.
        h.run(Stage::CreateContainerHook, host_pid)?;
    }
    plan.mounts.pivot(root)?;
    for (i, (path, value)) in plan.sysctl.iter().enumerate() {
        write_file(path, value.as_bytes()).map_err(at(Stage::Sysctl, i as u32))?;
    }
    plan.mounts.finish()?;
    if let Some(d) = &plan.domainname {
        syscall::setdomainname(d).map_err(at(Stage::Hostname, 1))?;
    }
    if let Some(h) = &plan.hostname {
        nix::unistd::sethostname(std::ffi::OsStr::from_bytes(h.as_bytes()))
            .map_err(at(Stage::Hostname, 0))?;
    }
    let confinement = Confinement {
        exec: &plan.exec,
        caps: &plan.caps,
        seccomp: plan.seccomp.as_deref(),
        winsize: plan.winsize.as_ref(),
        cwd: plan.mounts.cwd.as_bytes(),
        setgroups: !plan.ns.clone_flags.contains(CloneFlags::CLONE_NEWUSER)
            || !plan.exec.groups.is_empty(),
        die_with_parent: plan.die_with_parent,
    };
    confinement.apply(sock)?;

    // Before init forks: init never execs, so close-on-exec does not protect it, and it would
    // otherwise keep every descriptor of the host's (the run's files, a procfs handle, the
    // caller's pipes) for as long as the container lives.
    // Created: tell the caller, then wait for start, from the caller ([`Created::start`])
    // or, through the FIFO, from whoever opens its other end (an OCI `start`). (Before the
    // descriptors are closed: the FIFO is one of them.)
    syscall::write_all(sock.as_fd(), &ChildFailure::AT_GATE).map_err(at(Stage::Sync, 0))?;
    // The FIFO's write end stays open, close-on-exec, until exec: its reader (`start`)
    // sees EOF only once the app runs (or this process is gone).
    let gate = match &plan.start_gate {
        Some((_, via)) => open_gate_for_writing(via, 3 + plan.preserve_fds).map(Some),
        None => wait_for_go(sock).map(|()| None),
    }
    .map_err(at(Stage::StartGate, 0))?;
    if let Some(h) = &plan.hooks {
        // Started: in the container, as its user and confined, right before the app.
        h.run(Stage::StartContainerHook, host_pid)?;
    }
    if let Some(g) = &gate {
        // Tell `start` the app is on its way (a failed hook above ends this process
        // without a word instead: start sees the gate close empty).
        syscall::write_all(g.as_fd(), &[0]).map_err(at(Stage::StartGate, 0))?;
    }
    let gate_fd = gate.as_ref().map_or(-1, |g| g.as_raw_fd());
    close_fds(plan, &[sock.as_raw_fd(), gate_fd]).map_err(at(Stage::CloseFds, 0))?;
    if plan.init {
        crate::init::fork_app(|| {
            // Only the app reports over the socket and holds the gate from now on: init
            // never execs.
            let _ = nix::unistd::close(sock.as_raw_fd());
            if gate_fd >= 0 {
                let _ = nix::unistd::close(gate_fd);
            }
        })
        .map_err(at(Stage::Fork, 0))?;
    }
    let e = confinement.exec();
    drop(gate);
    Err(e)
}

/// Blocks until the caller releases the process (after the cgroup and the id maps), with its
/// pid as the host sees it.
fn wait_for_release(sock: &OwnedFd) -> Result<i32, Errno> {
    let mut pid = [0u8; 4];
    match read_from_caller(sock, &mut pid)? {
        4 => Ok(i32::from_ne_bytes(pid)),
        _ => Err(Errno::EPROTO),
    }
}

/// Blocks until the caller sends its one byte on the sync socket.
fn wait_for_go(sock: &OwnedFd) -> Result<(), Errno> {
    read_from_caller(sock, &mut [0u8; 1]).map(drop)
}

/// One record from the caller on the sync socket. An end of file means the caller is gone
/// or gave up on this container: nothing more to do.
fn read_from_caller(sock: &OwnedFd, buf: &mut [u8]) -> Result<usize, Errno> {
    loop {
        match nix::unistd::read(sock.as_raw_fd(), buf) {
            Ok(0) => syscall::exit_now(125),
            Ok(n) => return Ok(n),
            Err(Errno::EINTR) => {}
            Err(e) => return Err(e),
        }
    }
}

/// Blocks until the FIFO is opened for reading (`start`). Returns it, placed at or above
/// `min_fd`: below, it could take the number of a descriptor the app is to inherit
/// (`preserve_fds`), lose close-on-exec and keep `start` waiting for the app's exit. The
/// caller writes the byte that tells `start` the app is on its way.
fn open_gate_for_writing(gate: &CString, min_fd: u32) -> Result<OwnedFd, Errno> {
    let fd = loop {
        // SAFETY: open(2) reads the NUL-terminated path; a negative return is checked.
        let fd = unsafe { libc::open(gate.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC) };
        match Errno::result(fd) {
            Ok(fd) => break fd,
            Err(Errno::EINTR) => continue,
            Err(e) => return Err(e),
        }
    };
    // SAFETY: the descriptor was just opened and nothing else owns it.
    let mut fd = unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) };
    if (fd.as_raw_fd() as u32) < min_fd {
        let high = nix::fcntl::fcntl(
            fd.as_raw_fd(),
            nix::fcntl::FcntlArg::F_DUPFD_CLOEXEC(min_fd as i32),
        )?;
        // SAFETY: F_DUPFD_CLOEXEC returned a new descriptor that nothing else owns.
        fd = unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(high) };
    }
    Ok(fd)
}

fn write_file(path: &CString, value: &[u8]) -> Result<(), Errno> {
    let fd = nix::fcntl::open(
        path.as_c_str(),
        nix::fcntl::OFlag::O_WRONLY | nix::fcntl::OFlag::O_CLOEXEC,
        Mode::empty(),
    )?;
    // SAFETY: open returned a new descriptor that nothing else owns.
    let fd: OwnedFd = unsafe { std::os::fd::FromRawFd::from_raw_fd(fd) };
    syscall::write_all(fd.as_fd(), value)
}

/// The spec's `createContainer` hooks (run by the container's process in its namespaces,
/// before `pivot_root`, found by their host paths) and `startContainer` hooks (run at
/// start, inside the container as its user, right before the app): as runc runs them.
/// Each gets the state on stdin with the container's host pid, `creating` or `created`.
pub(crate) struct InContainerHooks {
    create: Vec<oci_spec::runtime::Hook>,
    start: Vec<oci_spec::runtime::Hook>,
    state: serde_json::Value,
}

impl InContainerHooks {
    fn from_spec(spec: &Spec, id: &str, state: &serde_json::Value) -> Option<InContainerHooks> {
        let h = spec.hooks().as_ref()?;
        let create = h.create_container().clone().unwrap_or_default();
        let start = h.start_container().clone().unwrap_or_default();
        if create.is_empty() && start.is_empty() {
            return None;
        }
        let state = match state {
            serde_json::Value::Object(_) => state.clone(),
            _ => serde_json::json!({
                "ociVersion": crate::lifecycle::OCI_VERSION,
                "id": id,
                "bundle": "",
            }),
        };
        Some(InContainerHooks {
            create,
            start,
            state,
        })
    }

    /// Runs one list in the child. A failure is reported as the hook's index and, in the
    /// errno field, what happened: its exit code (128 + a signal), or minus an errno.
    fn run(&self, stage: Stage, pid: i32) -> Result<(), ChildFailure> {
        let (list, status) = match stage {
            Stage::CreateContainerHook => (&self.create, "creating"),
            _ => (&self.start, "created"),
        };
        if list.is_empty() {
            return Ok(());
        }
        let mut state = self.state.clone();
        state["pid"] = pid.into();
        state["status"] = status.into();
        if let Err((i, e)) = crate::hooks::run_indexed(list, &state) {
            let errno = match e {
                crate::hooks::HookError::Failed { status, .. } => {
                    use std::os::unix::process::ExitStatusExt as _;
                    status
                        .code()
                        .or(status.signal().map(|s| 128 + s))
                        .unwrap_or(1)
                }
                crate::hooks::HookError::TimedOut { .. } => -libc::ETIMEDOUT,
                crate::hooks::HookError::Spawn { source, .. }
                | crate::hooks::HookError::Io { source, .. } => {
                    -source.raw_os_error().unwrap_or(libc::EIO)
                }
                crate::hooks::HookError::StateTooLarge(_) => -libc::E2BIG,
            };
            return Err(ChildFailure {
                stage,
                index: i as u32,
                errno,
            });
        }
        Ok(())
    }

    /// The words for what [`InContainerHooks::run`] reported.
    fn why(code: i32) -> String {
        if code == -libc::ETIMEDOUT {
            "timed out".to_string()
        } else if code < 0 {
            format!("could not run: {}", Errno::from_raw(-code).desc())
        } else {
            format!("failed (exit code {code})")
        }
    }
}

/// CVE-2024-21626: close every descriptor the container is not meant to have, so nothing of
/// the host (a cgroup directory, a runtime file) is reachable through /proc/self/fd after
/// exec. Kept: 0-2, the preserved 3..3+n, and the sync socket (close-on-exec, so exec closes
/// it and the parent sees EOF as success).
fn close_fds(plan: &Plan, keep: &[i32]) -> Result<(), Errno> {
    let first_free = 3 + plan.preserve_fds;
    for fd in 3..first_free as i32 {
        if plan.reserved.iter().any(|r| r.as_raw_fd() == fd) {
            // A number the caller left unused: it stays unused.
            let _ = nix::unistd::close(fd);
            continue;
        }
        // Inherited descriptors meant for the container must survive exec.
        let _ = nix::fcntl::fcntl(
            fd,
            nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::empty()),
        );
    }
    syscall::close_fds_from(first_free, keep)
}

/// `preserve_fds`: the app inherits descriptors 3..3+n as the caller has them. A number in
/// that range the caller left closed would go to the first descriptor the runtime opens
/// (the start gate, a cgroup directory, a rootfs handle) and, losing close-on-exec with
/// the preserved ones, hand a piece of the host to the app (seen: the gate's O_PATH handle).
/// So each such number is held on /dev/null, close-on-exec, while the container is made,
/// and the child closes it before exec.
fn reserve_preserved(n: u32) -> Result<Vec<OwnedFd>, Error> {
    use nix::fcntl::{fcntl, FcntlArg, OFlag};
    let mut held = Vec::new();
    for fd in 3..3i32.saturating_add(n.min(1 << 20) as i32) {
        if fcntl(fd, FcntlArg::F_GETFD).is_ok() {
            continue;
        }
        let null: OwnedFd = std::fs::File::open("/dev/null")
            .map_err(|source| Error::Io {
                op: "opening /dev/null",
                source,
            })?
            .into();
        if null.as_raw_fd() == fd {
            held.push(null);
            continue;
        }
        let placed = nix::unistd::dup3(null.as_raw_fd(), fd, OFlag::O_CLOEXEC)
            .map_err(Error::sys("reserving a preserved descriptor"))?;
        // SAFETY: dup3 returned `fd`, which was not open before and nothing else owns.
        held.push(unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(placed) });
    }
    Ok(held)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn refuses_to_clone_from_a_multithreaded_process() {
        // Keep a second thread alive for the call, whatever the harness does.
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        let t = std::thread::spawn(move || {
            let _ = rx.recv();
        });
        let spec = Spec::default();
        let opts = ContainerOptions::new("t", spec, Rootfs::Dir("/nonexistent".into()));
        assert!(matches!(
            Container::spawn(opts),
            Err(Error::MultiThreaded(_))
        ));
        drop(tx);
        t.join().unwrap();
    }

    #[test]
    fn exit_status_codes() {
        assert_eq!(ExitStatus::Exited(7).code(), 7);
        assert_eq!(ExitStatus::Signaled(Signal::SIGKILL).code(), 137);
        assert_eq!(ExitStatus::Signaled(Signal::SIGTERM).code(), 143);
    }
}
