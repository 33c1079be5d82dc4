//! `slate cp`: copies files and directory trees between a running container and the host,
//! with docker's grammar and path rules (`CONTAINER:SRC DEST`, `SRC CONTAINER:DEST`, `-` for
//! a tar stream on stdin or stdout, `dir/.` for a directory's contents, `-a`, `-L`).
//!
//! The container's filesystem is reached from the host through `/proc/<pid>/root` of its
//! PID 1, and every path in it is resolved inside that root; see `crate::copy` for how a
//! hostile container (symlinks out, races, a tar stream with `../`) is kept from reaching
//! host files. Only a running container has a filesystem: slate gives every run a fresh one
//! and removes it when the run ends.

use std::ffi::OsStr;
use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;

use anyhow::{anyhow, bail, Context};

use crate::config::Settings;
use crate::containers;
use crate::copy::{self, CopyError, Owner, PathSpec, Tree};
use crate::state::Status;

/// Stack of the thread that writes the tar stream: it recurses once per directory level.
const WRITER_STACK: usize = 16 << 20;

#[derive(Debug, clap::Args)]
pub struct CpArgs {
    /// Archive mode: keep uid/gid (otherwise files copied into a container are owned by its
    /// root, and files copied out by you)
    #[arg(short, long)]
    pub archive: bool,
    /// Always follow a symlink given as SRC_PATH
    #[arg(short = 'L', long)]
    pub follow_link: bool,
    /// Print no progress (slate never does; accepted for docker compatibility)
    #[arg(short, long)]
    pub quiet: bool,
    /// CONTAINER:SRC_PATH, a host path, or - (a tar stream on stdin)
    #[arg(value_name = "SRC")]
    pub src: String,
    /// CONTAINER:DEST_PATH, a host path, or - (a tar stream on stdout)
    #[arg(value_name = "DEST")]
    pub dest: String,
}

/// One side of a copy, as typed.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Endpoint {
    Container {
        key: String,
        path: String,
    },
    Host(String),
    /// `-`: stdin as a source, stdout as a destination.
    Stream,
}

impl Endpoint {
    /// docker's rules: `-` is a stream; an absolute path, a path without `:`, or one whose
    /// part before the first `:` starts with `.` (`./file:name`) is the host's; otherwise
    /// `CONTAINER:PATH`, and an empty PATH is the container's root.
    fn parse(arg: &str) -> Endpoint {
        if arg == "-" {
            return Endpoint::Stream;
        }
        if arg.starts_with('/') {
            return Endpoint::Host(arg.to_string());
        }
        match arg.split_once(':') {
            Some((key, path)) if !key.is_empty() && !key.starts_with('.') => Endpoint::Container {
                key: key.to_string(),
                path: path.to_string(),
            },
            _ => Endpoint::Host(arg.to_string()),
        }
    }
}

pub fn run(settings: &Settings, args: CpArgs) -> anyhow::Result<u8> {
    let src = Endpoint::parse(&args.src);
    let dst = Endpoint::parse(&args.dest);
    // Files get exactly the modes the source has, as with docker: no umask in between.
    nix::sys::stat::umask(nix::sys::stat::Mode::empty());
    match (src, dst) {
        (Endpoint::Container { .. }, Endpoint::Container { .. }) => {
            bail!("copying between containers is not supported")
        }
        (Endpoint::Container { key, path }, to) => copy_out(settings, &args, &key, &path, to),
        (from, Endpoint::Container { key, path }) => copy_in(settings, &args, from, &key, &path),
        _ => bail!("must specify at least one container source (CONTAINER:PATH)"),
    }?;
    Ok(0)
}

/// The root filesystem of the running container `key`, and its name.
fn open_container(settings: &Settings, key: &str) -> anyhow::Result<(Tree, String)> {
    let sd = containers::open_swept(settings)?;
    let rec = sd.find(key)?;
    let not_running = || {
        anyhow!(
            "container {} is not running: slate gives each run a fresh root filesystem and \
             removes it when the run ends, so only a running container has files to copy",
            rec.name
        )
    };
    let pid = match rec.pid {
        Some(p) if rec.status == Status::Running && rec.container_alive() => p,
        _ => return Err(not_running()),
    };
    let tree = Tree::container(pid, &rec.name)?;
    // The root was opened by PID: still the container's process (not a reused PID)?
    if !rec.container_alive() {
        return Err(not_running());
    }
    Ok((tree, rec.name.clone()))
}

fn cwd() -> anyhow::Result<PathBuf> {
    std::env::current_dir().context("cannot find the current directory")
}

