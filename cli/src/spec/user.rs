//! `--user` / the image's User -> uid, gid, supplementary groups and home, resolved through the
//! image's own `/etc/passwd` and `/etc/group` the way docker (runc's `GetExecUser`) does.
//!
//! The files come from the image and may be hostile: a line that does not parse is skipped,
//! ids above 2^31-1 are refused, and nothing here panics or allocates more than the files do.

use super::SpecError;

/// Highest id runc accepts (ids are signed 32-bit in much of userland).
const MAX_ID: u32 = i32::MAX as u32;

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ResolvedUser {
    pub uid: u32,
    pub gid: u32,
    pub additional_gids: Vec<u32>,
    /// For `HOME` when neither the image nor the flags set it (runc does the same).
    pub home: String,
}

#[derive(Debug)]
struct PasswdEntry {
    name: String,
    uid: u32,
    gid: u32,
    home: String,
}

#[derive(Debug)]
struct GroupEntry {
    name: String,
    gid: u32,
    members: Vec<String>,
}

fn parse_id(s: &str) -> Option<u32> {
    // Only plain decimal: "+1", " 1" or "0x1" are not ids.
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse::<u32>().ok().filter(|&n| n <= MAX_ID)
}

fn lines(file: &[u8]) -> impl Iterator<Item = String> + '_ {
    file.split(|&b| b == b'\n').filter_map(|l| {
        let l = String::from_utf8_lossy(l);
        let l = l.trim();
        // Comments, blanks, and NIS compat entries (`+name`, `-name`) are not users.
        if l.is_empty() || l.starts_with('#') || l.starts_with('+') || l.starts_with('-') {
            None
        } else {
            Some(l.to_owned())
        }
    })
}

fn parse_passwd(file: &[u8]) -> Vec<PasswdEntry> {
    lines(file)
        .filter_map(|l| {
            // name:password:uid:gid:gecos:home:shell (trailing fields may be missing).
            let f: Vec<&str> = l.split(':').collect();
            if f.len() < 4 || f[0].is_empty() {
                return None;
            }
            Some(PasswdEntry {
                name: f[0].to_owned(),
                uid: parse_id(f[2])?,
                gid: parse_id(f[3])?,
                home: f.get(5).copied().unwrap_or("").to_owned(),
            })
        })
        .collect()
}

fn parse_group(file: &[u8]) -> Vec<GroupEntry> {
    lines(file)
        .filter_map(|l| {
            // name:password:gid:member,member
            let f: Vec<&str> = l.split(':').collect();
            if f.len() < 3 || f[0].is_empty() {
                return None;
            }
            Some(GroupEntry {
                name: f[0].to_owned(),
                gid: parse_id(f[2])?,
                members: f
                    .get(3)
                    .map(|m| {
                        m.split(',')
                            .map(str::trim)
                            .filter(|m| !m.is_empty())
                            .map(str::to_owned)
                            .collect()
                    })
                    .unwrap_or_default(),
            })
        })
        .collect()
}

