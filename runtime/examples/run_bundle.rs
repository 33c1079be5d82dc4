//! `run_bundle [--init] [--overlay] [--no-stdin] [--preserve-fds N] [--stdout FILE] [--id ID] BUNDLE`: runs an
//! OCI bundle (BUNDLE/config.json and its root) under slate's runtime like `crun run`,
//! supervised, and exits with its status.
//! The runtime's integration tests and the start-up benchmark drive it.
//!
//! `--overlay` mounts the bundle's root as the lower layer of an overlay with a fresh upper
//! directory (BUNDLE/.upper, .work, .merged; removed afterwards), as `slate run` does with
//! image layers. `--no-stdin` gives a terminal no input (`attach_stdin: false`, docker's `-t`
//! without `-i`). `--stdout FILE` hands the runtime FILE as the app's stdout
//! (`ContainerOptions::stdio`), leaving run_bundle's own.

use std::path::PathBuf;
use std::process::ExitCode;

use slate_runtime::bundle::Bundle;
use slate_runtime::{supervise, Container, ContainerOptions, Error, Rootfs};

fn usage() -> ExitCode {
    eprintln!(
        "usage: run_bundle [--init] [--overlay] [--no-stdin] [--preserve-fds N] [--stdout FILE] [--id ID] BUNDLE"
    );
    ExitCode::from(125)
}

fn print_error(e: &Error) {
    let mut msg = format!("run_bundle: {e}");
    let mut src = std::error::Error::source(e);
    while let Some(s) = src {
        msg.push_str(&format!(": {s}"));
        src = s.source();
    }
    eprintln!("{msg}");
}

fn main() -> ExitCode {
    let mut init = false;
    let mut overlay = false;
    let mut attach_stdin = true;
    let mut preserve_fds = 0;
    let mut id = format!("run-bundle-{}", std::process::id());
    let mut stdout = None;
    let mut bundle = None;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--init" => init = true,
            "--overlay" => overlay = true,
            "--no-stdin" => attach_stdin = false,
            "--preserve-fds" => match args.next().and_then(|v| v.parse().ok()) {
                Some(n) => preserve_fds = n,
                None => return usage(),
            },
            "--stdout" => match args.next() {
                Some(v) => stdout = Some(PathBuf::from(v)),
                None => return usage(),
            },
            "--id" => match args.next() {
                Some(v) => id = v,
                None => return usage(),
            },
            _ if bundle.is_none() => bundle = Some(PathBuf::from(a)),
            _ => return usage(),
        }
    }
    let bundle = match bundle {
        Some(b) => b,
        None => return usage(),
    };
    let Bundle {
        spec, rootfs: root, ..
    } = match Bundle::open(&bundle) {
        Ok(b) => b,
        Err(e) => {
            eprintln!("run_bundle: {e}");
            return ExitCode::from(125);
        }
    };
    let scratch = [".upper", ".work", ".merged"].map(|d| bundle.join(d));
    let rootfs = if overlay {
        for d in &scratch {
            if let Err(e) = std::fs::create_dir_all(d) {
                eprintln!("run_bundle: cannot create {}: {e}", d.display());
                return ExitCode::from(125);
            }
        }
        Rootfs::Overlay {
            lower: vec![root],
            upper: scratch[0].clone(),
            work: scratch[1].clone(),
            target: scratch[2].clone(),
        }
    } else {
        Rootfs::Dir(root)
    };
    let mut opts = ContainerOptions::new(id, spec, rootfs);
    opts.init = init;
    opts.preserve_fds = preserve_fds;
    opts.attach_stdin = attach_stdin;
    if let Some(p) = &stdout {
        match std::fs::File::create(p) {
            Ok(f) => opts.stdio[1] = Some(f.into()),
            Err(e) => {
                eprintln!("run_bundle: cannot create {}: {e}", p.display());
                return ExitCode::from(125);
            }
        }
    }
    let result = Container::spawn(opts).and_then(supervise);
    if overlay {
        for d in &scratch {
            let _ = std::fs::remove_dir_all(d);
        }
    }
    match result {
        Ok(status) => ExitCode::from(status.code().clamp(0, 255) as u8),
        Err(e) => {
            print_error(&e);
            ExitCode::from(e.exit_code() as u8)
        }
    }
}
