//! The store and the state dir: the store's file system (each run's overlay upper directory
//! lives on it), a real overlay mounted on it, its free space and inodes, and whether the
//! state dir is a tmpfs a reboot empties.

use std::path::{Path, PathBuf};

use super::Check;
use crate::config::Settings;

const MOVE_STORE: &str = "put the store on ext4, xfs or btrfs: `root = \"/var/lib/slate\"` (or \
                          another directory on such a disk) in /etc/slate/config.toml, or --root";

pub fn checks(settings: &Settings) -> Vec<Check> {
    let mut out = Vec::new();
    let root = std::path::absolute(&settings.root).unwrap_or_else(|_| settings.root.clone());
    // The probe works where runs do, in the store's tmp/. On a machine without a store yet,
    // the directories it needs are made for it and removed again: the doctor leaves the
    // machine as it found it.
    let tmp = root.join("tmp");
    match Created::dirs(&tmp) {
        Ok(created) => {
            out.push(store_fs_check(&root, fs_of(&root)));
            out.push(overlay_check(&tmp));
            out.push(space_check(&root));
            drop(created);
        }
        Err(e) => out.push(Check::fail(
            "store-fs",
            format!("cannot create {}: {e}", tmp.display()),
            "point `root =` in /etc/slate/config.toml or --root at a writable directory (as \
             root)",
        )),
    }
    out.push(state_dir_check(&settings.state_dir));
    out
}

/// Directories made for the probe, removed (if still empty) when dropped, deepest first.
struct Created(Vec<PathBuf>);

impl Created {
    fn dirs(path: &Path) -> std::io::Result<Created> {
        let mut missing: Vec<PathBuf> = path
            .ancestors()
            .take_while(|p| !p.exists())
            .map(Path::to_path_buf)
            .collect();
        missing.reverse();
        let mut made = Created(Vec::new());
        for d in missing {
            match std::fs::create_dir(&d) {
                Ok(()) => made.0.push(d),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(e),
            }
        }
        Ok(made)
    }
}

impl Drop for Created {
    fn drop(&mut self) {
        for d in self.0.iter().rev() {
            // Only if empty: a slate command that meanwhile made the store there keeps it.
            let _ = std::fs::remove_dir(d);
        }
    }
}

/// What a file system is good for, as a run's overlay upper directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FsKind {
    Disk,
    /// Works, but a reboot empties it.
    Memory,
    /// overlayfs refuses it as an upper layer; why.
    Unusable(&'static str),
}

const NO_POSIX: &str = "it has no owners, symlinks, device nodes or extended attributes";

/// `statfs` magic numbers (linux/magic.h) of the file systems a board's store may be on.
fn fs_kind(magic: u32) -> Option<(&'static str, FsKind)> {
    Some(match magic {
        0xEF53 => ("ext4", FsKind::Disk),
        0x5846_5342 => ("xfs", FsKind::Disk),
        0x9123_683E => ("btrfs", FsKind::Disk),
        0xF2F5_2010 => ("f2fs", FsKind::Disk),
        0x2FC1_2FC1 => ("zfs", FsKind::Disk),
        0x2405_1905 => ("ubifs", FsKind::Disk),
        0x0102_1994 => ("tmpfs", FsKind::Memory),
        0x8584_58F6 => ("ramfs", FsKind::Memory),
        0x794C_7630 => (
            "overlay",
            FsKind::Unusable("overlayfs cannot be the upper layer of another overlay"),
        ),
        0x4D44 => ("vfat", FsKind::Unusable(NO_POSIX)),
        0x2011_BAB0 => ("exfat", FsKind::Unusable(NO_POSIX)),
        0x5346_544E => ("ntfs", FsKind::Unusable(NO_POSIX)),
        0x7366_746E => ("ntfs3", FsKind::Unusable(NO_POSIX)),
        0x6573_5546 => (
            "fuse",
            FsKind::Unusable("overlayfs does not take FUSE as an upper layer"),
        ),
        0x6969 => (
            "nfs",
            FsKind::Unusable("overlayfs does not take NFS as an upper layer"),
        ),
        0xFF53_4D42 | 0xFE53_4D42 => (
            "cifs",
            FsKind::Unusable("overlayfs does not take SMB shares as an upper layer"),
        ),
        0x7371_7368 => ("squashfs", FsKind::Unusable("it is read-only")),
        0x9660 => ("iso9660", FsKind::Unusable("it is read-only")),
        _ => return None,
    })
}

