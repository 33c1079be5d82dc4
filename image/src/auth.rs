//! Registry credentials: docker's `config.json` (`auths`) and slate's own `slate login`
//! file, which uses the same format so either tool's file works for both.
//!
//! Secrets are never logged and never appear in an error: [`Credential`]'s `Debug` hides
//! the password.

use std::collections::BTreeMap;
use std::fmt;
use std::fs;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use base64::Engine as _;

/// Why a credentials file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("cannot read credentials file {path}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("malformed credentials file {path}: {reason}")]
    Malformed { path: PathBuf, reason: String },
    #[error("cannot write credentials file {path}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// A user name and password (or identity token) for one registry.
#[derive(Clone, PartialEq, Eq)]
pub struct Credential {
    pub username: String,
    pub password: String,
}

impl fmt::Debug for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Credential({:?}, <hidden>)", self.username)
    }
}

/// Credentials by registry (`host[:port]`, `docker.io` for Docker Hub).
#[derive(Debug, Clone, Default)]
pub struct Credentials {
    by_registry: BTreeMap<String, Credential>,
}

#[derive(serde::Deserialize, serde::Serialize, Default)]
struct ConfigFile {
    #[serde(default)]
    auths: BTreeMap<String, AuthEntry>,
    #[serde(flatten)]
    rest: BTreeMap<String, serde_json::Value>,
}

#[derive(serde::Deserialize, serde::Serialize, Default)]
struct AuthEntry {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    auth: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    username: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    password: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    identitytoken: Option<String>,
}

/// docker writes Hub credentials under its v1 URL; everything else under `host[:port]`,
/// sometimes with a scheme or path.
fn normalize_key(key: &str) -> String {
    let k = key
        .trim_start_matches("https://")
        .trim_start_matches("http://");
    let host = k.split('/').next().unwrap_or(k);
    match host {
        "index.docker.io" | "registry-1.docker.io" | "registry.hub.docker.com" => {
            crate::reference::DOCKER_HUB.to_string()
        }
        h => h.to_string(),
    }
}

impl Credentials {
    pub fn get(&self, registry: &str) -> Option<&Credential> {
        self.by_registry.get(&normalize_key(registry))
    }

    pub fn insert(&mut self, registry: &str, c: Credential) {
        self.by_registry.insert(normalize_key(registry), c);
    }

    /// Reads a docker-format file; a missing file is no credentials. Files read later win,
    /// so pass docker's first and slate's own last.
    pub fn merge_file(&mut self, path: &Path) -> Result<(), AuthError> {
        let data = match fs::read(path) {
            Ok(d) => d,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(source) => {
                return Err(AuthError::Read {
                    path: path.to_path_buf(),
                    source,
                })
            }
        };
        let malformed = |reason: String| AuthError::Malformed {
            path: path.to_path_buf(),
            reason,
        };
        let file: ConfigFile =
            serde_json::from_slice(&data).map_err(|e| malformed(e.to_string()))?;
        for (key, entry) in file.auths {
            let cred = if let Some(auth) = entry.auth.filter(|a| !a.is_empty()) {
                let raw = base64::engine::general_purpose::STANDARD
                    .decode(auth.trim())
                    .map_err(|_| malformed(format!("the auth of {key:?} is not base64")))?;
                let raw = String::from_utf8(raw)
                    .map_err(|_| malformed(format!("the auth of {key:?} is not UTF-8")))?;
                let (u, p) = raw.split_once(':').ok_or_else(|| {
                    malformed(format!("the auth of {key:?} is not user:password"))
                })?;
                Credential {
                    username: u.to_string(),
                    password: p.to_string(),
                }
            } else if let Some(token) = entry.identitytoken {
                Credential {
                    username: "<token>".to_string(),
                    password: token,
                }
            } else if let (Some(u), Some(p)) = (entry.username, entry.password) {
                Credential {
                    username: u,
                    password: p,
                }
            } else {
                continue;
            };
            self.by_registry.insert(normalize_key(&key), cred);
        }
        Ok(())
    }
}

