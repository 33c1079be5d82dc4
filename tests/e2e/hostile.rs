//! Hostile layers: entries that try to create, change or delete something outside their layer
//! directory (by `..`, through a symlink laid down by an earlier entry, by a hardlink to an
//! outside path, by a whiteout naming an outside path).
//!
//! Each must fail the pull with an error naming the entry, write nothing outside the store
//! (a canary dir next to the store stays exactly as it was; no marker file appears anywhere a
//! `..` could reach), leave the store consistent (no hostile layer committed, `tmp/` empty, no
//! image listed), and a good pull into the same store must work afterwards.

use std::fs;

use crate::fixtures;
use crate::harness::fixture::{
    build_layer, busybox, digest_hex, raw_layer, Compression, Flavor, ImageSpec, LayerSpec,
};
use crate::harness::registry::Registry;
use crate::harness::slate::{Slate, TestDir};
use crate::harness::store::{self, Canary};
use crate::harness::tar_writer::{write_tar, Entry};

/// One hostile image: a good base layer, then `entries`, the last of which is the bad one.
struct Case {
    what: &'static str,
    entries: Vec<Entry>,
    /// A file name an escape would create, looked for everywhere a `..` could reach.
    marker: Option<String>,
}

/// Enough `../` to reach `/` from any layer directory a store under /tmp could use.
fn to_root() -> String {
    "../".repeat(48)
}

fn marker(tag: &str) -> String {
    format!("slate-e2e-escaped-{tag}-{}", std::process::id())
}

fn bad_name(c: &Case) -> String {
    let e = c.entries.last().expect("a case has entries");
    String::from_utf8_lossy(&e.path).into_owned()
}

/// Runs the cases one after the other against one store, then a good pull into it.
fn run_cases(label: &str, make: impl FnOnce(&Canary) -> Vec<Case>) {
    let reg = Registry::shared();
    let slate = Slate::new(label);
    let canary = Canary::new(slate.dir());
    let cases = make(&canary);
    let base = vec![Entry::dir("base"), Entry::file("base/ok", "ok\n")];

    for (i, case) in cases.iter().enumerate() {
        let name = format!("hostile/{label}-{i}");
        let img = ImageSpec::new(vec![
            LayerSpec::new(Compression::Gzip, base.clone()),
            LayerSpec::new(Compression::Gzip, case.entries.clone()),
        ])
        .build();
        let reference = reg.push_image(&name, "v1", &img);
        let out = slate.run(&["pull", &reference]);
        // Safety first: whatever the exit status, nothing outside the store may have changed.
        canary.assert_untouched();
        if let Some(m) = &case.marker {
            store::assert_marker_absent(slate.dir().path(), m);
        }
        assert_ne!(
            out.status.code(),
            Some(0),
            "{}: pull of a hostile layer succeeded:\n{}\n{}",
            case.what,
            out.stdout,
            out.stderr
        );
        let out = out.failure(1);
        let entry = bad_name(case);
        let line = out.error_line().to_string();
        eprintln!("{}: {line}", case.what);
        assert!(
            line.contains(&entry),
            "{}: the error does not name the entry {entry:?}:\n  {line}",
            case.what
        );
        let chain = img.chain_ids();
        store::assert_consistent(&slate, &chain[..1], &chain[1..]);
        store::assert_not_listed(&slate, &format!("{}/{name}", reg.host()));
    }

    let good = fixtures::small("good after hostile", "linux/amd64", Compression::Gzip);
    let reference = reg.push_image(&format!("hostile/{label}-good"), "v1", &good.image);
    assert_eq!(slate.pull(&reference, None), good.image.manifest_digest);
    let mnt = slate.mount(&reference, "good");
    assert_eq!(
        fs::read_to_string(mnt.join("marker")).expect("marker of the good image"),
        "good after hostile\n"
    );
    slate.unmount(&mnt);
    canary.assert_untouched();
    let listed = slate.images();
    assert_eq!(listed.len(), 1, "only the good image is listed: {listed:?}");
}

#[test]
fn dotdot_entries_are_refused() {
    run_cases("dotdot", |canary| {
        let m1 = marker("dotdot");
        let m2 = marker("dotdot-mid");
        let m3 = marker("dotdot-deep");
        let m4 = marker("dotdot-pax");
        let m5 = marker("dotdot-gnu");
        vec![
            Case {
                what: "../x",
                entries: vec![Entry::file(format!("../{m1}"), "escaped\n")],
                marker: Some(m1),
            },
            Case {
                what: "dir/../../x",
                entries: vec![
                    Entry::dir("sub"),
                    Entry::file(format!("sub/../../{m2}"), "escaped\n"),
                ],
                marker: Some(m2),
            },
            Case {
                what: "../../..(to /)/canary/x",
                entries: vec![Entry::file(
                    format!("{}{}/{m3}", to_root(), canary.rel_from_root()),
                    "escaped\n",
                )],
                marker: Some(m3),
            },
            Case {
                what: "PAX path ../x behind a harmless header name",
                entries: vec![Entry::file(format!("../{m4}"), "escaped\n").decoy_name("harmless")],
                marker: Some(m4),
            },
            Case {
                what: "GNU long name ../x behind a harmless header name",
                entries: vec![Entry::file(format!("../{m5}"), "escaped\n")
                    .decoy_name("harmless")
                    .gnu_long_names()],
                marker: Some(m5),
            },
            Case {
                what: "../ directory",
                entries: vec![Entry::dir(format!(
                    "{}{}/sub/newdir",
                    to_root(),
                    canary.rel_from_root()
                ))],
                marker: None,
            },
        ]
    });
}

