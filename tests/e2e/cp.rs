//! `slate cp` (issue 15): both directions for files and trees, docker's path rules (`dir/.`,
//! a directory onto a directory, `-` tar streams), `-a` and `-L`, the errors for a stopped
//! container and a missing source; and the attacks a container can mount on a copy: symlinks
//! pointing out of its root (absolute, `../../..`, through `/proc/self/root` and
//! `/proc/1/root`, a symlinked parent directory), planted by the image or by a process in the
//! container, raced while copies run, and hostile tar streams fed to `cp -`.
//!
//! Each test has its own store and state dir ([`Detached`]) and a host directory `host/` in
//! its temp dir holding a marker file whose content must never come out of a container.
//! Containers get that directory's path in `$HOST` and plant their links towards it, and
//! also create the same path inside their own root with decoys: a copy that resolves inside
//! the container then succeeds with the decoy, which shows that the link was followed in the
//! container and not on the host.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::detached::Detached;
use crate::harness::fixture::{busybox, Compression, ImageSpec, LayerSpec};
use crate::harness::registry::Registry;
use crate::harness::run_image::host_platform;
use crate::harness::slate::Output;
use crate::harness::slate_cmd;
use crate::harness::tar_writer::{write_tar, Entry};

/// The busybox applets the image links in `/bin`.
const APPLETS: &[&str] = &[
    "sh", "cat", "echo", "ln", "ls", "mkdir", "rm", "sleep", "stat", "test", "touch", "chown",
    "chmod", "readlink", "true", "mv",
];

/// What the host's marker holds: it must never come out of a container.
const SECRET: &str = "HOST-SECRET-never-leaves";
/// What the container's decoy at the same path holds.
const DECOY: &str = "container-decoy";

/// Image-level links out (a hostile image), with fixed targets.
const IMAGE_LINKS: &[(&str, &str)] = &[
    ("escape-root", "/"),
    ("escape-up", "../../../../../../../.."),
    ("escape-proc", "/proc/self/root"),
    ("escape-proc1", "/proc/1/root"),
];

/// The container's app: plants links towards `$HOST` (the test's host dir), creates the same
/// path in its own root with decoys, then sleeps. `/ready` says it is done.
const PLANT: &str = r#"
set -e
mkdir -p /out /in /srv/existing /race "$HOST/dir-in"
echo container-decoy > "$HOST/marker"
ln -s "$HOST/marker" /out/abs
ln -s "$HOST" /out/dir
ln -s "../../../../../../../..$HOST/marker" /out/rel
ln -s "/proc/self/root$HOST/marker" /out/proc
ln -s "/proc/1/root$HOST/marker" /out/proc1
ln -s "$HOST/target-file" /in/abs
ln -s "$HOST/dir-in" /in/dir
ln -s "../../../../../../../..$HOST/dir-in" /in/rel
ln -s "/proc/self/root$HOST/dir-in" /in/proc
ln -s "/proc/1/root$HOST/dir-in" /in/proc1
echo data > /srv/data.txt
ln -s data.txt /srv/link
mkdir -p /srv/owned && echo x > /srv/owned/f && chown -R 1000:1000 /srv/owned
touch /ready
exec sleep 100000
"#;

fn image() -> &'static str {
    static REF: OnceLock<String> = OnceLock::new();
    REF.get_or_init(|| {
        let mut e = Vec::new();
        for d in ["bin", "dev", "etc", "proc", "sys", "srv"] {
            e.push(Entry::dir(d));
        }
        e.push(Entry::dir("tmp").mode(0o1777));
        e.push(Entry::file("bin/busybox", busybox()).mode(0o755));
        for a in APPLETS {
            e.push(Entry::symlink(format!("bin/{a}"), "busybox"));
        }
        for (name, target) in IMAGE_LINKS {
            e.push(Entry::symlink(*name, *target));
        }
        e.push(Entry::file(
            "etc/passwd",
            "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000::/home/app:/bin/sh\n",
        ));
        e.push(Entry::file("etc/group", "root:x:0:\napp:x:1000:\n"));
        let mut spec =
            ImageSpec::new(vec![LayerSpec::new(Compression::Gzip, e)]).platform(host_platform());
        spec.runtime_config = json!({
            "Env": ["PATH=/usr/sbin:/usr/bin:/sbin:/bin"],
            "Cmd": ["/bin/sh"],
        });
        Registry::shared().push_image("cp/busybox", "v1", &spec.build())
    })
}