/// Adds or (with `None`) removes `registry`'s entry in the docker-format file at `path`,
/// keeping any other content. Written 0600, atomically.
pub fn store_credential(
    path: &Path,
    registry: &str,
    cred: Option<&Credential>,
) -> Result<bool, AuthError> {
    let mut file: ConfigFile = match fs::read(path) {
        Ok(d) => serde_json::from_slice(&d).map_err(|e| AuthError::Malformed {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => ConfigFile::default(),
        Err(source) => {
            return Err(AuthError::Read {
                path: path.to_path_buf(),
                source,
            })
        }
    };
    let key = normalize_key(registry);
    let existed = file.auths.keys().any(|k| normalize_key(k) == key);
    file.auths.retain(|k, _| normalize_key(k) != key);
    if let Some(c) = cred {
        let auth = base64::engine::general_purpose::STANDARD
            .encode(format!("{}:{}", c.username, c.password));
        file.auths.insert(
            key,
            AuthEntry {
                auth: Some(auth),
                ..AuthEntry::default()
            },
        );
    }
    let write_err = |source| AuthError::Write {
        path: path.to_path_buf(),
        source,
    };
    let dir = path.parent().unwrap_or(Path::new("."));
    fs::create_dir_all(dir).map_err(write_err)?;
    let data = serde_json::to_vec_pretty(&file).map_err(|e| write_err(e.into()))?;
    let mut tmp = tempfile::Builder::new()
        .prefix(".auth")
        .permissions(fs::Permissions::from_mode(0o600))
        .tempfile_in(dir)
        .map_err(write_err)?;
    tmp.write_all(&data).map_err(write_err)?;
    tmp.as_file().sync_all().map_err(write_err)?;
    tmp.persist(path).map_err(|e| write_err(e.error))?;
    Ok(existed)
}

/// Opens a file for a secret with mode 0600 from the start (never briefly world-readable).
pub fn create_private(path: &Path) -> std::io::Result<fs::File> {
    fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_docker_config_forms() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("config.json");
        let auth = base64::engine::general_purpose::STANDARD.encode("alice:s3cret:x");
        fs::write(
            &p,
            format!(
                r#"{{"auths":{{"https://index.docker.io/v1/":{{"auth":"{auth}"}},
                "reg.example:5000":{{"username":"bob","password":"pw"}},
                "empty.example":{{}}}},"credsStore":"desktop"}}"#
            ),
        )
        .unwrap();
        let mut c = Credentials::default();
        c.merge_file(&p).unwrap();
        let hub = c.get("docker.io").unwrap();
        assert_eq!(hub.username, "alice");
        assert_eq!(hub.password, "s3cret:x");
        assert_eq!(c.get("reg.example:5000").unwrap().username, "bob");
        assert!(c.get("empty.example").is_none());
        assert!(!format!("{hub:?}").contains("s3cret"));
    }

    #[test]
    fn missing_file_is_no_credentials_and_garbage_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let mut c = Credentials::default();
        c.merge_file(&dir.path().join("nope")).unwrap();
        let p = dir.path().join("bad.json");
        fs::write(&p, "{").unwrap();
        assert!(matches!(c.merge_file(&p), Err(AuthError::Malformed { .. })));
    }

    #[test]
    fn store_and_remove_keeps_other_content_and_mode() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("auth.json");
        fs::write(&p, r#"{"auths":{},"other":1}"#).unwrap();
        let cred = Credential {
            username: "u".into(),
            password: "p".into(),
        };
        assert!(!store_credential(&p, "r.example", Some(&cred)).unwrap());
        assert_eq!(
            fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let mut c = Credentials::default();
        c.merge_file(&p).unwrap();
        assert_eq!(c.get("r.example"), Some(&cred));
        assert!(fs::read_to_string(&p).unwrap().contains("\"other\""));
        assert!(store_credential(&p, "r.example", None).unwrap());
        let mut c = Credentials::default();
        c.merge_file(&p).unwrap();
        assert!(c.get("r.example").is_none());
    }
}
