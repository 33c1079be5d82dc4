//! The independent client: `skopeo copy` from the test registry into an OCI layout, then
//! `umoci unpack`, giving a rootfs to compare with what `slate image mount` shows.

use std::path::{Path, PathBuf};
use std::process::Command;

/// Why an independent extraction could not be made.
#[derive(Debug)]
pub struct UmociError(pub String);

impl std::fmt::Display for UmociError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

fn run(cmd: &mut Command) -> Result<(), UmociError> {
    let out = cmd
        .output()
        .map_err(|e| UmociError(format!("running {cmd:?}: {e}")))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(UmociError(format!(
            "{cmd:?} failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )))
    }
}

/// Copies `reference` (`127.0.0.1:PORT/name:tag`) into `work/oci` and unpacks it into
/// `work/bundle`; returns the bundle's rootfs.
pub fn unpack(reference: &str, platform: Option<&str>, work: &Path) -> Result<PathBuf, UmociError> {
    let layout = work.join("oci");
    let bundle = work.join("bundle");
    let mut skopeo = Command::new("skopeo");
    skopeo.arg("--insecure-policy");
    if let Some(p) = platform {
        let parts: Vec<&str> = p.split('/').collect();
        skopeo.args(["--override-os", parts[0], "--override-arch", parts[1]]);
        if let Some(v) = parts.get(2) {
            skopeo.args(["--override-variant", v]);
        }
    }
    skopeo
        .args(["copy", "--src-tls-verify=false"])
        .arg(format!("docker://{reference}"))
        .arg(format!("oci:{}:e2e", layout.display()));
    run(&mut skopeo)?;
    run(Command::new("umoci")
        .arg("unpack")
        .arg("--image")
        .arg(format!("{}:e2e", layout.display()))
        .arg(&bundle))?;
    Ok(bundle.join("rootfs"))
}
