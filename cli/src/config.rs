//! slate's configuration file (`/etc/slate/config.toml`; `configs/config.toml` documents
//! every key) and the settings derived from it and the global flags.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use slate_image::auth::Credentials;
use slate_image::registry::{Client, ClientOptions};
use slate_image::store::StorePolicy;

pub const DEFAULT_CONFIG: &str = "/etc/slate/config.toml";
pub const DEFAULT_ROOT: &str = "/var/lib/slate";

/// The file's contents; every key optional.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    pub root: Option<PathBuf>,
    /// Container records (`/run/slate` by default; `--state-dir` wins).
    pub state_dir: Option<PathBuf>,
    #[serde(default)]
    pub registries: RegistriesConfig,
    #[serde(default)]
    pub pull: PullConfig,
    #[serde(default)]
    pub network: NetworkConfig,
    #[serde(default)]
    pub security: SecurityConfig,
}

/// `[security]`: defaults for every container of this host.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecurityConfig {
    /// no_new_privs for every container (off, as in docker: setuid `su` and
    /// file-capability `ping` work); `--security-opt no-new-privileges=false` still wins.
    #[serde(default)]
    pub no_new_privileges: bool,
}

/// `[network]`: the bridge networks and the CNI plugins behind them.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetworkConfig {
    /// The default `bridge` network's subnet (10.44.0.0/16).
    pub bridge_subnet: Option<String>,
    /// Where the CNI plugins are (/usr/lib/cni, then /opt/cni/bin).
    pub cni_path: Option<Vec<PathBuf>>,
}

#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegistriesConfig {
    /// Reachable over plain HTTP (loopback registries always are).
    #[serde(default)]
    pub insecure: Vec<String>,
    /// Docker-convention TLS files: `<certs_dir>/<host[:port]>/ca.crt`, `client.cert`, `client.key`.
    pub certs_dir: Option<PathBuf>,
    /// slate's own credentials file (written by `slate login`).
    pub auth_file: Option<PathBuf>,
    /// Pull-through mirrors of Docker Hub, tried in order before it.
    #[serde(default)]
    pub mirrors: Vec<String>,
}

#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PullConfig {
    /// Layers downloaded at once.
    pub parallel: Option<usize>,
    /// Attempts per request.
    pub attempts: Option<u32>,
    /// Seconds without data before a download is retried.
    pub stall_timeout: Option<u64>,
    /// Keep compressed layer blobs after unpacking.
    pub keep_blobs: Option<bool>,
    /// Store budget (`"2G"`, `"500M"`, bytes): least recently used images are evicted
    /// after a pull that leaves the store larger.
    pub max_store_size: Option<String>,
}

/// Settings in effect.
#[derive(Debug)]
pub struct Settings {
    pub root: PathBuf,
    /// Container records: `--state-dir`, else the file's `state_dir`, else /run/slate.
    pub state_dir: PathBuf,
    pub file: ConfigFile,
    /// The configuration file the user named (`--config`, `SLATE_CONFIG`), absolute: what a
    /// later restart of a container by `slate auto-update` must read again.
    pub config_path: Option<PathBuf>,
}

impl Settings {
    /// Flags win over the file, the file over defaults. A missing default config file is
    /// fine; a missing file the user named is an error.
    pub fn load(root: Option<&Path>, config: Option<&Path>) -> anyhow::Result<Settings> {
        let (path, explicit) = match config {
            Some(p) => (p.to_path_buf(), true),
            None => (PathBuf::from(DEFAULT_CONFIG), false),
        };
        let file = match std::fs::read_to_string(&path) {
            Ok(text) => toml::from_str::<ConfigFile>(&text)
                .with_context(|| format!("invalid configuration file {}", path.display()))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !explicit => {
                ConfigFile::default()
            }
            Err(e) => {
                return Err(e)
                    .with_context(|| format!("cannot read configuration file {}", path.display()))
            }
        };
        let root = root
            .map(Path::to_path_buf)
            .or_else(|| file.root.clone())
            .unwrap_or_else(|| PathBuf::from(DEFAULT_ROOT));
        let state_dir = file
            .state_dir
            .clone()
            .unwrap_or_else(|| PathBuf::from(crate::state::DEFAULT_STATE_DIR));
        let config_path = match config {
            Some(p) => Some(
                std::path::absolute(p)
                    .with_context(|| format!("cannot resolve {}", p.display()))?,
            ),
            None => None,
        };
        Ok(Settings {
            root,
            state_dir,
            file,
            config_path,
        })
    }

