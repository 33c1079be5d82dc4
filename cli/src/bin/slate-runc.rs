//! `slate-runc`: slate as a drop-in for runc, for engines that run a runtime binary by path
//! (containerd's runc shim with `--runc-binary`/`BinaryName`, `podman --runtime`). It is a
//! few hundred bytes of code that executes the `slate` binary installed beside it under the
//! name `slate-runc`, which makes slate speak runc's command line: one program to build,
//! copy and keep up to date, and no second copy of it in memory.

use std::os::unix::process::CommandExt as _;

fn main() {
    let me = std::env::current_exe().ok();
    let slate = me
        .as_deref()
        .and_then(|p| p.parent())
        .map(|d| d.join("slate"))
        .filter(|p| p.is_file());
    let Some(slate) = slate else {
        eprintln!("slate-runc: no slate binary beside this one (install slate-runc next to slate)");
        std::process::exit(127);
    };
    let err = std::process::Command::new(&slate)
        .arg0("slate-runc")
        .args(std::env::args_os().skip(1))
        .exec();
    eprintln!("slate-runc: cannot run {}: {err}", slate.display());
    std::process::exit(127);
}