/// The file system of `path`, or of its nearest existing ancestor (a state dir not created
/// yet): the magic and the directory actually looked at.
fn fs_of(path: &Path) -> Result<(u32, PathBuf), String> {
    let mut p = path;
    loop {
        match nix::sys::statfs::statfs(p) {
            // f_type is a C long or int depending on the target; the magics are 32-bit.
            Ok(s) => return Ok((s.filesystem_type().0 as u32, p.to_path_buf())),
            Err(nix::errno::Errno::ENOENT) => match p.parent() {
                Some(parent) => p = parent,
                None => return Err(format!("no part of {} exists", path.display())),
            },
            Err(e) => return Err(format!("cannot statfs {}: {e}", p.display())),
        }
    }
}

fn fs_label(magic: u32) -> String {
    fs_kind(magic).map_or_else(
        || format!("a file system of type 0x{magic:x}"),
        |(n, _)| n.to_owned(),
    )
}

fn store_fs_check(root: &Path, fs: Result<(u32, PathBuf), String>) -> Check {
    let (magic, _) = match fs {
        Ok(f) => f,
        Err(e) => return Check::fail("store-fs", e, MOVE_STORE),
    };
    let name = fs_label(magic);
    match fs_kind(magic).map(|(_, k)| k) {
        Some(FsKind::Disk) => Check::ok("store-fs", format!("{} is on {name}", root.display())),
        None => Check::ok(
            "store-fs",
            format!(
                "{} is on {name}, which slate does not know; the overlayfs check says whether \
                 runs work on it",
                root.display()
            ),
        ),
        Some(FsKind::Memory) => Check::warn(
            "store-fs",
            format!(
                "{} is on {name}: runs work, but every image is gone after a reboot (and \
                 takes RAM)",
                root.display()
            ),
            MOVE_STORE,
        ),
        Some(FsKind::Unusable(why)) => Check::fail(
            "store-fs",
            format!(
                "{} is on {name}: no run can start, overlayfs cannot put a run's upper \
                 directory there ({why})",
                root.display()
            ),
            MOVE_STORE,
        ),
    }
}

fn overlay_check(tmp: &Path) -> Check {
    match slate_runtime::probe::overlay(tmp) {
        Ok(api) => Check::ok(
            "overlayfs",
            format!(
                "an overlay with its upper directory in {} mounts and takes writes ({})",
                tmp.display(),
                match api {
                    slate_runtime::probe::OverlayApi::Fsopen => "fsopen, never attached",
                    slate_runtime::probe::OverlayApi::Mount => "mount(2), unmounted at once",
                }
            ),
        ),
        Err(e) => {
            let missing = !std::fs::read_to_string("/proc/filesystems")
                .unwrap_or_default()
                .lines()
                .any(|l| l.split_whitespace().last() == Some("overlay"));
            let fix = if missing {
                "load overlayfs: `modprobe overlay`, and `echo overlay > \
                 /etc/modules-load.d/overlay.conf` to keep it (a kernel without \
                 CONFIG_OVERLAY_FS cannot run slate)"
            } else {
                MOVE_STORE
            };
            Check::fail(
                "overlayfs",
                format!(
                    "an overlay with its upper directory in {}: {e}",
                    tmp.display()
                ),
                fix,
            )
        }
    }
}

const GIB: u64 = 1 << 30;
const MIB: u64 = 1 << 20;

/// Free space and inodes of the store's file system.
#[derive(Debug, Clone, Copy)]
struct Space {
    avail: u64,
    total: u64,
    /// 0 when the file system does not count inodes (btrfs).
    files_avail: u64,
    files_total: u64,
}

// c_ulong and fsblkcnt_t are 32-bit on armv7: the casts are not no-ops there.
#[allow(clippy::unnecessary_cast)]
fn space_check(root: &Path) -> Check {
    match nix::sys::statvfs::statvfs(root) {
        Ok(v) => {
            let frag = v.fragment_size() as u64;
            space_verdict(
                root,
                Space {
                    avail: v.blocks_available() as u64 * frag,
                    total: v.blocks() as u64 * frag,
                    files_avail: v.files_available() as u64,
                    files_total: v.files() as u64,
                },
            )
        }
        Err(e) => Check::warn(
            "store-space",
            format!("cannot statvfs {}: {e}", root.display()),
            "check that the store's directory is readable",
        ),
    }
}

