//! Issue 12 (part 4): what a container sees at /sys/fs/cgroup. JVMs, .NET, Go's automaxprocs
//! and node size themselves from it, so it must be the container's own cgroups, with its own
//! limits, nothing of the host's tree, and read-only unless `--privileged` (as docker).
//!
//! On this kind of host (v1 or hybrid) that is a tmpfs with the container's own directory of
//! each hierarchy bound read-only; on cgroup v2, the container's own cgroup2 subtree. The
//! tests that name v1 paths are `#[ignore]`d (a v2 host cannot run them) and `tests/run` runs
//! them where the host has v1 hierarchies; the others check whichever form this host has.

use std::path::{Path, PathBuf};

use crate::harness::fixture::{Compression, ImageSpec, LayerSpec};
use crate::harness::run_image::{self, base_entries, host_platform, RunEnv, PRINT_ID};
use crate::harness::slate::{mounts_below, Output};
use crate::harness::tar_writer::Entry;

/// `statfs(2)` magic numbers as busybox's `stat -f -c %t` prints them (it has no name for
/// cgroup2).
const CGROUP2_MAGIC: &str = "63677270";
const TMPFS_MAGIC: &str = "1021994";

const NEEDS_V1: &str = "needs a cgroup v1 or hybrid host; tests/run runs it there";

/// A pure cgroup v2 host: its /sys/fs/cgroup is the cgroup2 root, with `cgroup.controllers`.
fn host_is_v2() -> bool {
    Path::new("/sys/fs/cgroup/cgroup.controllers").exists()
}

/// Fails (rather than passing without testing) where the v1 tests cannot work.
fn require_v1_host() {
    assert!(!host_is_v2(), "{NEEDS_V1}: /sys/fs/cgroup is cgroup2");
}

/// The container's memory and pids limit files, as this host's form of the view names them.
fn limit_files() -> (&'static str, &'static str) {
    if host_is_v2() {
        ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/pids.max")
    } else {
        (
            "/sys/fs/cgroup/memory/memory.limit_in_bytes",
            "/sys/fs/cgroup/pids/pids.max",
        )
    }
}

/// `key=value` lines of a container's output: the value of `key`, all lines after `key:`.
fn section<'a>(out: &'a Output, key: &str) -> Vec<&'a str> {
    out.stdout
        .lines()
        .skip_while(|l| *l != format!("{key}:"))
        .skip(1)
        .take_while(|l| !l.ends_with(':'))
        .collect()
}

/// The shell lines that report what the container sees: its id (so its cgroups are checked
/// and cleaned up), /proc/self/cgroup, the names in /sys/fs/cgroup, every directory below
/// the view's top (there must be none but the hierarchies), the limits, and the result of
/// writing one of them and of creating a directory.
fn report_script(mem: &str, pids: &str) -> String {
    format!(
        "{PRINT_ID}\n\
         echo cgroup:; cat /proc/self/cgroup\n\
         echo names:; ls /sys/fs/cgroup\n\
         echo fstype:; stat -f -c %t /sys/fs/cgroup\n\
         echo subdirs:; for d in /sys/fs/cgroup/*/ /sys/fs/cgroup/*/*/; do \
           test -d \"$d\" && ! test -L \"${{d%/}}\" && echo \"$d\"; done\n\
         echo limits:; cat {mem} {pids}\n\
         echo write:; (echo 7 > {pids}) 2>&1; cat {pids}\n\
         echo mkdir:; mkdir /sys/fs/cgroup/new 2>&1 && echo created\n\
         echo end:\n"
    )
}

fn learn_id(env: &RunEnv, out: &Output) {
    let id = out.stdout.lines().next().unwrap_or_default();
    env.learn_id(id);
}

/// Every line of /proc/self/cgroup names the root: the cgroup namespace starts at the
/// container's own cgroup in every hierarchy.
fn assert_cgroup_paths_are_roots(out: &Output) {
    let lines = section(out, "cgroup");
    assert!(!lines.is_empty(), "{out:?}");
    for l in lines {
        assert!(
            l.ends_with(":/"),
            "{l} is not the namespace's root: {out:?}"
        );
    }
}