/// A container's file or tree to stdout (as a tar stream) or onto the host.
fn copy_out(
    settings: &Settings,
    args: &CpArgs,
    key: &str,
    path: &str,
    to: Endpoint,
) -> anyhow::Result<()> {
    let (tree, _) = open_container(settings, key)?;
    let src = tree.source(&PathSpec::container(path.as_bytes()), args.follow_link)?;
    match to {
        Endpoint::Stream => {
            let out = BufWriter::new(io::stdout().lock());
            let mut out = copy::write_archive(&tree, &src, &src.archive_name(), out)?;
            out.flush()
                .context("cannot write the tar stream to stdout")?;
            Ok(())
        }
        Endpoint::Host(dest) => {
            let host = Tree::host()?;
            let dst = host.dest(&PathSpec::host(dest.as_bytes(), &cwd()?))?;
            let plan = copy::plan(&src, &dst, "on the host")?;
            let owner = if args.archive {
                Owner::Keep
            } else {
                Owner::Invoker
            };
            pipeline(
                |w| copy::write_archive(&tree, &src, &plan.top, w).map(drop),
                |r| copy::extract(&host, &plan.dir, r, owner),
            )
        }
        Endpoint::Container { .. } => bail!("copying between containers is not supported"),
    }
}

/// Stdin's tar stream, or a host file or tree, into a container.
fn copy_in(
    settings: &Settings,
    args: &CpArgs,
    from: Endpoint,
    key: &str,
    path: &str,
) -> anyhow::Result<()> {
    let (tree, name) = open_container(settings, key)?;
    let dst = tree.dest(&PathSpec::container(path.as_bytes()))?;
    let owner = if args.archive {
        Owner::Keep
    } else {
        Owner::Root
    };
    match from {
        Endpoint::Stream => {
            if !(dst.exists && dst.is_dir) {
                bail!(
                    "destination \"{name}:{}\" must be a directory",
                    OsStr::from_bytes(&dst.path).to_string_lossy()
                );
            }
            copy::extract(&tree, &dst.path, io::stdin().lock(), owner)?;
            Ok(())
        }
        Endpoint::Host(source) => {
            let host = Tree::host()?;
            let src = host.source(
                &PathSpec::host(source.as_bytes(), &cwd()?),
                args.follow_link,
            )?;
            let plan = copy::plan(&src, &dst, &format!("in container {name}"))?;
            pipeline(
                |w| copy::write_archive(&host, &src, &plan.top, w).map(drop),
                |r| copy::extract(&tree, &plan.dir, r, owner),
            )
        }
        Endpoint::Container { .. } => bail!("copying between containers is not supported"),
    }
}

/// Runs `produce` (writing a tar stream) in a thread and `consume` (reading it) here,
/// joined by a pipe. The error reported is the one that came first: a reader that failed
/// makes the writer see a broken pipe, a writer that failed ends the stream early.
fn pipeline<P, C>(produce: P, consume: C) -> anyhow::Result<()>
where
    P: FnOnce(File) -> Result<(), CopyError> + Send,
    C: FnOnce(File) -> Result<(), CopyError>,
{
    let (r, w) =
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).context("cannot create a pipe")?;
    std::thread::scope(|s| {
        let writer = std::thread::Builder::new()
            .name("cp-tar".into())
            .stack_size(WRITER_STACK)
            .spawn_scoped(s, move || produce(File::from(w)))
            .context("cannot start the archive writer")?;
        let consumed = consume(File::from(r));
        let produced = writer
            .join()
            .map_err(|_| anyhow!("the archive writer panicked"))?;
        match (produced, consumed) {
            (Err(p), _) if !p.is_broken_pipe() => Err(p.into()),
            (_, Err(c)) => Err(c.into()),
            (Err(p), Ok(())) => Err(p.into()),
            (Ok(()), Ok(())) => Ok(()),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn container(key: &str, path: &str) -> Endpoint {
        Endpoint::Container {
            key: key.into(),
            path: path.into(),
        }
    }

    #[test]
    fn endpoints_split_like_docker() {
        assert_eq!(Endpoint::parse("-"), Endpoint::Stream);
        assert_eq!(Endpoint::parse("web:/etc/x"), container("web", "/etc/x"));
        assert_eq!(Endpoint::parse("web:etc/x"), container("web", "etc/x"));
        assert_eq!(Endpoint::parse("web:"), container("web", ""));
        assert_eq!(
            Endpoint::parse("/tmp/a:b"),
            Endpoint::Host("/tmp/a:b".into())
        );
        assert_eq!(Endpoint::parse("./a:b"), Endpoint::Host("./a:b".into()));
        assert_eq!(Endpoint::parse("file"), Endpoint::Host("file".into()));
        assert_eq!(Endpoint::parse(":x"), Endpoint::Host(":x".into()));
        assert_eq!(Endpoint::parse("web:a:b"), container("web", "a:b"));
    }
}