#[test]
fn entries_through_a_symlink_to_root_are_refused() {
    run_cases("symlink-root", |canary| {
        let m1 = marker("via-root");
        let m2 = marker("via-abs");
        vec![
            Case {
                what: "symlink to / then a file through it",
                entries: vec![
                    Entry::symlink("escape", "/"),
                    Entry::file(
                        format!("escape/{}/{m1}", canary.rel_from_root()),
                        "escaped\n",
                    ),
                ],
                marker: Some(m1),
            },
            Case {
                what: "absolute symlink to the canary then a file through it",
                entries: vec![
                    Entry::symlink("escape", canary.dir.display().to_string()),
                    Entry::file(format!("escape/{m2}"), "escaped\n"),
                ],
                marker: Some(m2),
            },
            Case {
                what: "symlink to / then a symlink through it",
                entries: vec![
                    Entry::symlink("escape", "/"),
                    Entry::symlink(
                        format!("escape/{}/victim", canary.rel_from_root()),
                        "/etc/shadow",
                    ),
                ],
                marker: None,
            },
        ]
    });
}

#[test]
fn entries_through_a_relative_symlink_out_are_refused() {
    run_cases("symlink-dotdot", |canary| {
        let m1 = marker("via-up3");
        let m2 = marker("via-deep");
        let m3 = marker("via-chain");
        vec![
            Case {
                what: "symlink to ../../.. then a file through it",
                entries: vec![
                    Entry::symlink("up", "../../.."),
                    Entry::file(format!("up/{m1}"), "escaped\n"),
                ],
                marker: Some(m1),
            },
            Case {
                what: "symlink to ../(to /)/canary then a file through it",
                entries: vec![
                    Entry::symlink("deep", format!("{}{}", to_root(), canary.rel_from_root())),
                    Entry::file(format!("deep/{m2}"), "escaped\n"),
                ],
                marker: Some(m2),
            },
            Case {
                what: "a chain of symlinks leading out",
                entries: vec![
                    Entry::dir("a"),
                    Entry::symlink("a/b", ".."),
                    Entry::symlink("c", "a/b/.."),
                    Entry::file(format!("c/{m3}"), "escaped\n"),
                ],
                marker: Some(m3),
            },
        ]
    });
}

#[test]
fn hardlinks_to_outside_paths_are_refused() {
    run_cases("hardlink", |canary| {
        vec![
            Case {
                what: "hardlink to ../../etc/passwd",
                entries: vec![Entry::hardlink("hostile-hl-passwd", "../../etc/passwd")],
                marker: None,
            },
            Case {
                what: "hardlink to ../(to /)/canary/secret",
                entries: vec![Entry::hardlink(
                    "hostile-hl-canary",
                    format!("{}{}/secret", to_root(), canary.rel_from_root()),
                )],
                marker: None,
            },
            Case {
                what: "hardlink through a symlink to /",
                entries: vec![
                    Entry::symlink("escape", "/"),
                    Entry::hardlink(
                        "hostile-hl-via-symlink",
                        format!("escape/{}/secret", canary.rel_from_root()),
                    ),
                ],
                marker: None,
            },
            Case {
                // Absolute link names are relative to the layer root too: there is no such
                // file in the layer, so this must fail without touching the host's file.
                what: "hardlink to an absolute host path",
                entries: vec![Entry::hardlink(
                    "hostile-hl-abs",
                    format!("{}/secret", canary.dir.display()),
                )],
                marker: None,
            },
        ]
    });
}

#[test]
fn whiteouts_naming_outside_paths_are_refused() {
    run_cases("whiteout", |canary| {
        vec![
            Case {
                what: "../.wh.x",
                entries: vec![Entry::file("../.wh.x", "")],
                marker: None,
            },
            Case {
                what: "whiteout of the canary's victim by ../",
                entries: vec![Entry::file(
                    format!("{}{}/.wh.victim", to_root(), canary.rel_from_root()),
                    "",
                )],
                marker: None,
            },
            Case {
                what: "opaque marker in the canary dir by ../",
                entries: vec![Entry::file(
                    format!("{}{}/.wh..wh..opq", to_root(), canary.rel_from_root()),
                    "",
                )],
                marker: None,
            },
            Case {
                what: "whiteout through a symlink to /",
                entries: vec![
                    Entry::symlink("escape", "/"),
                    Entry::file(format!("escape/{}/.wh.victim", canary.rel_from_root()), ""),
                ],
                marker: None,
            },
        ]
    });
}