/// Issue 12: on this host, whichever form it has, the container sees its own limits, no
/// other cgroup, and cannot write them.
#[test]
fn issue12_the_container_sees_only_its_own_cgroups_read_only() {
    let env = RunEnv::new("cgview", run_image::default_config());
    let (mem, pids) = limit_files();
    let out = env
        .run(
            &["--memory", "64m", "--pids-limit", "50"],
            &["sh", "-c", &report_script(mem, pids)],
        )
        .success();
    learn_id(&env, &out);
    assert_cgroup_paths_are_roots(&out);
    assert_eq!(section(&out, "limits"), ["67108864", "50"], "{out:?}");
    let names = section(&out, "names");
    let subdirs = section(&out, "subdirs");
    if host_is_v2() {
        assert_eq!(section(&out, "fstype"), [CGROUP2_MAGIC], "{out:?}");
        assert!(names.contains(&"memory.max"), "{out:?}");
        // The container's cgroup has no children: no sibling, no parent, no supervisor.
        assert!(subdirs.is_empty(), "{out:?}");
    } else {
        assert_eq!(section(&out, "fstype"), [TMPFS_MAGIC], "{out:?}");
        for h in ["memory", "pids", "devices", "freezer"] {
            assert!(names.contains(&h), "no {h} in {names:?}: {out:?}");
        }
        assert!(!names.contains(&"systemd"), "{out:?}");
        // Only the hierarchies themselves, each the container's own cgroup without children.
        for d in &subdirs {
            let rest = d
                .trim_start_matches("/sys/fs/cgroup/")
                .trim_end_matches('/');
            assert!(
                !rest.contains('/'),
                "{d}: a cgroup below the view's top: {out:?}"
            );
        }
    }
    let write = section(&out, "write");
    assert!(
        write.iter().any(|l| l.contains("Read-only file system")),
        "{out:?}"
    );
    assert_eq!(write.last(), Some(&"50"), "{out:?}");
    let mkdir = section(&out, "mkdir");
    assert!(
        mkdir.iter().any(|l| l.contains("Read-only file system")),
        "{out:?}"
    );
}

/// docker: a privileged container's cgroup tree is writable (its own cgroups only).
#[test]
fn issue12_privileged_may_write_its_own_cgroups() {
    let env = RunEnv::new("cgview-priv", run_image::default_config());
    let (mem, pids) = limit_files();
    let out = env
        .run(
            &["--privileged", "--memory", "64m", "--pids-limit", "50"],
            &["sh", "-c", &report_script(mem, pids)],
        )
        .success();
    learn_id(&env, &out);
    assert_cgroup_paths_are_roots(&out);
    assert_eq!(section(&out, "write"), ["7"], "{out:?}");
}

/// The brief's check on a v1/hybrid host: the v1 files hold the container's own limits, the
/// memory hierarchy shows no `slate` parent and no sibling, the cgroup2 hierarchy of a hybrid
/// host is the container's own too, and nothing can be written.
#[test]
#[ignore = "needs a cgroup v1 or hybrid host; tests/run runs it there"]
fn v1_the_container_reads_its_own_v1_limits_and_cannot_write_them() {
    require_v1_host();
    let env = RunEnv::new("cgview-v1", run_image::default_config());
    let hybrid = Path::new("/sys/fs/cgroup/unified/cgroup.controllers").exists();
    let script = format!(
        "{PRINT_ID}\n\
         echo mem:; cat /sys/fs/cgroup/memory/memory.limit_in_bytes\n\
         echo pids:; cat /sys/fs/cgroup/pids/pids.max\n\
         echo memdirs:; ls -d /sys/fs/cgroup/memory/*/ 2>/dev/null; \
           test -e /sys/fs/cgroup/memory/slate && echo slate-parent\n\
         echo unified:; ls /sys/fs/cgroup/unified 2>&1 | grep -c cgroup.procs; ls -d /sys/fs/cgroup/unified/*/ 2>/dev/null\n\
         echo write-mem:; (echo 1 > /sys/fs/cgroup/memory/memory.limit_in_bytes) 2>&1\n\
         echo write-pids:; (echo 1 > /sys/fs/cgroup/pids/pids.max) 2>&1\n\
         echo write-tmpfs:; (touch /sys/fs/cgroup/memory.x) 2>&1\n\
         echo cgroup:; cat /proc/self/cgroup\n\
         echo end:\n"
    );
    let out = env
        .run(
            &["--memory", "64m", "--pids-limit", "50"],
            &["sh", "-c", &script],
        )
        .success();
    learn_id(&env, &out);
    assert_eq!(section(&out, "mem"), ["67108864"], "{out:?}");
    assert_eq!(section(&out, "pids"), ["50"], "{out:?}");
    // The container's own memory cgroup: no child, no `slate` parent, no sibling.
    assert!(section(&out, "memdirs").is_empty(), "{out:?}");
    if hybrid {
        assert_eq!(section(&out, "unified"), ["1"], "{out:?}");
    }
    for w in ["write-mem", "write-pids", "write-tmpfs"] {
        let lines = section(&out, w);
        assert!(
            lines.iter().any(|l| l.contains("Read-only file system")),
            "{w}: {out:?}"
        );
    }
    assert_cgroup_paths_are_roots(&out);
    // Every line: memory, pids... and the cgroup2 one, "0::/", on a hybrid host.
    let cg = section(&out, "cgroup");
    assert!(cg.iter().any(|l| l.contains(":memory:")), "{out:?}");
    if hybrid {
        assert!(cg.contains(&"0::/"), "{out:?}");
    }
}