/// Resolves `spec` (`name`, `uid`, `name:group`, `uid:gid`, `name:gid`, `uid:group`; `None`
/// for root) against the image's files.
pub(crate) fn resolve(
    spec: Option<&str>,
    read_image_file: &dyn Fn(&str) -> Option<Vec<u8>>,
) -> Result<ResolvedUser, SpecError> {
    let spec = spec.unwrap_or_default();
    if spec.contains('\0') || spec.split(':').count() > 2 {
        return Err(SpecError::User {
            value: spec.to_owned(),
            reason: "expected name|uid[:group|gid]",
        });
    }
    let (user_arg, group_arg) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g).filter(|g| !g.is_empty())),
        None => (spec, None),
    };
    let out_of_range = || SpecError::User {
        value: spec.to_owned(),
        reason: "ids must be between 0 and 2147483647",
    };
    let numeric_user = user_arg.bytes().all(|b| b.is_ascii_digit()) && !user_arg.is_empty();
    if numeric_user && parse_id(user_arg).is_none() {
        return Err(out_of_range());
    }
    if let Some(g) = group_arg {
        if g.bytes().all(|b| b.is_ascii_digit()) && parse_id(g).is_none() {
            return Err(out_of_range());
        }
    }

    // Files are read only when a name has to be resolved or groups looked up; a plain
    // `uid:gid` (or root by default) still reads them for root's home and groups, as runc.
    let passwd = read_image_file("/etc/passwd")
        .map(|f| parse_passwd(&f))
        .unwrap_or_default();

    // An empty user means root, as in runc.
    let user_key = if user_arg.is_empty() { "0" } else { user_arg };
    let matched = passwd
        .iter()
        .find(|p| p.name == user_key || (parse_id(user_key) == Some(p.uid)));
    let (uid, mut gid, home, matched_name) = match matched {
        Some(p) => (p.uid, p.gid, p.home.clone(), Some(p.name.clone())),
        None => match parse_id(user_key) {
            // A uid the image does not know is fine: gid 0 and home "/", as docker.
            Some(uid) => (uid, 0, String::new(), None),
            None => return Err(SpecError::UserNotFound(user_arg.to_owned())),
        },
    };

    let mut additional_gids = Vec::new();
    if group_arg.is_some() || matched_name.is_some() {
        let groups = read_image_file("/etc/group")
            .map(|f| parse_group(&f))
            .unwrap_or_default();
        match group_arg {
            Some(g) => {
                // Explicit group: it becomes the primary one; supplementary groups only come
                // with the implicit form (runc's rule).
                gid = match groups
                    .iter()
                    .find(|e| e.name == g || parse_id(g) == Some(e.gid))
                {
                    Some(e) => e.gid,
                    None => parse_id(g).ok_or_else(|| SpecError::GroupNotFound(g.to_owned()))?,
                };
            }
            None => {
                if let Some(name) = &matched_name {
                    for e in groups
                        .iter()
                        .filter(|e| e.members.iter().any(|m| m == name))
                    {
                        if !additional_gids.contains(&e.gid) {
                            additional_gids.push(e.gid);
                        }
                    }
                }
            }
        }
    }
    // The primary group is a supplementary one too (docker and containerd since
    // CVE-2022-2989/CVE-2023-25173): a file denied to the primary group by a negative group
    // permission must not become readable by dropping it with setgroups.
    if !additional_gids.contains(&gid) {
        additional_gids.insert(0, gid);
    }
    let home = if home.is_empty() || !home.starts_with('/') {
        "/".to_owned()
    } else {
        home
    };
    Ok(ResolvedUser {
        uid,
        gid,
        additional_gids,
        home,
    })
}

