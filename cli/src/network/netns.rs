//! A container's network namespace as a file, the way `ip netns` and podman keep one: a
//! fresh namespace bind-mounted on `<state>/<id>/netns`. The CNI plugins configure it by
//! that path before the container exists, the spec joins it by path, and it outlives the
//! container's restarts (same address, as docker keeps it) until slate unmounts it.

use std::path::Path;

use anyhow::{anyhow, Context as _};
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sched::{unshare, CloneFlags};

/// Creates a new network namespace, pinned at `path`, with `lo` up.
pub fn create(path: &Path) -> anyhow::Result<()> {
    std::fs::File::create(path).with_context(|| format!("cannot create {}", path.display()))?;
    // unshare(CLONE_NEWNET) moves only the calling thread: a short-lived thread makes the
    // namespace and pins it, and slate's own thread never leaves the host's network.
    let res = std::thread::scope(|s| {
        s.spawn(|| -> anyhow::Result<()> {
            unshare(CloneFlags::CLONE_NEWNET).context("cannot create a network namespace")?;
            mount(
                Some("/proc/thread-self/ns/net"),
                path,
                None::<&str>,
                MsFlags::MS_BIND,
                None::<&str>,
            )
            .with_context(|| format!("cannot pin the network namespace at {}", path.display()))?;
            // docker and runc bring `lo` up in a new namespace: apps expect 127.0.0.1.
            slate_runtime::net::loopback_up().context("cannot bring up lo")?;
            Ok(())
        })
        .join()
        .unwrap_or_else(|_| Err(anyhow!("the network namespace thread panicked")))
    });
    if res.is_err() {
        remove(path);
    }
    res
}

/// Unpins and removes the namespace file; the namespace goes once no process is in it.
pub fn remove(path: &Path) {
    match umount2(path, MntFlags::MNT_DETACH) {
        Ok(()) | Err(nix::errno::Errno::EINVAL) | Err(nix::errno::Errno::ENOENT) => {}
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "cannot unmount a network namespace")
        }
    }
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "cannot remove a network namespace file")
        }
    }
}