/// A test-owned host directory a hostile image aims its links at.
struct Target(tempfile::TempDir);

impl Target {
    fn new() -> Target {
        Target(
            tempfile::Builder::new()
                .prefix("slate-e2e-cgview-target-")
                .tempdir()
                .expect("tempdir"),
        )
    }

    fn path(&self) -> &Path {
        self.0.path()
    }

    /// Nothing created in it and nothing mounted on or below it.
    fn assert_untouched(&self) {
        let entries: Vec<PathBuf> = std::fs::read_dir(self.path())
            .expect("read target")
            .flatten()
            .map(|e| e.path())
            .collect();
        assert!(entries.is_empty(), "created on the host: {entries:?}");
        let mounts = mounts_below(self.path());
        assert!(mounts.is_empty(), "mounted on the host: {mounts:?}");
    }
}

/// An image whose /sys is a link to `target` (a host path), and, when `with_dirs`, whose
/// rootfs also has that path as directories (so the link resolves inside it).
fn sys_link_image(target: &Path, with_dirs: bool) -> crate::harness::fixture::BuiltImage {
    let mut entries: Vec<Entry> = base_entries()
        .into_iter()
        .filter(|e| e.path != b"sys")
        .collect();
    entries.push(Entry::symlink("sys", target.as_os_str().as_encoded_bytes()));
    if with_dirs {
        let mut p = PathBuf::new();
        for c in target.join("fs/cgroup").components().skip(1) {
            p.push(c);
            entries.push(Entry::dir(p.as_os_str().as_encoded_bytes()));
        }
    }
    let mut spec =
        ImageSpec::new(vec![LayerSpec::new(Compression::Gzip, entries)]).platform(host_platform());
    spec.runtime_config = run_image::default_config();
    spec.build()
}

/// A hostile image cannot move the sysfs and cgroup mounts onto the host: its `/sys ->
/// /host/dir` link is followed inside the rootfs (the mounts land there, and the container
/// still sees its own limits), or, where the rootfs has no such path, the run fails with a
/// clear error. The host directory gets nothing either way.
#[test]
fn issue12_a_symlinked_sys_cannot_move_the_cgroup_view_onto_the_host() {
    let target = Target::new();
    let (mem, pids) = limit_files();

    let env = RunEnv::with_image("cgview-link", &sys_link_image(target.path(), true));
    let out = env
        .run(
            &["--memory", "64m", "--pids-limit", "50"],
            &["sh", "-c", &report_script(mem, pids)],
        )
        .success();
    learn_id(&env, &out);
    assert_eq!(section(&out, "limits"), ["67108864", "50"], "{out:?}");
    target.assert_untouched();

    let env = RunEnv::with_image("cgview-link-none", &sys_link_image(target.path(), false));
    let out = env.run(&[], &["true"]).failure(125);
    out.error_mentions(&["/sys"]);
    target.assert_untouched();
}