    pub fn auth_file(&self) -> PathBuf {
        self.file
            .registries
            .auth_file
            .clone()
            .unwrap_or_else(|| self.root.join("auth.json"))
    }

    /// Credentials: docker's file first, then slate's own (which wins).
    pub fn credentials(&self) -> anyhow::Result<Credentials> {
        let mut c = Credentials::default();
        let docker = match std::env::var_os("DOCKER_CONFIG") {
            Some(d) => Some(PathBuf::from(d).join("config.json")),
            None => std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".docker/config.json")),
        };
        if let Some(p) = docker {
            c.merge_file(&p)?;
        }
        c.merge_file(&self.auth_file())?;
        Ok(c)
    }

    pub fn client_options(&self) -> anyhow::Result<ClientOptions> {
        let mut o = ClientOptions {
            insecure_registries: self.file.registries.insecure.clone(),
            certs_dir: Some(
                self.file
                    .registries
                    .certs_dir
                    .clone()
                    .unwrap_or_else(|| PathBuf::from("/etc/slate/certs.d")),
            ),
            credentials: self.credentials()?,
            mirrors: self.file.registries.mirrors.clone(),
            ..ClientOptions::default()
        };
        if let Some(a) = self.file.pull.attempts {
            o.attempts = a.max(1);
        }
        if let Some(s) = self.file.pull.stall_timeout {
            o.stall_timeout = Duration::from_secs(s.max(1));
        }
        Ok(o)
    }

    /// The registry client of a command that pulls, saying when it retries a registry (on
    /// a terminal unless `quiet`, else as warnings: [`crate::progress::show_retries`]).
    pub fn registry_client(&self, quiet: bool) -> anyhow::Result<Client> {
        Ok(crate::progress::show_retries(
            Client::new(self.client_options()?),
            quiet,
        ))
    }

    pub fn parallel(&self) -> usize {
        self.file.pull.parallel.unwrap_or(3).max(1)
    }

    /// How the store spends disk.
    pub fn store_policy(&self) -> anyhow::Result<StorePolicy> {
        let max_size = match &self.file.pull.max_store_size {
            Some(s) => Some(parse_size(s).with_context(|| {
                format!(
                    "invalid [pull] max_store_size {s:?}: expected bytes or e.g. \"500M\", \"2G\""
                )
            })?),
            None => None,
        };
        Ok(StorePolicy {
            keep_blobs: self.file.pull.keep_blobs.unwrap_or(false),
            max_size,
        })
    }
}

/// `2G`, `500M`, `64k`, `1.5GB`, `1GiB`, `1234`: binary multiples, like docker's `--memory`.
pub fn parse_size(s: &str) -> anyhow::Result<u64> {
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: f64 = num
        .parse()
        .with_context(|| format!("{num:?} is not a number"))?;
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        "t" | "tb" | "tib" => 1 << 40,
        u => anyhow::bail!("unknown unit {u:?}"),
    };
    if !n.is_finite() || n < 0.0 {
        anyhow::bail!("{num:?} is not a size");
    }
    Ok((n * mult as f64) as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_config_parses() {
        let text = include_str!("../../configs/config.toml");
        let c: ConfigFile = toml::from_str(text).expect("configs/config.toml must parse");
        assert!(c.registries.insecure.is_empty());
    }

    #[test]
    fn sizes_parse() {
        assert_eq!(parse_size("2G").unwrap(), 2 << 30);
        assert_eq!(parse_size("500m").unwrap(), 500 << 20);
        assert_eq!(parse_size("1.5GB").unwrap(), 3 << 29);
        assert_eq!(parse_size("1234").unwrap(), 1234);
        assert!(parse_size("lots").is_err());
        assert!(parse_size("2X").is_err());
    }

    #[test]
    fn unknown_keys_are_errors() {
        assert!(toml::from_str::<ConfigFile>("roots = \"/x\"").is_err());
    }

    #[test]
    fn flags_win_and_named_files_must_exist() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.toml");
        std::fs::write(&p, "root = \"/from/file\"\n").unwrap();
        let s = Settings::load(None, Some(&p)).unwrap();
        assert_eq!(s.root, PathBuf::from("/from/file"));
        let s = Settings::load(Some(Path::new("/flag")), Some(&p)).unwrap();
        assert_eq!(s.root, PathBuf::from("/flag"));
        assert!(Settings::load(None, Some(&dir.path().join("missing.toml"))).is_err());
    }
}