/// A running container `box` that planted its links, and the host dir it aimed them at.
struct Env {
    d: Detached,
    host: PathBuf,
}

impl Env {
    fn new(label: &str) -> Env {
        Env::with_flags(label, |_| Vec::new())
    }

    /// [`Env::new`] with more `run` flags, made from the test's temp dir.
    fn with_flags(label: &str, flags: impl FnOnce(&Path) -> Vec<String>) -> Env {
        let d = Detached::with_image(&format!("cp-{label}"), image());
        d.slate.pull(&d.image, None);
        let host = d.slate.dir().subdir("host");
        std::fs::write(host.join("marker"), SECRET).expect("writing the marker");
        std::fs::create_dir_all(host.join("dir-in")).expect("mkdir dir-in");
        let env = format!("HOST={}", host.display());
        let extra = flags(d.slate.dir().path());
        let mut all = vec!["--name", "box", "-e", &env];
        all.extend(extra.iter().map(String::as_str));
        d.run_d(&all, &["sh", "-c", PLANT]);
        let deadline = Instant::now() + Duration::from_secs(20);
        while !d
            .slate(&["exec", "box", "test", "-e", "/ready"])
            .status
            .success()
        {
            assert!(Instant::now() < deadline, "the container never got ready");
            std::thread::sleep(Duration::from_millis(100));
        }
        Env { d, host }
    }

    fn cp(&self, args: &[&str]) -> Output {
        let mut all = vec!["cp"];
        all.extend_from_slice(args);
        self.d.slate(&all)
    }

