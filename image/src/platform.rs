//! Platforms (`os/arch[/variant]`): this host's, and which of an image's platforms fit it.
//!
//! The rules follow containerd's: `arm64` images may carry variant `v8` or none; a 32-bit
//! ARM host takes `v7`, then `v6`, then `v5` images (an `arm` image with no variant counts as
//! `v7`). The binary's own architecture is the userland's, so a 32-bit Raspberry Pi OS on a
//! 64-bit kernel picks `arm/v7`, not `arm64`.

use std::fmt;
use std::str::FromStr;

/// Why a `--platform` value was refused.
#[derive(Debug, thiserror::Error)]
#[error("invalid platform {0:?}: expected os/arch[/variant], e.g. linux/arm64 or linux/arm/v7")]
pub struct PlatformError(String);

/// An image platform.
#[derive(Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct Platform {
    pub os: String,
    pub architecture: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
}

impl Platform {
    pub fn new(os: &str, architecture: &str, variant: Option<&str>) -> Platform {
        Platform {
            os: os.to_string(),
            architecture: architecture.to_string(),
            variant: variant.filter(|v| !v.is_empty()).map(str::to_string),
        }
    }

    /// The platform this binary runs as.
    pub fn host() -> Platform {
        let arch = go_arch(std::env::consts::ARCH);
        let variant = match arch {
            "arm64" => Some("v8".to_string()),
            "arm" => Some(host_arm_variant()),
            _ => None,
        };
        Platform {
            os: "linux".to_string(),
            architecture: arch.to_string(),
            variant,
        }
    }

    /// The platforms this one accepts, most preferred first.
    fn acceptable(&self) -> Vec<Platform> {
        let os = self.os.as_str();
        match (self.architecture.as_str(), self.variant.as_deref()) {
            ("arm64", None) | ("arm64", Some("v8")) => vec![
                Platform::new(os, "arm64", Some("v8")),
                Platform::new(os, "arm64", None),
            ],
            ("arm", v) => {
                let level = match v {
                    Some("v5") => 5,
                    Some("v6") => 6,
                    Some("v8") => 8,
                    _ => 7,
                };
                let mut out = Vec::new();
                for l in (5..=level.min(8)).rev() {
                    let var = format!("v{l}");
                    out.push(Platform::new(os, "arm", Some(&var)));
                    if l == 7 {
                        // An `arm` image without a variant is v7 by convention.
                        out.push(Platform::new(os, "arm", None));
                    }
                }
                out
            }
            ("amd64", None) | ("amd64", Some("v1")) => vec![
                Platform::new(os, "amd64", None),
                Platform::new(os, "amd64", Some("v1")),
            ],
            _ => vec![self.clone()],
        }
    }

    /// Index of the best match for this platform among `offered`, if any.
    pub fn best_match<'a, I>(&self, offered: I) -> Option<usize>
    where
        I: IntoIterator<Item = &'a Platform>,
    {
        let prefs = self.acceptable();
        let mut best: Option<(usize, usize)> = None; // (rank, index)
        for (i, p) in offered.into_iter().enumerate() {
            if let Some(rank) = prefs.iter().position(|q| q == p) {
                if best.is_none_or(|(r, _)| rank < r) {
                    best = Some((rank, i));
                }
            }
        }
        best.map(|(_, i)| i)
    }

    /// Whether an image of platform `p` runs here.
    pub fn accepts(&self, p: &Platform) -> bool {
        self.acceptable().contains(p)
    }
}

/// Go's (and so the OCI's) architecture names for Rust's.
fn go_arch(rust_arch: &str) -> &str {
    match rust_arch {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "arm" => "arm",
        "x86" => "386",
        "powerpc64" => "ppc64le",
        "riscv64" => "riscv64",
        "s390x" => "s390x",
        "loongarch64" => "loong64",
        other => other,
    }
}

/// A 32-bit ARM userland's variant from the kernel's word for the CPU. An ARMv8 CPU in
/// 32-bit mode runs v7 code.
fn host_arm_variant() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    arm_variant_from_cpuinfo(&cpuinfo)
}

fn arm_variant_from_cpuinfo(cpuinfo: &str) -> String {
    let arch = cpuinfo.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        (k.trim() == "CPU architecture").then(|| v.trim().to_string())
    });
    match arch.as_deref() {
        Some("5") | Some("5TE") | Some("5TEJ") => "v5",
        Some("6") | Some("6TEJ") => "v6",
        _ => "v7",
    }
    .to_string()
}

