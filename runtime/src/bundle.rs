//! OCI bundles: a directory with a `config.json` and the rootfs it names. Reads that
//! `config.json`, and a container's own copy of it (written with oci-spec's `Serialize`),
//! without oci-spec's `Deserialize` for `Spec`.
//!
//! Why: deserializing `Spec` deserializes `Process`, whose `execCPUAffinity` field is
//! validated with a regular expression; that one call links the whole `regex` engine
//! (about 480 KiB of the ARM binaries, a twelfth of them) into a binary that otherwise never
//! matches a regex. Here the same JSON is read into mirrors that use oci-spec's own types for
//! every part but `Process` and `Spec` themselves, and the result is assembled through
//! oci-spec's setters. `execCPUAffinity` (which slate never writes: it applies to `exec`
//! processes and slate sets no affinity) is the one field not read back.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use oci_spec::runtime::{
    Box as ConsoleSize, Hooks, Linux, LinuxCapabilities, LinuxIOPriority, Mount, PosixRlimit,
    Process, Root, Scheduler, Spec, User,
};

#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct StoredSpec {
    #[serde(default, rename = "ociVersion")]
    version: String,
    #[serde(default)]
    root: Option<Root>,
    #[serde(default)]
    mounts: Option<Vec<Mount>>,
    #[serde(default)]
    process: Option<StoredProcess>,
    #[serde(default)]
    hostname: Option<String>,
    #[serde(default)]
    domainname: Option<String>,
    #[serde(default)]
    hooks: Option<Hooks>,
    #[serde(default)]
    annotations: Option<HashMap<String, String>>,
    #[serde(default)]
    linux: Option<Linux>,
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct StoredProcess {
    #[serde(default)]
    terminal: Option<bool>,
    #[serde(default)]
    console_size: Option<ConsoleSize>,
    user: User,
    #[serde(default)]
    args: Option<Vec<String>>,
    #[serde(default)]
    command_line: Option<String>,
    #[serde(default)]
    env: Option<Vec<String>>,
    cwd: PathBuf,
    #[serde(default)]
    capabilities: Option<LinuxCapabilities>,
    #[serde(default)]
    rlimits: Option<Vec<PosixRlimit>>,
    #[serde(default)]
    no_new_privileges: Option<bool>,
    #[serde(default)]
    apparmor_profile: Option<String>,
    #[serde(default)]
    oom_score_adj: Option<i32>,
    #[serde(default)]
    selinux_label: Option<String>,
    #[serde(default)]
    io_priority: Option<LinuxIOPriority>,
    #[serde(default)]
    scheduler: Option<Scheduler>,
}

impl From<StoredProcess> for Process {
    fn from(s: StoredProcess) -> Process {
        let mut p = Process::default();
        p.set_terminal(s.terminal)
            .set_console_size(s.console_size)
            .set_user(s.user)
            .set_args(s.args)
            .set_command_line(s.command_line)
            .set_env(s.env)
            .set_cwd(s.cwd)
            .set_capabilities(s.capabilities)
            .set_rlimits(s.rlimits)
            .set_no_new_privileges(s.no_new_privileges)
            .set_apparmor_profile(s.apparmor_profile)
            .set_oom_score_adj(s.oom_score_adj)
            .set_selinux_label(s.selinux_label)
            .set_io_priority(s.io_priority)
            .set_scheduler(s.scheduler);
        p
    }
}

impl From<StoredSpec> for Spec {
    fn from(s: StoredSpec) -> Spec {
        let mut spec = Spec::default();
        spec.set_version(s.version)
            .set_root(s.root)
            .set_mounts(s.mounts)
            .set_process(s.process.map(Process::from))
            .set_hostname(s.hostname)
            .set_domainname(s.domainname)
            .set_hooks(s.hooks)
            .set_annotations(s.annotations)
            .set_linux(s.linux);
        spec
    }
}

/// Why a `config.json` (or a `process` document) could not be read.
#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    #[error("cannot read {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is not a runtime-spec document: {source}")]
    Parse {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    /// "MUST generate an error when invalid or unsupported values are encountered": a
    /// version this runtime does not implement is one.
    #[error("unsupported ociVersion {0:?} in the bundle's config.json: slate implements 1.x")]
    Version(String),
    /// The spec has no `root`.
    #[error("the bundle's config.json has no root")]
    NoRoot,
}

/// Reads a runtime-spec `process` object (`slate oci exec --process FILE`).
pub fn process_from_json(data: &[u8]) -> Result<Process, serde_json::Error> {
    let stored: StoredProcess = serde_json::from_slice(data)?;
    Ok(stored.into())
}

/// Reads a spec written by slate, or a bundle's config.json.
pub fn load(path: &Path) -> Result<Spec, BundleError> {
    let data = std::fs::read(path).map_err(|source| BundleError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let stored: StoredSpec =
        serde_json::from_slice(&data).map_err(|source| BundleError::Parse {
            path: path.to_path_buf(),
            source,
        })?;
    Ok(stored.into())
}

/// A bundle as `create` takes it: its absolute directory, its spec (of a runtime-spec 1.x
/// version) and the rootfs directory `root.path` names (relative to the bundle).
#[derive(Debug)]
pub struct Bundle {
    pub dir: PathBuf,
    pub spec: Spec,
    pub rootfs: PathBuf,
}

impl Bundle {
    /// Reads `dir/config.json`.
    pub fn open(dir: &Path) -> Result<Bundle, BundleError> {
        let spec = load(&dir.join("config.json"))?;
        let version = spec.version();
        let major_ok = version
            .split('.')
            .map(|p| p.split(['-', '+']).next().unwrap_or(p).parse::<u32>())
            .collect::<Result<Vec<_>, _>>()
            .is_ok_and(|v| v.len() == 3 && v[0] == 1);
        if !major_ok {
            return Err(BundleError::Version(version.clone()));
        }
        let rootfs = rootfs_of(dir, &spec)?;
        Ok(Bundle {
            dir: dir.to_path_buf(),
            spec,
            rootfs,
        })
    }
}

/// The rootfs path of a bundle's `root.path`, relative to the bundle directory.
pub fn rootfs_of(bundle: &Path, spec: &Spec) -> Result<PathBuf, BundleError> {
    let root = spec.root().as_ref().ok_or(BundleError::NoRoot)?;
    let p = root.path();
    Ok(if p.is_absolute() {
        p.clone()
    } else {
        bundle.join(p)
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn reads_back_what_oci_spec_writes() {
        // The default spec has a process with user, cwd, env, args, capabilities,
        // rlimits and more: all must survive the round trip unchanged.
        let mut spec = Spec::default();
        if let Some(p) = spec.process_mut() {
            p.set_terminal(Some(true))
                .set_oom_score_adj(Some(-500))
                .set_apparmor_profile(Some("slate-default".to_string()));
        }
        spec.set_hostname(Some("box".to_string()))
            .set_annotations(Some(HashMap::from([("a".to_string(), "b".to_string())])));
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("spec.json");
        std::fs::write(&path, serde_json::to_vec(&spec).unwrap()).unwrap();
        assert_eq!(load(&path).unwrap(), spec);
    }
}
