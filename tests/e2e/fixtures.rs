//! The images the tests pull, each with the tree it must unpack to.

use crate::harness::fixture::{
    build_index, busybox, file_capability, BuiltImage, BuiltIndex, Compression, Flavor, ImageSpec,
    LayerSpec, Platform,
};
use crate::harness::tar_writer::Entry;
use crate::harness::tree::Tree;

/// CAP_NET_BIND_SERVICE, the capability `security.capability` grants in the fixture.
const CAP_NET_BIND_SERVICE: u32 = 10;

/// A long path component, so names cross the 100-byte ustar limit.
fn long(c: char, n: usize) -> String {
    std::iter::repeat_n(c, n).collect()
}

/// The layers of the "rich" fixture: every kind of entry and every cross-layer change that
/// issue 2 section 7 names. `c` gives each layer's compression.
pub fn rich_layers(c: [Compression; 3]) -> Vec<LayerSpec> {
    let long_dir = format!("long/{}", long('d', 70));
    let pax_name = format!("{long_dir}/{}-pax.txt", long('p', 60));
    let gnu_name = format!("{long_dir}/{}-gnu.txt", long('g', 60));
    let long_target = format!("/{long_dir}/{}-pax.txt", long('p', 60));

    let base = vec![
        Entry::dir("bin"),
        Entry::file("bin/busybox", busybox()).mode(0o755),
        Entry::symlink("bin/sh", "busybox"),
        Entry::hardlink("bin/ls", "bin/busybox"),
        Entry::hardlink("bin/cat", "bin/busybox"),
        Entry::dir("etc"),
        Entry::file(
            "etc/passwd",
            "root:x:0:0:root:/root:/bin/sh\nu:x:1000:1000::/home/u:/bin/sh\n",
        ),
        Entry::file("etc/group", "root:x:0:\nu:x:1000:\n"),
        Entry::symlink("etc/dangling", "/nonexistent/target"),
        Entry::symlink("etc/relative-dangling", "../nowhere"),
        // The same path twice in one layer: the later entry wins.
        Entry::file("etc/dup", "first\n"),
        Entry::file("etc/dup", "second\n").mode(0o600),
        Entry::dir("usr"),
        Entry::dir("usr/bin"),
        Entry::symlink("usr/bin/env", "/bin/busybox").owner(1000, 1000),
        Entry::file("usr/bin/su", "#!/bin/sh\n").mode(0o4755),
        Entry::file("usr/bin/wall", "#!/bin/sh\n")
            .mode(0o2755)
            .owner(0, 5),
        Entry::file("usr/bin/netcap", "#!/bin/sh\n")
            .mode(0o755)
            .xattr("security.capability", file_capability(CAP_NET_BIND_SERVICE)),
        Entry::dir("tmp").mode(0o1777),
        Entry::dir("dev"),
        Entry::char_dev("dev/null", 1, 3),
        Entry::char_dev("dev/odd", 250, 70_000).mode(0o600),
        Entry::block_dev("dev/loop0", 7, 0).owner(0, 6),
        Entry::fifo("dev/initctl").mode(0o600),
        Entry::dir("data")
            .owner(1000, 1000)
            .xattr("user.dir", "yes"),
        Entry::file("data/owned", "mine\n")
            .mode(0o640)
            .owner(1000, 1000),
        Entry::file("data/nobody", "nobody's\n")
            .mode(0o600)
            .owner(65534, 65534),
        Entry::file("data/xattrs", "attrs\n")
            .xattr("user.slate.text", "hello")
            .xattr("user.slate.binary", [0u8, 1, 2, 255]),
        Entry::dir("data/setgid").mode(0o2775).owner(1000, 50),
        Entry::file("data/mtime", "old\n").mtime(946_684_800),
        Entry::dir("long"),
        Entry::dir(&long_dir),
        Entry::file(&pax_name, "pax long name\n"),
        Entry::file(&gnu_name, "gnu long name\n").gnu_long_names(),
        Entry::symlink("long/pax-link", &long_target),
        Entry::symlink("long/gnu-link", &long_target).gnu_long_names(),
        Entry::hardlink("long/gnu-hardlink", &gnu_name).gnu_long_names(),
        Entry::dir("opq"),
        Entry::file("opq/a", "a\n"),
        Entry::dir("opq/sub"),
        Entry::file("opq/sub/c", "c\n"),
        Entry::dir("wh"),
        Entry::file("wh/gone", "gone\n"),
        Entry::dir("wh/gonedir"),
        Entry::file("wh/gonedir/f", "f\n"),
        Entry::file("wh/keep", "keep\n"),
        Entry::dir("repl"),
        Entry::file("repl/file", "v1\n"),
        Entry::dir("repl/dir-to-file"),
        Entry::file("repl/dir-to-file/child", "child\n"),
        Entry::file("repl/file-to-dir", "was a file\n"),
        Entry::symlink("repl/link", "file"),
    ];
    let changes = vec![
        Entry::dir("bin"),
        Entry::whiteout("bin", "ls"),
        Entry::dir("opq"),
        Entry::opaque("opq"),
        Entry::file("opq/new", "new\n"),
        Entry::dir("wh"),
        Entry::whiteout("wh", "gone"),
        Entry::whiteout("wh", "gonedir"),
        Entry::dir("repl"),
        Entry::file("repl/file", "v2, longer\n")
            .mode(0o600)
            .owner(1000, 1000),
        Entry::file("repl/dir-to-file", "now a file\n"),
        Entry::dir("repl/file-to-dir").mode(0o750),
        Entry::file("repl/file-to-dir/inner", "inner\n"),
        Entry::symlink("repl/link", "/etc/passwd"),
        Entry::dir("data")
            .owner(1000, 1000)
            .xattr("user.dir", "yes"),
        Entry::file("data/h1", "linked in layer 3\n").owner(1000, 1000),
        Entry::hardlink("data/h2", "data/h1"),
    ];
    vec![
        LayerSpec::new(c[0], base),
        // An empty layer (docker makes these for ENV/LABEL-only steps that still emit one).
        LayerSpec::new(c[1], Vec::new()),
        LayerSpec::new(c[2], changes),
    ]
}