impl FromStr for Platform {
    type Err = PlatformError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let parts: Vec<&str> = s.split('/').collect();
        let ok_part = |p: &&str| {
            !p.is_empty()
                && p.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        };
        if !(2..=3).contains(&parts.len()) || !parts.iter().all(ok_part) {
            return Err(PlatformError(s.to_string()));
        }
        let arch = match parts[1] {
            "aarch64" => "arm64",
            "x86_64" | "x86-64" => "amd64",
            "armhf" => "arm",
            a => a,
        };
        Ok(Platform::new(parts[0], arch, parts.get(2).copied()))
    }
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(v) = &self.variant {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Platform {
        s.parse().unwrap()
    }

    fn pick(want: &str, offered: &[&str]) -> Option<String> {
        let offered: Vec<Platform> = offered.iter().map(|s| p(s)).collect();
        p(want)
            .best_match(offered.iter())
            .map(|i| offered[i].to_string())
    }

    const MULTI: &[&str] = &[
        "linux/amd64",
        "linux/arm64/v8",
        "linux/arm/v7",
        "linux/arm/v6",
    ];

    #[test]
    fn picks_each_architecture() {
        assert_eq!(pick("linux/amd64", MULTI).as_deref(), Some("linux/amd64"));
        assert_eq!(
            pick("linux/arm64", MULTI).as_deref(),
            Some("linux/arm64/v8")
        );
        assert_eq!(
            pick("linux/arm64/v8", MULTI).as_deref(),
            Some("linux/arm64/v8")
        );
        assert_eq!(pick("linux/arm/v7", MULTI).as_deref(), Some("linux/arm/v7"));
        assert_eq!(pick("linux/arm/v6", MULTI).as_deref(), Some("linux/arm/v6"));
        assert_eq!(pick("linux/arm/v5", MULTI), None);
        assert_eq!(pick("linux/riscv64", MULTI), None);
    }

    #[test]
    fn arm64_accepts_a_missing_variant() {
        assert_eq!(
            pick("linux/arm64/v8", &["linux/amd64", "linux/arm64"]).as_deref(),
            Some("linux/arm64")
        );
    }

    #[test]
    fn arm_falls_back_v7_v6_v5() {
        assert_eq!(
            pick("linux/arm/v7", &["linux/arm/v5", "linux/arm/v6"]).as_deref(),
            Some("linux/arm/v6")
        );
        assert_eq!(
            pick("linux/arm/v7", &["linux/arm/v5"]).as_deref(),
            Some("linux/arm/v5")
        );
        assert_eq!(pick("linux/arm/v6", &["linux/arm/v7"]), None);
        assert_eq!(
            pick("linux/arm/v7", &["linux/arm"]).as_deref(),
            Some("linux/arm")
        );
        // 32-bit userland on an ARMv8 CPU.
        assert_eq!(
            pick("linux/arm/v8", &["linux/arm/v7", "linux/arm64/v8"]).as_deref(),
            Some("linux/arm/v7")
        );
    }

    #[test]
    fn os_must_match() {
        assert_eq!(pick("linux/amd64", &["windows/amd64"]), None);
    }

    #[test]
    fn cpuinfo_variants() {
        assert_eq!(arm_variant_from_cpuinfo("CPU architecture: 7\n"), "v7");
        assert_eq!(arm_variant_from_cpuinfo("CPU architecture\t: 8\n"), "v7");
        assert_eq!(arm_variant_from_cpuinfo("CPU architecture: 6TEJ\n"), "v6");
        assert_eq!(arm_variant_from_cpuinfo(""), "v7");
    }

    #[test]
    fn host_is_sane() {
        let h = Platform::host();
        assert_eq!(h.os, "linux");
        assert!(h.accepts(&h));
    }

    #[test]
    fn parses_platform_flags() {
        assert_eq!(p("linux/aarch64").to_string(), "linux/arm64");
        assert!("linux".parse::<Platform>().is_err());
        assert!("linux/arm/v7/x".parse::<Platform>().is_err());
        assert!("Linux/amd64".parse::<Platform>().is_err());
    }
}
