//! Issue 3, credentials and TLS: a registry behind TLS (our own CA, given through the
//! config's `certs_dir`) and htpasswd auth. Without credentials the pull fails with a line
//! that says to run `slate login`; it works after `slate login --password-stdin` and with a
//! docker `config.json`; the password is never printed, not even at `--log-level debug`.

use std::os::unix::fs::PermissionsExt;

use crate::fixtures;
use crate::harness::fixture::Compression;
use crate::harness::registry::Registry;
use crate::harness::slate::{Output, Slate};
use crate::harness::slate_cmd::{docker_config_dir, run_with, write_config};
use crate::harness::store;
use crate::harness::tls::TlsRegistry;

const USER: &str = "e2e-user";
/// Distinctive, so any appearance in output is unmistakable.
const PASSWORD: &str = "pw-Zq7-never-print-me";

/// Standard base64 with padding, as docker's `auth` field (no dependency for ten lines).
fn b64(data: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(A[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn assert_no_password(out: &Output) {
    for (what, text) in [("stdout", &out.stdout), ("stderr", &out.stderr)] {
        assert!(
            !text.contains(PASSWORD),
            "the password appears on {what} of slate {}:\n{text}",
            out.args.join(" ")
        );
        let b64 = b64(format!("{USER}:{PASSWORD}").as_bytes());
        assert!(
            !text.contains(&b64),
            "the base64 credentials appear on {what}:\n{text}"
        );
    }
}

struct Setup {
    _plain: Registry,
    tls: TlsRegistry,
    reference: String,
    digest: String,
}

fn setup(label: &str) -> (Setup, Slate) {
    setup_with(label, false)
}

fn setup_with(label: &str, client_certs: bool) -> (Setup, Slate) {
    let plain = Registry::private();
    let fx = fixtures::small(label, "linux/amd64", Compression::Gzip);
    plain.push_image(&format!("auth/{label}"), "v1", &fx.image);
    let tls = TlsRegistry::start_with(&plain, USER, PASSWORD, client_certs);
    let slate = Slate::new(label);
    let certs = slate.dir().subdir("certs.d");
    tls.write_certs_dir(&certs);
    write_config(
        &slate,
        &format!("[registries]\ncerts_dir = \"{}\"\n", certs.display()),
    );
    let reference = format!("{}/auth/{label}:v1", tls.host());
    (
        Setup {
            _plain: plain,
            tls,
            reference,
            digest: fx.image.manifest_digest.clone(),
        },
        slate,
    )
}

#[test]
fn tls_registry_with_htpasswd_needs_login_and_then_pulls() {
    let (s, slate) = setup("login");
    let host = s.tls.host().to_string();

    // No credentials: 401, a clear line naming `slate login`, nothing listed.
    let out = run_with(&slate, &["pull", &s.reference], "debug", &[], None).failure(1);
    out.error_mentions(&["slate login", &host]);
    out.assert_each_cause_once();
    store::assert_not_listed(&slate, &format!("{host}/auth/login"));

    // A wrong password is refused and not saved; neither password is printed.
    let out = run_with(
        &slate,
        &["login", "-u", USER, "--password-stdin", &host],
        "debug",
        &[],
        Some("wrong-password-Qx9\n"),
    )
    .failure(1);
    assert!(
        !out.stderr.contains("wrong-password-Qx9"),
        "the wrong password is printed:\n{}",
        out.stderr
    );
    assert!(
        !slate.root().join("auth.json").exists() || {
            let text = std::fs::read_to_string(slate.root().join("auth.json")).unwrap_or_default();
            !text.contains(&host)
        }
    );

    let out = run_with(
        &slate,
        &["login", "-u", USER, "--password-stdin", &host],
        "debug",
        &[],
        Some(&format!("{PASSWORD}\n")),
    )
    .success();
    assert_no_password(&out);
    let auth = slate.root().join("auth.json");
    let mode = std::fs::metadata(&auth)
        .expect("slate login writes the auth file")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "auth file mode is {:o}", mode & 0o777);

    let out = run_with(&slate, &["pull", &s.reference], "debug", &[], None).success();
    assert_no_password(&out);
    assert_eq!(out.last_stdout_line(), s.digest);
    assert_eq!(slate.images().len(), 1);

    // Logged out: the credentials are gone and the registry refuses again.
    let out = run_with(&slate, &["logout", &host], "debug", &[], None).success();
    assert_no_password(&out);
    let text = std::fs::read_to_string(&auth).unwrap_or_default();
    assert!(!text.contains(&host), "logout left the entry: {text}");
    let out = run_with(&slate, &["rmi", &s.reference], "info", &[], None).success();
    assert_no_password(&out);
    run_with(&slate, &["pull", &s.reference], "info", &[], None)
        .failure(1)
        .error_mentions(&["slate login"]);
}

#[test]
fn docker_config_json_credentials_are_used() {
    let (s, slate) = setup("docker-config");
    let auth = b64(format!("{USER}:{PASSWORD}").as_bytes());
    std::fs::write(
        docker_config_dir(&slate).join("config.json"),
        format!(
            r#"{{"auths":{{"{}":{{"auth":"{auth}"}}}},"credsStore":"none"}}"#,
            s.tls.host()
        ),
    )
    .expect("writing config.json");
    let out = run_with(&slate, &["pull", &s.reference], "debug", &[], None).success();
    assert_no_password(&out);
    assert_eq!(out.last_stdout_line(), s.digest);
    assert!(
        !slate.root().join("auth.json").exists(),
        "a pull with docker's credentials wrote slate's own auth file"
    );
}

#[test]
fn without_the_ca_the_tls_registry_is_refused_clearly() {
    let (s, slate) = setup("no-ca");
    write_config(
        &slate,
        "# no certs_dir\n[registries]\ncerts_dir = \"/nonexistent\"\n",
    );
    let out = run_with(&slate, &["pull", &s.reference], "info", &[], None).failure(1);
    let line = out.error_line().to_lowercase();
    assert!(
        line.contains("certificate") || line.contains("tls") || line.contains("unknownissuer"),
        "the error does not say the certificate is not trusted:\n  {line}"
    );
}

#[test]
fn a_registry_that_demands_a_client_certificate_gets_the_one_in_certs_dir() {
    let (s, slate) = setup_with("client-cert", true);
    let certs = slate.dir().path().join("certs.d").join(s.tls.host());
    assert!(certs.join("client.cert").is_file() && certs.join("client.key").is_file());
    let auth = b64(format!("{USER}:{PASSWORD}").as_bytes());
    std::fs::write(
        docker_config_dir(&slate).join("config.json"),
        format!(r#"{{"auths":{{"{}":{{"auth":"{auth}"}}}}}}"#, s.tls.host()),
    )
    .expect("writing config.json");
    let out = run_with(&slate, &["pull", &s.reference], "info", &[], None).success();
    assert_eq!(out.last_stdout_line(), s.digest);

    // Without the client certificate the TLS handshake is refused, with a clear error.
    std::fs::remove_file(certs.join("client.cert")).expect("removing client.cert");
    std::fs::remove_file(certs.join("client.key")).expect("removing client.key");
    run_with(&slate, &["rmi", &s.reference], "info", &[], None).success();
    let out = run_with(&slate, &["pull", &s.reference], "info", &[], None).failure(1);
    out.error_mentions(&[s.tls.host()]);
    out.assert_each_cause_once();
}