/// Replacing a symlink that points outside (by a file, dir, fifo or a hardlink to it, in the
/// same layer) is legal and must act on the symlink, never on what it points to: the pull
/// works, the mount shows the replacements, and the canary is untouched (an `open(O_TRUNC)`,
/// `chmod`, `chown` or `link` that follows the symlink would change it).
#[test]
fn replacing_a_symlink_that_points_outside_does_not_follow_it() {
    let canary_dir = TestDir::new("replace-symlink-canary");
    let canary = Canary::new(&canary_dir);
    let victim = canary.dir.join("victim").display().to_string();
    let secret = canary.dir.join("secret").display().to_string();
    let deep_victim = format!("{}{}/victim", to_root(), canary.rel_from_root());
    let layer = vec![
        Entry::dir("r"),
        Entry::symlink("r/s-file", &victim),
        Entry::file("r/s-file", "replaced\n")
            .mode(0o600)
            .owner(1000, 1000),
        Entry::symlink("r/s-deep", &deep_victim),
        Entry::fifo("r/s-deep").mode(0o600),
        Entry::symlink("r/s-dir", canary.dir.display().to_string()),
        Entry::dir("r/s-dir").mode(0o700).owner(1000, 1000),
        Entry::symlink("r/s-meta", &secret).owner(1000, 1000),
        Entry::hardlink("r/hl-to-link", "r/s-meta"),
        Entry::symlink("r/s-dev", &secret),
        Entry::char_dev("r/s-dev", 1, 3),
    ];
    let fx = crate::fixtures::Fixture::new(ImageSpec::new(vec![LayerSpec::new(
        Compression::Gzip,
        layer,
    )]));
    crate::pull::pull_and_compare(
        "hostile/replace-symlinks",
        &fx,
        crate::pull::Umoci::Required,
    );
    canary.assert_untouched();
}

/// Layers whose bytes match their digests but are not valid archives: a tar cut off in the
/// middle of a file, and bytes that are not a tar at all. The pull fails naming the layer, and
/// the store stays consistent.
#[test]
fn malformed_layers_fail_cleanly() {
    let reg = Registry::shared();
    let slate = Slate::new("malformed");
    let full = write_tar(&[
        Entry::dir("bin"),
        Entry::file("bin/busybox", busybox()).mode(0o755),
    ]);
    let truncated = full[..full.len() / 2].to_vec();
    let mut junk = b"this is not a tar archive\n".repeat(64);
    junk.resize(4096, b'!');
    for (i, (what, tar)) in [("truncated tar", truncated), ("not a tar", junk)]
        .into_iter()
        .enumerate()
    {
        let ok = LayerSpec::new(Compression::Gzip, vec![Entry::file("ok", "ok\n")]);
        let spec = ImageSpec::new(vec![ok.clone()]);
        let built = spec.assemble(vec![
            build_layer(&ok, Flavor::Oci),
            raw_layer(tar, Compression::Gzip, Flavor::Oci),
        ]);
        let name = format!("hostile/malformed-{i}");
        let reference = reg.push_image(&name, "v1", &built);
        let out = slate.run(&["pull", &reference]).failure(1);
        let bad = &built.layers[1].digest;
        let line = out.error_line();
        eprintln!("{what}: {line}");
        assert!(
            line.contains(&digest_hex(bad)[..12]),
            "{what}: the error does not name the layer {bad}:\n  {line}"
        );
        let chain = built.chain_ids();
        store::assert_consistent(&slate, &chain[..1], &chain[1..]);
        store::assert_not_listed(&slate, &format!("{}/{name}", reg.host()));
    }
}

/// The error of a refused layer says each cause once (`slate: <what failed>: <why>`): a cause
/// embedded in a message and printed again as its source makes long lines twice as long.
#[test]
fn refused_layer_errors_say_each_cause_once() {
    let reg = Registry::shared();
    let slate = Slate::new("cause-once");
    let cases: [(&str, Vec<u8>); 2] = [
        ("dotdot", write_tar(&[Entry::file("../x", "escaped\n")])),
        (
            "truncated",
            write_tar(&[Entry::file("big", vec![b'x'; 4096])])[..1024].to_vec(),
        ),
    ];
    for (what, tar) in cases {
        let spec = ImageSpec::new(Vec::new());
        let img = spec.assemble(vec![raw_layer(tar, Compression::Gzip, Flavor::Oci)]);
        let reference = reg.push_image(&format!("hostile/cause-once-{what}"), "v1", &img);
        let out = slate.run(&["pull", &reference]).failure(1);
        out.assert_each_cause_once();
    }
}