fn space_verdict(root: &Path, s: Space) -> Check {
    let pct = |a: u64, t: u64| (a * 100).checked_div(t).unwrap_or(100);
    let inodes = if s.files_total == 0 {
        String::new()
    } else {
        format!(
            ", {} of {} inodes ({}%)",
            s.files_avail,
            s.files_total,
            pct(s.files_avail, s.files_total)
        )
    };
    let detail = format!(
        "{} free of {} ({}%) on {}{inodes}",
        crate::output::human_size(s.avail),
        crate::output::human_size(s.total),
        pct(s.avail, s.total),
        root.display()
    );
    if s.total == 0 {
        // ramfs: no size, it grows in RAM.
        return Check::ok(
            "store-space",
            format!(
                "{} does not report a size (it grows in RAM)",
                root.display()
            ),
        );
    }
    let fix = "free space: `slate image prune -a` removes images no container uses; \
               `max_store_size` in [pull] of /etc/slate/config.toml keeps the store within a \
               budget";
    let inodes_out = s.files_total > 0 && s.files_avail == 0;
    let inodes_low = s.files_total > 0 && pct(s.files_avail, s.files_total) < 5;
    if s.avail < 100 * MIB || inodes_out {
        Check::fail(
            "store-space",
            format!("{detail}: pulls and runs fail on a full disk"),
            fix,
        )
    } else if s.avail < GIB || pct(s.avail, s.total) < 5 || inodes_low {
        Check::warn(
            "store-space",
            format!("{detail}: little room for images"),
            fix,
        )
    } else {
        Check::ok("store-space", detail)
    }
}

fn state_dir_check(dir: &Path) -> Check {
    let fs = fs_of(dir);
    state_dir_verdict(dir, fs)
}