    /// `slate cp ARGS` with binary stdin and stdout.
    fn cp_raw(&self, args: &[&str], stdin: &[u8]) -> (bool, Vec<u8>, String) {
        let sd = self.d.state.display().to_string();
        let mut all = vec!["--state-dir", sd.as_str(), "cp"];
        all.extend_from_slice(args);
        let (mut cmd, _) = slate_cmd::command(&self.d.slate, &all, "warn");
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("starting slate cp");
        let mut pipe = child.stdin.take().expect("stdin");
        let input = stdin.to_vec();
        // A writer thread: slate may stop reading early (a refused entry), and must not
        // deadlock the test on a full pipe.
        let writer = std::thread::spawn(move || {
            let _ = pipe.write_all(&input);
        });
        let out = child.wait_with_output().expect("waiting for slate cp");
        let _ = writer.join();
        (
            out.status.success(),
            out.stdout,
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// A command's stdout in the container, which must succeed.
    fn exec(&self, cmd: &[&str]) -> String {
        let mut all = vec!["exec", "box"];
        all.extend_from_slice(cmd);
        self.d.slate(&all).success().stdout
    }

    fn host_path(&self, rel: &str) -> PathBuf {
        self.host.join(rel)
    }

    /// The host dir's path as the container's links name it (without the leading `/`).
    fn host_rel(&self) -> String {
        self.host
            .display()
            .to_string()
            .trim_start_matches('/')
            .to_string()
    }
}

/// Every regular file below `dir` (not following symlinks), with its content.
fn regular_files(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(p) = stack.pop() {
        let Ok(meta) = std::fs::symlink_metadata(&p) else {
            continue;
        };
        if meta.is_dir() {
            for e in std::fs::read_dir(&p).expect("listing").flatten() {
                stack.push(e.path());
            }
        } else if meta.is_file() {
            out.insert(p.clone(), std::fs::read(&p).expect("reading"));
        }
    }
    out
}

/// The names and contents of a tar stream's regular files (and the names of all entries).
fn tar_contents(bytes: &[u8]) -> (Vec<String>, BTreeMap<String, Vec<u8>>) {
    let mut names = Vec::new();
    let mut files = BTreeMap::new();
    let mut a = tar::Archive::new(bytes);
    for e in a.entries().expect("a tar stream") {
        let mut e = e.expect("a tar entry");
        let name = String::from_utf8_lossy(&e.path_bytes()).into_owned();
        if e.header().entry_type().is_file() {
            let mut data = Vec::new();
            e.read_to_end(&mut data).expect("reading an entry");
            files.insert(name.clone(), data);
        }
        names.push(name);
    }
    (names, files)
}

fn assert_no_secret_in(dir: &Path, what: &str) {
    for (p, data) in regular_files(dir) {
        assert!(
            !String::from_utf8_lossy(&data).contains(SECRET),
            "{what}: {} holds the host's secret",
            p.display()
        );
    }
}

fn mode(p: &Path) -> u32 {
    std::fs::symlink_metadata(p).expect("stat").mode() & 0o7777
}

#[test]
fn a_file_both_ways_with_modes_and_names() {
    let env = Env::new("file");
    let f = env.host_path("hello.txt");
    std::fs::write(&f, "hello\n").expect("write");
    std::fs::set_permissions(&f, PermissionsExt::from_mode(0o640)).expect("chmod");
    let fs = f.display().to_string();

    // Into an existing directory, under its own name; then to a new name; then over a file.
    env.cp(&[&fs, "box:/tmp"]).success();
    assert_eq!(env.exec(&["cat", "/tmp/hello.txt"]), "hello\n");
    assert_eq!(
        env.exec(&["stat", "-c", "%a %u:%g", "/tmp/hello.txt"])
            .trim(),
        "640 0:0"
    );
    env.cp(&[&fs, "box:tmp/renamed"]).success();
    assert_eq!(env.exec(&["cat", "/tmp/renamed"]), "hello\n");
    env.cp(&[&fs, "box:/srv/data.txt"]).success();
    assert_eq!(env.exec(&["cat", "/srv/data.txt"]), "hello\n");

    // Out: into a host directory, to a new name, over a host file.
    let out = env.d.slate.dir().subdir("out");
    env.cp(&["box:/tmp/hello.txt", &out.display().to_string()])
        .success();
    assert_eq!(
        std::fs::read_to_string(out.join("hello.txt")).expect("read"),
        "hello\n"
    );
    assert_eq!(mode(&out.join("hello.txt")), 0o640);
    let renamed = out.join("again.txt");
    env.cp(&["box:/tmp/renamed", &renamed.display().to_string()])
        .success();
    assert_eq!(std::fs::read_to_string(&renamed).expect("read"), "hello\n");
    std::fs::write(&renamed, "old").expect("write");
    env.cp(&["box:/srv/data.txt", &renamed.display().to_string()])
        .success();
    assert_eq!(std::fs::read_to_string(&renamed).expect("read"), "hello\n");

    // A file into a directory that is not there: docker's error, nothing created.
    let missing = format!("{}/nodir/", out.display());
    let o = env.cp(&["box:/tmp/hello.txt", &missing]).failure(1);
    o.error_mentions(&["nodir", "does not exist"]);
    assert!(!out.join("nodir").exists());
}

#[test]
fn a_tree_both_ways_with_symlinks_modes_and_dot_semantics() {
    let env = Env::new("tree");
    let tree = env.host_path("tree");
    std::fs::create_dir_all(tree.join("sub/empty")).expect("mkdir");
    std::fs::write(tree.join("top.txt"), "top\n").expect("write");
    std::fs::write(tree.join("sub/run.sh"), "#!/bin/sh\n").expect("write");
    std::fs::set_permissions(tree.join("sub/run.sh"), PermissionsExt::from_mode(0o755))
        .expect("chmod");
    std::fs::set_permissions(tree.join("sub"), PermissionsExt::from_mode(0o750)).expect("chmod");
    std::os::unix::fs::symlink("../top.txt", tree.join("sub/link")).expect("symlink");
    let ts = tree.display().to_string();

    // A directory onto an existing directory goes inside it.
    env.cp(&[&ts, "box:/srv/existing"]).success();
    let listing = env.exec(&[
        "stat",
        "-c",
        "%n %a",
        "/srv/existing/tree/sub",
        "/srv/existing/tree/sub/run.sh",
    ]);
    assert!(listing.contains("/srv/existing/tree/sub 750"), "{listing}");
    assert!(
        listing.contains("/srv/existing/tree/sub/run.sh 755"),
        "{listing}"
    );
    assert_eq!(
        env.exec(&["readlink", "/srv/existing/tree/sub/link"])
            .trim(),
        "../top.txt"
    );
    assert_eq!(env.exec(&["cat", "/srv/existing/tree/sub/link"]), "top\n");
    assert!(env
        .d
        .slate(&["exec", "box", "test", "-d", "/srv/existing/tree/sub/empty"])
        .status
        .success());

    // `dir/.` copies the contents: no `tree` level.
    env.cp(&[&format!("{ts}/."), "box:/srv/existing"]).success();
    assert_eq!(env.exec(&["cat", "/srv/existing/top.txt"]), "top\n");
    // To a missing path: created with the source's contents.
    env.cp(&[&ts, "box:/srv/fresh"]).success();
    assert_eq!(env.exec(&["cat", "/srv/fresh/sub/link"]), "top\n");

    // Out again: to a missing host path (created), then onto it (inside), then `/.` (merged).
    let back = env.d.slate.dir().path().join("back");
    let bs = back.display().to_string();
    env.cp(&["box:/srv/existing/tree", &bs]).success();
    assert_eq!(
        std::fs::read_to_string(back.join("top.txt")).expect("read"),
        "top\n"
    );
    assert_eq!(mode(&back.join("sub")), 0o750);
    assert_eq!(mode(&back.join("sub/run.sh")), 0o755);
    assert_eq!(
        std::fs::read_link(back.join("sub/link")).expect("readlink"),
        Path::new("../top.txt")
    );
    assert!(back.join("sub/empty").is_dir());
    env.cp(&["box:/srv/existing/tree", &bs]).success();
    assert!(
        back.join("tree/sub/run.sh").is_file(),
        "onto a directory: inside it"
    );
    env.cp(&["box:/srv/fresh/.", &bs]).success();
    assert!(
        !back.join("fresh").exists(),
        "`/.` copies the contents only"
    );

    // A directory onto a file is refused.
    let o = env
        .cp(&["box:/srv/existing", &format!("{bs}/top.txt")])
        .failure(1);
    o.error_mentions(&["cannot copy a directory onto the file"]);
}

#[test]
fn tar_streams_both_ways() {
    let env = Env::new("stream");
    let (ok, out, err) = env.cp_raw(&["box:/srv", "-"], b"");
    assert!(ok, "{err}");
    let (names, files) = tar_contents(&out);
    assert!(names.contains(&"srv/".to_string()), "{names:?}");
    assert_eq!(
        files.get("srv/data.txt").map(Vec::as_slice),
        Some(&b"data\n"[..])
    );
    assert!(names.contains(&"srv/link".to_string()), "{names:?}");

    let (ok, out, err) = env.cp_raw(&["box:/srv/.", "-"], b"");
    assert!(ok, "{err}");
    let (_, files) = tar_contents(&out);
    assert!(files.contains_key("data.txt"), "{files:?}");

    let input = write_tar(&[
        Entry::dir("in"),
        Entry::file("in/a.txt", "from a stream\n").mode(0o600),
        Entry::symlink("in/l", "a.txt"),
    ]);
    let (ok, _, err) = env.cp_raw(&["-", "box:/srv/existing"], &input);
    assert!(ok, "{err}");
    assert_eq!(env.exec(&["cat", "/srv/existing/in/l"]), "from a stream\n");
    assert_eq!(
        env.exec(&["stat", "-c", "%a", "/srv/existing/in/a.txt"])
            .trim(),
        "600"
    );

    let (ok, _, err) = env.cp_raw(&["-", "box:/srv/data.txt"], &input);
    assert!(!ok);
    assert!(err.contains("must be a directory"), "{err}");
}

#[test]
fn archive_mode_keeps_owners_otherwise_root_and_the_invoker() {
    let env = Env::new("owners");
    let f = env.host_path("owned.txt");
    std::fs::write(&f, "x").expect("write");
    std::os::unix::fs::chown(&f, Some(1234), Some(5678)).expect("chown");
    let fs = f.display().to_string();

    env.cp(&[&fs, "box:/tmp/plain"]).success();
    assert_eq!(
        env.exec(&["stat", "-c", "%u:%g", "/tmp/plain"]).trim(),
        "0:0"
    );
    env.cp(&["-a", &fs, "box:/tmp/kept"]).success();
    assert_eq!(
        env.exec(&["stat", "-c", "%u:%g", "/tmp/kept"]).trim(),
        "1234:5678"
    );

    let out = env.d.slate.dir().path().join("owned-out");
    env.cp(&["box:/srv/owned", &out.display().to_string()])
        .success();
    let m = std::fs::metadata(out.join("f")).expect("stat");
    assert_eq!((m.uid(), m.gid()), (0, 0), "owned by the invoker (root)");
    let kept = env.d.slate.dir().path().join("owned-kept");
    env.cp(&["-a", "box:/srv/owned", &kept.display().to_string()])
        .success();
    let m = std::fs::metadata(kept.join("f")).expect("stat");
    assert_eq!((m.uid(), m.gid()), (1000, 1000));
}

#[test]
fn follow_link_copies_the_target() {
    let env = Env::new("follow");
    let out = env.d.slate.dir().subdir("out");
    env.cp(&["box:/srv/link", &out.join("as-link").display().to_string()])
        .success();
    assert_eq!(
        std::fs::read_link(out.join("as-link")).expect("a symlink"),
        Path::new("data.txt")
    );
    env.cp(&[
        "-L",
        "box:/srv/link",
        &out.join("as-file").display().to_string(),
    ])
    .success();
    assert_eq!(
        std::fs::read_to_string(out.join("as-file")).expect("read"),
        "data\n"
    );
}

#[test]
fn a_stopped_container_and_a_missing_source_are_one_clear_line() {
    let env = Env::new("errors");
    let out = env.d.slate.dir().subdir("out").display().to_string();

    let o = env.cp(&["box:/nope", &out]).failure(1);
    o.error_mentions(&["could not find the file /nope in container box"]);
    let o = env
        .cp(&[&env.host_path("nope").display().to_string(), "box:/tmp"])
        .failure(1);
    o.error_mentions(&["could not find the file", "nope", "on the host"]);
    env.cp(&["box:/a", "box:/b"])
        .failure(1)
        .error_mentions(&["between containers"]);
    env.cp(&["/a", "/b"])
        .failure(1)
        .error_mentions(&["at least one container"]);

    env.d.run_d(&["--name", "gone"], &["true"]);
    env.d.slate(&["wait", "gone"]).success();
    for args in [
        vec!["gone:/etc/passwd", out.as_str()],
        vec![out.as_str(), "gone:/tmp"],
    ] {
        let o = env.cp(&args).failure(1);
        o.error_mentions(&["container gone is not running"]);
        o.assert_each_cause_once();
        assert_eq!(o.stderr.trim().lines().count(), 1, "one line: {}", o.stderr);
    }
}

/// What a copy out through a planted link must give.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Out {
    /// The link itself, as a link.
    Link,
    /// The container's decoy: the link was followed inside the container.
    Decoy,
    /// An error (a magic link refused, or nothing at that path inside the container).
    Fails,
}

/// Container paths that lead (or try to lead) to the host's marker, and what a copy gives
/// without and with `-L`.
fn paths_to_the_marker(env: &Env) -> Vec<(String, Out, Out)> {
    use Out::*;
    let rel = env.host_rel();
    vec![
        ("/out/abs".into(), Link, Decoy),
        ("/out/dir/marker".into(), Decoy, Decoy),
        ("/out/rel".into(), Link, Decoy),
        // Our process is not in the container's PID namespace: its /proc has no `self`.
        ("/out/proc".into(), Link, Fails),
        ("/out/proc1".into(), Link, Fails),
        (format!("/escape-root/{rel}/marker"), Decoy, Decoy),
        (format!("/escape-up/{rel}/marker"), Decoy, Decoy),
        (format!("/escape-proc/{rel}/marker"), Fails, Fails),
        (format!("/escape-proc1/{rel}/marker"), Fails, Fails),
        (format!("/proc/1/root/{rel}/marker"), Fails, Fails),
        (format!("/proc/self/root/{rel}/marker"), Fails, Fails),
    ]
}

#[test]
fn copy_out_never_reads_host_files_through_container_symlinks() {
    let env = Env::new("attack-out");
    let dest = env.d.slate.dir().subdir("dest");
    for (i, (p, plain, follow)) in paths_to_the_marker(&env).into_iter().enumerate() {
        let src = format!("box:{p}");
        for (flag, want) in [(None, plain), (Some("-L"), follow)] {
            let mut args: Vec<&str> = flag.into_iter().collect();
            // As a tar stream.
            let mut a = args.clone();
            a.extend([src.as_str(), "-"]);
            let (ok, out, err) = env.cp_raw(&a, b"");
            assert!(
                !String::from_utf8_lossy(&out).contains(SECRET),
                "cp {a:?} streamed the host's secret"
            );
            assert_eq!(ok, want != Out::Fails, "cp {a:?}: {err}");
            // Onto the host.
            let to = dest.join(format!("{i}-{}", flag.is_some()));
            let ts = to.display().to_string();
            args.extend([src.as_str(), ts.as_str()]);
            let o = env.cp(&args);
            let got = if !o.status.success() {
                assert!(
                    !to.exists() && !to.is_symlink(),
                    "cp {args:?} failed but left {to:?}"
                );
                Out::Fails
            } else if to.is_symlink() {
                Out::Link
            } else {
                let data = std::fs::read_to_string(&to).expect("read");
                assert_eq!(data, format!("{DECOY}\n"), "cp {args:?}");
                Out::Decoy
            };
            assert_eq!(got, want, "cp {args:?}: {}", o.stderr);
            if got == Out::Fails && !o.stderr.contains("could not find the file") {
                o.error_mentions(&["refused"]);
            }
        }
    }
    // Whole directories of links: they come out as links, never as what they point at.
    env.cp(&["box:/out", &dest.join("out-dir").display().to_string()])
        .success();
    assert!(dest.join("out-dir/abs").is_symlink());
    let (ok, out, err) = env.cp_raw(&["box:/out", "-"], b"");
    assert!(ok, "{err}");
    assert!(!String::from_utf8_lossy(&out).contains(SECRET));
    assert_no_secret_in(&dest, "copies out");
    assert_eq!(
        std::fs::read_to_string(env.host_path("marker")).expect("read"),
        SECRET
    );
}

#[test]
fn copy_in_never_writes_host_files_through_container_symlinks() {
    let env = Env::new("attack-in");
    let payload = env.d.slate.dir().path().join("payload");
    std::fs::write(&payload, "payload\n").expect("write");
    let pdir = env.d.slate.dir().subdir("pdir");
    std::fs::write(pdir.join("inner"), "inner\n").expect("write");
    let ps = payload.display().to_string();
    let pds = pdir.display().to_string();
    let stream = write_tar(&[Entry::file("streamed", "s\n")]);
    let rel = env.host_rel();
    let mut targets: Vec<String> = ["/in/abs", "/in/dir", "/in/rel", "/in/proc", "/in/proc1"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    for (name, _) in IMAGE_LINKS {
        targets.push(format!("/{name}/{rel}/dir-in"));
    }
    for t in &targets {
        for dst in [
            format!("box:{t}"),
            format!("box:{t}/"),
            format!("box:{t}/new"),
        ] {
            let _ = env.cp(&[&ps, &dst]);
            let _ = env.cp(&[&pds, &dst]);
            let _ = env.cp_raw(&["-", &dst], &stream);
        }
    }
    assert!(
        !env.host_path("target-file").exists(),
        "created a host file"
    );
    let left: Vec<_> = std::fs::read_dir(env.host_path("dir-in"))
        .expect("listing")
        .flatten()
        .map(|e| e.path())
        .collect();
    assert!(left.is_empty(), "wrote into the host's dir: {left:?}");
    assert_eq!(
        std::fs::read_to_string(env.host_path("marker")).expect("read"),
        SECRET
    );
    // The copies through links that stay inside went to the container's own path.
    let inside = env.exec(&["ls", &format!("{}/dir-in", env.host.display())]);
    assert!(
        inside.contains("payload") || inside.contains("pdir"),
        "{inside}"
    );
}

#[test]
fn hostile_tar_streams_stay_below_the_destination() {
    let env = Env::new("attack-tar");
    let host = env.host.display().to_string();
    let hrel = env.host_rel();
    let passwd = env.exec(&["cat", "/etc/passwd"]);
    let streams: Vec<(&str, Vec<Entry>)> = vec![
        (
            "dotdot",
            vec![Entry::file(
                format!("../../../../../../../..{host}/escaped"),
                "x",
            )],
        ),
        ("dotdot-inner", vec![Entry::file("a/../../etc/passwd", "x")]),
        (
            "abs-link-then-write",
            vec![
                Entry::symlink("l", host.as_str()),
                Entry::file("l/pwned", "x"),
            ],
        ),
        (
            "rel-link-then-write",
            vec![
                Entry::symlink("l", format!("../../../../../../../..{host}")),
                Entry::file("l/pwned", "x"),
            ],
        ),
        (
            "proc-link-then-write",
            vec![
                Entry::symlink("l", format!("/proc/self/root{host}")),
                Entry::file("l/pwned", "x"),
            ],
        ),
        (
            "etc-link-then-write",
            vec![
                Entry::symlink("e", "/etc"),
                Entry::file("e/passwd", "pwned\n"),
            ],
        ),
        (
            "hardlink-out",
            vec![Entry::hardlink("h", "../../etc/passwd")],
        ),
        (
            "hardlink-through-link",
            vec![
                Entry::symlink("e", "/etc"),
                Entry::hardlink("h", "e/passwd"),
            ],
        ),
    ];
    for (what, entries) in streams {
        let (ok, _, err) = env.cp_raw(&["-", "box:/srv/existing"], &write_tar(&entries));
        assert!(!ok, "{what}: accepted");
        assert!(err.contains("slate: "), "{what}: {err}");
        assert!(!env.host_path("escaped").exists() && !env.host_path("pwned").exists());
    }
    // An absolute name is taken below the destination, as docker does.
    let abs = write_tar(&[Entry::file(format!("{host}/abs"), "abs\n")]);
    let (ok, _, err) = env.cp_raw(&["-", "box:/srv/existing"], &abs);
    assert!(ok, "{err}");
    assert_eq!(
        env.exec(&["cat", &format!("/srv/existing/{hrel}/abs")]),
        "abs\n"
    );
    assert!(!env.host_path("abs").exists());

    assert_eq!(
        env.exec(&["cat", "/etc/passwd"]),
        passwd,
        "wrote outside the destination"
    );
    assert!(regular_files(&env.host).len() == 1, "the host dir changed");
    assert_eq!(
        std::fs::read_to_string(env.host_path("marker")).expect("read"),
        SECRET
    );
}

#[test]
fn a_racing_container_cannot_redirect_copies_to_the_host() {
    let env = Env::new("race");
    let host = env.host.display().to_string();
    // Swap /race/d between a directory and a link to the host's dir, and /race/f between a
    // file and a link to the host's marker, as fast as the shell can.
    let swap = format!(
        "while true; do rm -rf /race/d /race/f; mkdir /race/d; echo in > /race/f; \
         rm -rf /race/d /race/f; ln -s {host}/dir-in /race/d; ln -s {host}/marker /race/f; done"
    );
    let mut swapper = {
        let sd = env.d.state.display().to_string();
        let (mut cmd, _) = slate_cmd::command(
            &env.d.slate,
            &["--state-dir", &sd, "exec", "box", "sh", "-c", &swap],
            "warn",
        );
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        cmd.spawn().expect("starting the swapper")
    };
    let payload = env.d.slate.dir().path().join("payload");
    std::fs::write(&payload, "payload\n").expect("write");
    let ps = payload.display().to_string();
    let stream = write_tar(&[Entry::file("streamed", "s\n")]);
    for _ in 0..25 {
        let _ = env.cp(&[&ps, "box:/race/d/"]);
        let _ = env.cp_raw(&["-", "box:/race/d"], &stream);
        for args in [["box:/race/f", "-"], ["-L", "box:/race/f"]] {
            let mut a = args.to_vec();
            if a[0] == "-L" {
                a.push("-");
            }
            let (_, out, _) = env.cp_raw(&a, b"");
            assert!(
                !String::from_utf8_lossy(&out).contains(SECRET),
                "cp {a:?} leaked"
            );
        }
    }
    assert!(
        matches!(swapper.try_wait(), Ok(None)),
        "the swapper stopped: the copies did not race it"
    );
    let _ = swapper.kill();
    let _ = swapper.wait();
    let left: Vec<_> = std::fs::read_dir(env.host_path("dir-in"))
        .expect("listing")
        .flatten()
        .map(|e| e.path())
        .collect();
    assert!(left.is_empty(), "a raced copy wrote on the host: {left:?}");
    assert_eq!(
        std::fs::read_to_string(env.host_path("marker")).expect("read"),
        SECRET
    );
}

#[test]
fn copies_reach_volumes_tmpfs_and_single_file_mounts() {
    let env = Env::with_flags("mounts", |dir| {
        let vol = dir.join("vol");
        std::fs::create_dir_all(&vol).expect("mkdir");
        std::fs::write(dir.join("one.conf"), "old\n").expect("write");
        vec![
            "-v".into(),
            format!("{}:/vol", vol.display()),
            "-v".into(),
            format!("{}:/etc/one.conf", dir.join("one.conf").display()),
            "--tmpfs".into(),
            "/scratch".into(),
        ]
    });
    let dir = env.d.slate.dir().path().to_path_buf();
    let f = dir.join("new.conf");
    std::fs::write(&f, "new\n").expect("write");
    let fs = f.display().to_string();
    env.cp(&[&fs, "box:/vol/"]).success();
    assert_eq!(
        std::fs::read_to_string(dir.join("vol/new.conf")).expect("read"),
        "new\n"
    );
    env.cp(&[&fs, "box:/scratch"]).success();
    assert_eq!(env.exec(&["cat", "/scratch/new.conf"]), "new\n");
    // A file bind-mounted on its own cannot be replaced; it is written in place.
    env.cp(&[&fs, "box:/etc/one.conf"]).success();
    assert_eq!(
        std::fs::read_to_string(dir.join("one.conf")).expect("read"),
        "new\n"
    );
    assert_eq!(env.exec(&["cat", "/etc/one.conf"]), "new\n");
    let out = dir.join("from-vol");
    env.cp(&["box:/vol/new.conf", &out.display().to_string()])
        .success();
    assert_eq!(std::fs::read_to_string(&out).expect("read"), "new\n");
}
