//! Running the real `slate` binary against a store of the test's own.
//!
//! [`TestDir`] is a temp dir that, on Drop (panics included), first lazily unmounts everything
//! mounted below it (deepest first, found in `/proc/self/mountinfo`) and then removes it, so a
//! failing test leaves neither mounts nor files behind. [`Slate`] owns one and runs the binary
//! with `--root <dir>/root --config <dir>/config.toml`: never the host's `/var/lib/slate` or
//! `/etc/slate`.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus};
use std::sync::atomic::{AtomicUsize, Ordering};

use serde_json::Value;

/// The binary under test, built by cargo for this test target.
pub const SLATE_BIN: &str = env!("CARGO_BIN_EXE_slate");

/// A temp dir that unmounts what is mounted below it and removes itself on Drop.
pub struct TestDir {
    path: PathBuf,
}

impl TestDir {
    pub fn new(label: &str) -> TestDir {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let path =
            std::env::temp_dir().join(format!("slate-e2e-{label}-{}-{n}", std::process::id()));
        if path.exists() {
            unmount_below(&path);
            fs::remove_dir_all(&path)
                .unwrap_or_else(|e| panic!("removing stale {}: {e}", path.display()));
        }
        fs::create_dir_all(&path).unwrap_or_else(|e| panic!("creating {}: {e}", path.display()));
        TestDir { path }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Creates (if needed) and returns a subdirectory.
    pub fn subdir(&self, name: &str) -> PathBuf {
        let p = self.path.join(name);
        fs::create_dir_all(&p).unwrap_or_else(|e| panic!("creating {}: {e}", p.display()));
        p
    }
}

impl Drop for TestDir {
    fn drop(&mut self) {
        unmount_below(&self.path);
        if let Err(e) = fs::remove_dir_all(&self.path) {
            if e.kind() != io::ErrorKind::NotFound {
                eprintln!("warning: removing {}: {e}", self.path.display());
            }
        }
    }
}

/// Decodes the octal escapes (`\040` etc.) of a mountinfo path field.
fn unescape_mountinfo(s: &str) -> PathBuf {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 4 <= b.len() {
            let octal = std::str::from_utf8(&b[i + 1..i + 4]).ok();
            if let Some(v) = octal.and_then(|o| u8::from_str_radix(o, 8).ok()) {
                out.push(v);
                i += 4;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    use std::os::unix::ffi::OsStringExt;
    PathBuf::from(std::ffi::OsString::from_vec(out))
}

/// Mount points at or below `dir`, per `/proc/self/mountinfo`.
pub fn mounts_below(dir: &Path) -> Vec<PathBuf> {
    let info = fs::read("/proc/self/mountinfo").unwrap_or_default();
    let info = String::from_utf8_lossy(&info);
    info.lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(unescape_mountinfo)
        .filter(|m| m.starts_with(dir))
        .collect()
}

/// Whether `dir` itself is a mount point.
pub fn is_mount_point(dir: &Path) -> bool {
    mounts_below(dir).iter().any(|m| m == dir)
}

/// Lazily unmounts everything mounted at or below `dir`, deepest first.
pub fn unmount_below(dir: &Path) {
    // A mount point can be stacked; repeat until nothing is left (bounded, in case one refuses).
    for _ in 0..16 {
        let mut mounts = mounts_below(dir);
        if mounts.is_empty() {
            return;
        }
        mounts.sort_by_key(|m| std::cmp::Reverse(m.components().count()));
        for m in mounts {
            let status = Command::new("umount").arg("-l").arg(&m).status();
            if !matches!(status, Ok(s) if s.success()) {
                eprintln!("warning: umount -l {} failed: {status:?}", m.display());
            }
        }
    }
}

/// What a run of the binary produced.
#[derive(Debug)]
pub struct Output {
    pub args: Vec<String>,
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl Output {
    fn describe(&self) -> String {
        format!(
            "slate {}\n  exit: {}\n  stdout:\n{}\n  stderr:\n{}",
            self.args.join(" "),
            self.status,
            indent(&self.stdout),
            indent(&self.stderr)
        )
    }

    /// Panics with the whole output unless the run succeeded.
    pub fn success(self) -> Output {
        assert!(
            self.status.success(),
            "expected success: {}",
            self.describe()
        );
        self
    }

    /// Panics with the whole output unless the run failed with `code`.
    pub fn failure(self, code: i32) -> Output {
        assert_eq!(
            self.status.code(),
            Some(code),
            "expected exit {code}: {}",
            self.describe()
        );
        self
    }

    /// The error line: the last non-empty line of stderr, which must be `slate: <what>: <why>`.
    pub fn error_line(&self) -> &str {
        let line = self
            .stderr
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("");
        assert!(
            line.starts_with("slate: "),
            "error line does not start with `slate: `: {}",
            self.describe()
        );
        line
    }

    /// Asserts the error line does not say the same thing twice in a row, as it does when an
    /// error's message embeds its source and the chain is printed with `{:#}` as well.
    pub fn assert_each_cause_once(&self) {
        let line = self.error_line();
        if let Some(rep) = repeated_cause(line) {
            panic!(
                "the error line says the same thing twice in a row ({rep:?}); a cause was \
                 printed both in a message and as its source:\n  {line}"
            );
        }
    }

    /// Asserts the error line mentions each of `needles`.
    pub fn error_mentions(&self, needles: &[&str]) {
        let line = self.error_line();
        for n in needles {
            assert!(
                line.contains(n),
                "error line does not mention {n:?}:\n  {line}\n{}",
                self.describe()
            );
        }
    }

    /// The last non-empty stdout line.
    pub fn last_stdout_line(&self) -> &str {
        self.stdout
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("")
    }

    pub fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {}", self.describe()))
    }
}

/// A run of `: `-separated parts of an error line that is immediately repeated, as happens when
/// an error's Display embeds its source and the chain is then printed with `{:#}` as well.
pub fn repeated_cause(line: &str) -> Option<String> {
    let parts: Vec<&str> = line.split(": ").collect();
    for k in 1..=parts.len() / 2 {
        for i in 0..=parts.len() - 2 * k {
            if parts[i..i + k] == parts[i + k..i + 2 * k] {
                return Some(parts[i..i + k].join(": "));
            }
        }
    }
    None
}

fn indent(s: &str) -> String {
    s.lines()
        .map(|l| format!("    {l}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The slate binary with a store and config of its own.
/// The config line that keeps a test's container records in its own temp dir: every
/// container has one, foreground runs too, and the host's /run/slate is not the test's.
pub fn state_dir_line(test_dir: &Path) -> String {
    format!(
        "state_dir = {:?}\n",
        test_dir.join("state").display().to_string()
    )
}

pub struct Slate {
    dir: TestDir,
    root: PathBuf,
    config: PathBuf,
}

impl Slate {
    pub fn new(label: &str) -> Slate {
        let dir = TestDir::new(label);
        let root = dir.path().join("root");
        let config = dir.path().join("config.toml");
        fs::write(
            &config,
            format!(
                "# slate e2e: defaults, so tests do not depend on the host's /etc/slate\n{}",
                state_dir_line(dir.path())
            ),
        )
        .unwrap_or_else(|e| panic!("writing {}: {e}", config.display()));
        Slate { dir, root, config }
    }

    /// The test's temp dir (the store is `root/` inside it).
    pub fn dir(&self) -> &TestDir {
        &self.dir
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn run(&self, args: &[&str]) -> Output {
        self.run_wrapped(&[], args)
    }

    /// [`Slate::run`] through a wrapper command (`nsenter --net=...`): `wrapper` then the
    /// slate binary and its arguments.
    pub fn run_wrapped(&self, wrapper: &[String], args: &[&str]) -> Output {
        let mut all: Vec<String> = vec![
            "--root".into(),
            self.root.display().to_string(),
            "--config".into(),
            self.config.display().to_string(),
            "--log-level".into(),
            "info".into(),
        ];
        all.extend(args.iter().map(|a| a.to_string()));
        let mut cmd = match wrapper.split_first() {
            Some((prog, rest)) => {
                let mut c = Command::new(prog);
                c.args(rest).arg(SLATE_BIN);
                c
            }
            None => Command::new(SLATE_BIN),
        };
        let out = cmd
            .args(&all)
            .env_remove("RUST_LOG")
            .output()
            .unwrap_or_else(|e| panic!("running {SLATE_BIN}: {e}"));
        Output {
            args: all,
            status: out.status,
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// `slate pull -q`, which must succeed; returns the printed digest.
    pub fn pull(&self, reference: &str, platform: Option<&str>) -> String {
        let mut args = vec!["pull", "-q"];
        if let Some(p) = platform {
            args.extend(["--platform", p]);
        }
        args.push(reference);
        let out = self.run(&args).success();
        let lines: Vec<&str> = out.stdout.lines().filter(|l| !l.is_empty()).collect();
        assert_eq!(
            lines.len(),
            1,
            "pull -q prints exactly the digest: {:?}",
            out.stdout
        );
        lines[0].to_string()
    }

    /// `slate images --format json`, parsed.
    pub fn images(&self) -> Vec<Value> {
        let out = self.run(&["images", "--format", "json"]).success();
        match out.json() {
            Value::Array(a) => a,
            other => panic!("images --format json is not an array: {other}"),
        }
    }

    /// `slate image inspect`, parsed.
    pub fn inspect(&self, reference: &str) -> Value {
        self.run(&["image", "inspect", reference]).success().json()
    }

    /// Mounts `reference` read-only at a new dir in the test's temp dir and returns the dir.
    /// The [`TestDir`] unmounts it at the latest on Drop.
    pub fn mount(&self, reference: &str, name: &str) -> PathBuf {
        let dir = self.dir.subdir(&format!("mnt-{name}"));
        self.run(&["image", "mount", reference, &dir.display().to_string()])
            .success();
        assert!(
            is_mount_point(&dir),
            "slate image mount succeeded but {} is not a mount point",
            dir.display()
        );
        dir
    }

    /// `slate image unmount`, which must succeed and leave `dir` unmounted.
    pub fn unmount(&self, dir: &Path) {
        self.run(&["image", "unmount", &dir.display().to_string()])
            .success();
        assert!(
            !is_mount_point(dir),
            "{} is still a mount point after slate image unmount",
            dir.display()
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeated_causes_are_spotted() {
        assert_eq!(
            repeated_cause("slate: pull x: bad entry \"a\": escapes"),
            None
        );
        assert_eq!(
            repeated_cause("slate: pull x: entry \"a\": escapes: entry \"a\": escapes"),
            Some("entry \"a\": escapes".to_string())
        );
    }

    #[test]
    fn mountinfo_escapes_are_decoded() {
        assert_eq!(
            unescape_mountinfo("/tmp/a\\040b\\134c"),
            PathBuf::from("/tmp/a b\\c")
        );
    }
}