/// `--group-add`: group names from the image's /etc/group, or gids.
pub(crate) fn group_add(
    groups: &[String],
    read_image_file: &dyn Fn(&str) -> Option<Vec<u8>>,
) -> Result<Vec<u32>, SpecError> {
    if groups.is_empty() {
        return Ok(Vec::new());
    }
    let entries = read_image_file("/etc/group")
        .map(|f| parse_group(&f))
        .unwrap_or_default();
    groups
        .iter()
        .map(|g| match entries.iter().find(|e| &e.name == g) {
            Some(e) => Ok(e.gid),
            None => parse_id(g).ok_or_else(|| SpecError::GroupNotFound(g.clone())),
        })
        .collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const PASSWD: &str = "\
root:x:0:0:root:/root:/bin/sh
# a comment
daemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin
app:x:1000:1000:App,,,:/home/app:/bin/sh
broken line without colons
short:x:5
neg:x:-1:0::/:/bin/sh
huge:x:99999999999:0::/:/bin/sh
+nis::0:0:::
nohome:x:1001:1001
";
    const GROUP: &str = "\
root:x:0:
wheel:x:10:root,app
audio:x:29:app
video:x:44: daemon , app
staff:x:50:
bad:x:notanumber:app
app:x:1000:
";

    fn files(path: &str) -> Option<Vec<u8>> {
        match path {
            "/etc/passwd" => Some(PASSWD.as_bytes().to_vec()),
            "/etc/group" => Some(GROUP.as_bytes().to_vec()),
            _ => None,
        }
    }

    fn none(_: &str) -> Option<Vec<u8>> {
        None
    }

    #[test]
    fn root_by_default_with_its_groups_and_home() {
        let u = resolve(None, &files).unwrap();
        assert_eq!((u.uid, u.gid), (0, 0));
        assert_eq!(u.additional_gids, vec![0, 10]);
        assert_eq!(u.home, "/root");
    }

    #[test]
    fn name_resolves_uid_gid_and_supplementary_groups() {
        let u = resolve(Some("app"), &files).unwrap();
        assert_eq!((u.uid, u.gid), (1000, 1000));
        assert_eq!(u.additional_gids, vec![1000, 10, 29, 44]);
        assert_eq!(u.home, "/home/app");
    }

    #[test]
    fn uid_found_in_passwd_gets_its_gid_and_groups() {
        let u = resolve(Some("1000"), &files).unwrap();
        assert_eq!((u.uid, u.gid), (1000, 1000));
        assert_eq!(u.additional_gids, vec![1000, 10, 29, 44]);
    }

    #[test]
    fn unknown_uid_is_fine_with_gid_0() {
        let u = resolve(Some("4242"), &files).unwrap();
        assert_eq!((u.uid, u.gid), (4242, 0));
        assert_eq!(u.additional_gids, vec![0]);
        assert_eq!(u.home, "/");
        let u = resolve(Some("4242"), &none).unwrap();
        assert_eq!((u.uid, u.gid), (4242, 0));
    }

    #[test]
    fn unknown_name_is_docker_error() {
        let e = resolve(Some("nobody"), &files).unwrap_err();
        assert_eq!(
            e.to_string(),
            "unable to find user nobody: no matching entries in passwd file"
        );
        assert!(matches!(
            resolve(Some("app"), &none),
            Err(SpecError::UserNotFound(_))
        ));
    }

    #[test]
    fn group_add_takes_names_and_gids() {
        let g = group_add(&["audio".into(), "4444".into()], &files).unwrap();
        assert_eq!(g, vec![29, 4444]);
        assert!(matches!(
            group_add(&["nosuch".into()], &files),
            Err(SpecError::GroupNotFound(_))
        ));
    }

    #[test]
    fn explicit_group_forms() {
        // name:group
        let u = resolve(Some("app:staff"), &files).unwrap();
        assert_eq!((u.uid, u.gid), (1000, 50));
        assert_eq!(
            u.additional_gids,
            vec![50],
            "explicit group: only itself as supplementary"
        );
        // uid:gid, neither in the files
        let u = resolve(Some("4242:4343"), &files).unwrap();
        assert_eq!((u.uid, u.gid), (4242, 4343));
        // name:gid
        let u = resolve(Some("app:29"), &files).unwrap();
        assert_eq!((u.uid, u.gid), (1000, 29));
        // uid:group
        let u = resolve(Some("4242:wheel"), &files).unwrap();
        assert_eq!((u.uid, u.gid), (4242, 10));
        // unknown group name
        let e = resolve(Some("app:nogroup"), &files).unwrap_err();
        assert_eq!(
            e.to_string(),
            "unable to find group nogroup: no matching entries in group file"
        );
        // trailing colon = no group
        let u = resolve(Some("app:"), &files).unwrap();
        assert_eq!(u.gid, 1000);
    }

    #[test]
    fn malformed_lines_are_skipped() {
        assert!(matches!(
            resolve(Some("broken line without colons"), &files),
            Err(SpecError::UserNotFound(_))
        ));
        assert!(matches!(
            resolve(Some("short"), &files),
            Err(SpecError::UserNotFound(_))
        ));
        assert!(matches!(
            resolve(Some("neg"), &files),
            Err(SpecError::UserNotFound(_))
        ));
        assert!(matches!(
            resolve(Some("huge"), &files),
            Err(SpecError::UserNotFound(_))
        ));
        assert!(matches!(
            resolve(Some("+nis"), &files),
            Err(SpecError::UserNotFound(_))
        ));
        let u = resolve(Some("nohome"), &files).unwrap();
        assert_eq!((u.uid, u.gid, u.home.as_str()), (1001, 1001, "/"));
    }

    #[test]
    fn bad_specs_are_errors() {
        for s in ["a:b:c", "99999999999", "1:99999999999"] {
            assert!(
                matches!(resolve(Some(s), &files), Err(SpecError::User { .. })),
                "{s}"
            );
        }
    }

    #[test]
    fn hostile_files_never_panic() {
        let junk: Vec<Vec<u8>> = vec![
            vec![0xff, 0xfe, b':', b':', b'\n', 0],
            b"::::::::\n:x:0:0\n\n\n".to_vec(),
            b"a:x:0:0:\xff\xff:/h\xff:/s\n".to_vec(),
            vec![b':'; 10_000],
            b"g:x:1:".iter().cycle().take(50_000).copied().collect(),
        ];
        for j in &junk {
            let read = |_: &str| Some(j.clone());
            let _ = resolve(Some("a"), &read);
            let _ = resolve(Some("0:g"), &read);
            let _ = resolve(None, &read);
        }
    }
}
