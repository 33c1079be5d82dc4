//! `slate login` / `slate logout`: credentials in slate's own docker-format file (0600).

use std::io::{BufRead, IsTerminal, Write};

use anyhow::{bail, Context};
use slate_image::auth::{store_credential, Credential};
use slate_image::reference::DOCKER_HUB;
use slate_image::registry::Client;

use crate::cli::{LoginArgs, LogoutArgs};
use crate::config::Settings;

pub fn login(settings: &Settings, args: LoginArgs) -> anyhow::Result<u8> {
    let registry = args.registry.unwrap_or_else(|| DOCKER_HUB.to_string());
    let username = match args.username {
        Some(u) => u,
        None => {
            if args.password_stdin || !std::io::stdin().is_terminal() {
                bail!("cannot log in to {registry}: give a user name with -u")
            }
            eprint!("Username: ");
            std::io::stderr().flush().ok();
            read_line()?
        }
    };
    let password = if args.password_stdin {
        read_line()?
    } else if std::io::stdin().is_terminal() {
        read_password()?
    } else {
        bail!("cannot log in to {registry}: pass the password on standard input with --password-stdin")
    };
    if password.is_empty() {
        bail!("cannot log in to {registry}: the password is empty");
    }
    let cred = Credential { username, password };
    let mut opts = settings.client_options()?;
    opts.credentials.insert(&registry, cred.clone());
    Client::new(opts)
        .check_login(&registry)
        .with_context(|| format!("cannot log in to {registry}"))?;
    let file = settings.auth_file();
    store_credential(&file, &registry, Some(&cred))?;
    eprintln!("Login Succeeded (credentials saved in {})", file.display());
    Ok(0)
}

pub fn logout(settings: &Settings, args: LogoutArgs) -> anyhow::Result<u8> {
    let registry = args.registry.unwrap_or_else(|| DOCKER_HUB.to_string());
    let file = settings.auth_file();
    if store_credential(&file, &registry, None)? {
        eprintln!("Removing login credentials for {registry}");
    } else {
        eprintln!("Not logged in to {registry}");
    }
    Ok(0)
}

fn read_line() -> anyhow::Result<String> {
    let mut s = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut s)
        .context("cannot read standard input")?;
    Ok(s.trim_end_matches(['\n', '\r']).to_string())
}

/// Reads a password from the terminal without echo.
fn read_password() -> anyhow::Result<String> {
    use nix::sys::termios::{tcgetattr, tcsetattr, LocalFlags, SetArg};
    let stdin = std::io::stdin();
    eprint!("Password: ");
    std::io::stderr().flush().ok();
    let old = tcgetattr(&stdin).context("cannot read terminal settings")?;
    let mut quiet = old.clone();
    quiet.local_flags.remove(LocalFlags::ECHO);
    tcsetattr(&stdin, SetArg::TCSANOW, &quiet).context("cannot turn off echo")?;
    let line = read_line();
    let _ = tcsetattr(&stdin, SetArg::TCSANOW, &old);
    eprintln!();
    line
}