fn state_dir_verdict(dir: &Path, fs: Result<(u32, PathBuf), String>) -> Check {
    let (magic, seen) = match fs {
        Ok(f) => f,
        Err(e) => {
            return Check::warn(
                "state-dir",
                e,
                format!("create {} on a tmpfs", dir.display()),
            )
        }
    };
    let at = if seen == dir {
        dir.display().to_string()
    } else {
        format!("{} (not created yet; {} is)", dir.display(), seen.display())
    };
    let name = fs_label(magic);
    if matches!(fs_kind(magic), Some((_, FsKind::Memory))) {
        Check::ok(
            "state-dir",
            format!("{at} on {name}: a reboot forgets running containers' records"),
        )
    } else {
        Check::warn(
            "state-dir",
            format!(
                "{at} on {name}, not a tmpfs: container records survive a reboot (the next \
                 slate command sweeps them, but they are not meant to outlive a boot)"
            ),
            format!(
                "mount a tmpfs there: `mount -t tmpfs -o mode=0755,nosuid,nodev,noexec tmpfs {}` \
                 (and a line in /etc/fstab), or set `state_dir` in /etc/slate/config.toml to a \
                 directory under a tmpfs such as /run",
                dir.display()
            ),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::super::Status;
    use super::*;

    #[test]
    fn fat_and_overlay_cannot_hold_the_store() {
        let fat = store_fs_check(Path::new("/media/sd/slate"), Ok((0x4D44, "/".into())));
        assert_eq!(fat.status, Status::Fail);
        assert!(fat.detail.contains("on vfat"), "{fat:?}");
        assert!(fat.detail.contains("no owners"), "{fat:?}");
        assert!(fat.fix.unwrap().contains("ext4"));
        let ov = store_fs_check(Path::new("/x"), Ok((0x794C_7630, "/".into())));
        assert_eq!(ov.status, Status::Fail);
        assert!(ov.detail.contains("another overlay"), "{ov:?}");
        assert_eq!(
            store_fs_check(Path::new("/x"), Ok((0x6969, "/".into()))).status,
            Status::Fail
        );
    }

    #[test]
    fn disks_are_fine_tmpfs_is_volatile_unknown_defers() {
        let ext4 = store_fs_check(Path::new("/var/lib/slate"), Ok((0xEF53, "/".into())));
        assert_eq!(ext4.status, Status::Ok);
        assert_eq!(ext4.detail, "/var/lib/slate is on ext4");
        assert_eq!(
            store_fs_check(Path::new("/x"), Ok((0x0102_1994, "/".into()))).status,
            Status::Warn
        );
        let odd = store_fs_check(Path::new("/x"), Ok((0x1234_5678, "/".into())));
        assert_eq!(odd.status, Status::Ok);
        assert!(odd.detail.contains("0x12345678"), "{odd:?}");
    }

    #[test]
    fn directories_made_for_the_probe_go_again() {
        let t = tempfile::tempdir().unwrap();
        let deep = t.path().join("store/tmp");
        let made = Created::dirs(&deep).unwrap();
        assert!(deep.is_dir());
        drop(made);
        assert!(!t.path().join("store").exists());
        // What someone else put there meanwhile stays, and so do its directories.
        let made = Created::dirs(&deep).unwrap();
        std::fs::write(deep.join("pull-in-progress"), "x").unwrap();
        drop(made);
        assert!(deep.join("pull-in-progress").exists());
    }

    #[test]
    fn the_real_file_system_of_this_tree() {
        // This source tree is on a disk (never a FAT stick); a missing path falls back to
        // its existing ancestor.
        let here = Path::new(env!("CARGO_MANIFEST_DIR"));
        let (_, seen) = fs_of(&here.join("no/such/dir")).unwrap();
        assert_eq!(seen, here);
    }

    fn space(avail: u64, total: u64, fa: u64, ft: u64) -> Space {
        Space {
            avail,
            total,
            files_avail: fa,
            files_total: ft,
        }
    }

    #[test]
    fn free_space_thresholds() {
        let p = Path::new("/var/lib/slate");
        assert_eq!(
            space_verdict(p, space(20 * GIB, 32 * GIB, 900_000, 1_000_000)).status,
            Status::Ok
        );
        // Under 1 GiB, under 5 %, or few inodes: WARN.
        assert_eq!(
            space_verdict(p, space(900 * MIB, 8 * GIB, 900_000, 1_000_000)).status,
            Status::Warn
        );
        assert_eq!(
            space_verdict(p, space(2 * GIB, 100 * GIB, 900_000, 1_000_000)).status,
            Status::Warn
        );
        let inodes = space_verdict(p, space(20 * GIB, 32 * GIB, 40_000, 1_000_000));
        assert_eq!(inodes.status, Status::Warn);
        assert!(
            inodes.detail.contains("40000 of 1000000 inodes (4%)"),
            "{inodes:?}"
        );
        // ramfs reports no size at all.
        assert_eq!(space_verdict(p, space(0, 0, 0, 0)).status, Status::Ok);
        // btrfs counts no inodes: only space matters.
        assert_eq!(
            space_verdict(p, space(20 * GIB, 32 * GIB, 0, 0)).status,
            Status::Ok
        );
        // Full: FAIL.
        assert_eq!(
            space_verdict(p, space(10 * MIB, 32 * GIB, 900_000, 1_000_000)).status,
            Status::Fail
        );
        assert_eq!(
            space_verdict(p, space(20 * GIB, 32 * GIB, 0, 1_000_000)).status,
            Status::Fail
        );
    }

    #[test]
    fn the_state_dir_belongs_on_a_tmpfs() {
        let d = Path::new("/run/slate");
        let ok = state_dir_verdict(d, Ok((0x0102_1994, d.to_path_buf())));
        assert_eq!(ok.status, Status::Ok);
        let not_yet = state_dir_verdict(d, Ok((0x0102_1994, "/run".into())));
        assert!(
            not_yet.detail.contains("not created yet; /run is"),
            "{not_yet:?}"
        );
        let disk = state_dir_verdict(d, Ok((0xEF53, "/run".into())));
        assert_eq!(disk.status, Status::Warn);
        assert!(disk.detail.contains("on ext4, not a tmpfs"), "{disk:?}");
        assert!(disk.fix.unwrap().contains("mount -t tmpfs"));
    }
}