/// A fixture: the spec (with its expected tree) and the built image.
pub struct Fixture {
    pub spec: ImageSpec,
    pub image: BuiltImage,
}

impl Fixture {
    pub fn new(spec: ImageSpec) -> Fixture {
        let image = spec.build();
        Fixture { spec, image }
    }

    pub fn expected_tree(&self) -> Tree {
        Tree::from_layers(self.spec.layers.iter().map(|l| l.entries.as_slice()))
    }
}

pub fn rich(c: [Compression; 3], flavor: Flavor) -> Fixture {
    Fixture::new(ImageSpec::new(rich_layers(c)).flavor(flavor))
}

/// A small good image: busybox and a marker file with `marker` as content.
pub fn small(marker: &str, platform: &str, c: Compression) -> Fixture {
    Fixture::new(
        ImageSpec::new(vec![
            LayerSpec::new(
                c,
                vec![
                    Entry::dir("bin"),
                    Entry::file("bin/busybox", busybox()).mode(0o755),
                    Entry::symlink("bin/sh", "busybox"),
                ],
            ),
            LayerSpec::new(c, vec![Entry::file("marker", format!("{marker}\n"))]),
        ])
        .platform(platform),
    )
}

/// The multi-arch fixture: one image per platform, each with its platform as marker. The index
/// says `arm64/v8` for the arm64 image unless `arm64_variant` is false.
pub fn multi_arch(platforms: &[&str], flavor: Flavor, arm64_variant: bool) -> BuiltIndex {
    let images: Vec<BuiltImage> = platforms
        .iter()
        .map(|p| {
            let mut spec = small(p, p, Compression::Gzip).spec.flavor(flavor);
            if flavor == Flavor::Docker {
                spec.layers
                    .iter_mut()
                    .for_each(|l| l.compression = Compression::Gzip);
            }
            spec.build()
        })
        .collect();
    let index_platforms: Vec<Platform> = platforms
        .iter()
        .map(|p| {
            let mut p = Platform::parse(p);
            if p.architecture == "arm64" && !arm64_variant {
                p.variant = None;
            }
            p
        })
        .collect();
    build_index(flavor, images, &index_platforms)
}
