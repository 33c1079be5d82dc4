//! Checks that a slate store stays consistent, and canaries that show whether anything outside
//! the store was written.
//!
//! The store contract (issue 2): `<root>/layers/<chainid-hex>/` holds complete layers only;
//! in-progress work lives under `<root>/tmp/` and is removed on failure; `<root>/images/` holds
//! the records.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use super::fixture::{digest_hex, sha256_digest};
use super::slate::{Slate, TestDir};
use super::tree::{CompareOptions, Tree};

/// Names of the entries of a directory (empty if it does not exist).
pub fn dir_names(dir: &Path) -> Vec<String> {
    match fs::read_dir(dir) {
        Ok(rd) => {
            let mut v: Vec<String> = rd
                .map(|e| {
                    e.unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
                        .file_name()
                        .to_string_lossy()
                        .into_owned()
                })
                .collect();
            v.sort();
            v
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => panic!("reading {}: {e}", dir.display()),
    }
}

/// Asserts the store's invariants: `tmp/` is empty, every `layers/` entry is a 64-hex chain id
/// among `allowed_chain_ids` (the layers that may legitimately have been committed), and none of
/// `forbidden_chain_ids` is there.
pub fn assert_consistent(slate: &Slate, allowed_chain_ids: &[String], forbidden: &[String]) {
    let root = slate.root();
    let tmp = dir_names(&root.join("tmp"));
    assert!(
        tmp.is_empty(),
        "{}/tmp is not empty after the command: {tmp:?}",
        root.display()
    );
    let allowed: Vec<&str> = allowed_chain_ids.iter().map(|c| digest_hex(c)).collect();
    for name in dir_names(&root.join("layers")) {
        assert!(
            name.len() == 64 && name.bytes().all(|b| b.is_ascii_hexdigit()),
            "unexpected entry in layers/: {name}"
        );
        assert!(
            allowed.contains(&name.as_str()),
            "layers/{name} is not a chain id that could have been committed (allowed: {allowed:?})"
        );
    }
    // Kept blobs (the store may drop them after unpacking) must be whole: named by their digest.
    let blobs = root.join("blobs/sha256");
    for name in dir_names(&blobs) {
        let data = fs::read(blobs.join(&name))
            .unwrap_or_else(|e| panic!("reading blobs/sha256/{name}: {e}"));
        assert_eq!(
            digest_hex(&sha256_digest(&data)),
            name,
            "blobs/sha256/{name} does not hold the blob of that digest"
        );
    }
    for f in forbidden {
        let p = root.join("layers").join(digest_hex(f));
        assert!(
            !p.exists(),
            "layer {} was committed though its pull failed",
            p.display()
        );
    }
}

/// Asserts `slate images` lists nothing named `name` (`host/path`, no tag).
pub fn assert_not_listed(slate: &Slate, name: &str) {
    let images = slate.images();
    let listed: Vec<_> = images
        .iter()
        .filter(|i| i["name"].as_str() == Some(name))
        .collect();
    assert!(
        listed.is_empty(),
        "{name} is listed after a failed pull: {listed:?}"
    );
}

/// A directory with known contents next to the store; a hostile layer that escapes its layer
/// directory would write into it, delete its `victim`, or hardlink its `secret`.
pub struct Canary {
    pub dir: PathBuf,
    before: Tree,
}

impl Canary {
    /// Creates the canary as `canary/` inside `parent` (a test's temp dir, outside the store).
    pub fn new(parent: &TestDir) -> Canary {
        let dir = parent.subdir("canary");
        for (name, data) in [("victim", "do not delete me\n"), ("secret", "s3cret\n")] {
            let p = dir.join(name);
            fs::write(&p, data).unwrap_or_else(|e| panic!("writing {}: {e}", p.display()));
        }
        fs::create_dir_all(dir.join("sub")).expect("creating canary/sub");
        let before = Tree::snapshot(&dir).expect("snapshot of the canary");
        Canary { dir, before }
    }

    /// The canary dir as a path relative to `/` (for building `../../..`-style escapes).
    pub fn rel_from_root(&self) -> String {
        self.dir
            .strip_prefix("/")
            .expect("temp dirs are absolute")
            .display()
            .to_string()
    }

    /// Asserts the canary is exactly as it was: same entries, contents, modes, times, and
    /// `secret` still has a single link.
    pub fn assert_untouched(&self) {
        let now = Tree::snapshot(&self.dir).expect("snapshot of the canary");
        let d = self.before.diff(&now, CompareOptions::default());
        assert!(
            d.is_empty(),
            "the canary dir next to the store changed:\n  {}",
            d.join("\n  ")
        );
        let md = fs::metadata(self.dir.join("secret")).expect("canary secret");
        assert_eq!(
            md.nlink(),
            1,
            "canary/secret gained a hardlink (a layer linked a host file)"
        );
    }
}

/// Asserts no file named `marker` exists anywhere under `dir` or in any ancestor of `dir`
/// (the places a `../`-escape from a layer directory under `dir` could reach).
pub fn assert_marker_absent(dir: &Path, marker: &str) {
    fn find(dir: &Path, marker: &str, found: &mut Vec<PathBuf>) {
        let Ok(rd) = fs::read_dir(dir) else { return };
        for e in rd.flatten() {
            let p = e.path();
            if e.file_name().to_string_lossy() == marker {
                found.push(p.clone());
            }
            if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                find(&p, marker, found);
            }
        }
    }
    let mut found = Vec::new();
    find(dir, marker, &mut found);
    for a in dir.ancestors().skip(1) {
        let p = a.join(marker);
        if fs::symlink_metadata(&p).is_ok() {
            found.push(p);
        }
    }
    assert!(
        found.is_empty(),
        "a hostile layer wrote outside its layer dir: {found:?}"
    );
}
