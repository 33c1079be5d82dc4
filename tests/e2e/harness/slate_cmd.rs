//! The slate binary with more control than [`Slate::run`] gives: a config file of the
//! test's own, environment variables, standard input, and a child to kill.
//!
//! Every command gets `DOCKER_CONFIG` pointing at a directory inside the test's temp dir
//! (empty unless the test writes a `config.json` there), so the host's
//! `~/.docker/config.json` never leaks credentials into a test.

use std::io::Write;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

use super::slate::{Output, Slate, SLATE_BIN};

/// Replaces the test's `config.toml` (the one every slate command of `slate` reads); the
/// test's own state dir stays set unless `text` sets one.
pub fn write_config(slate: &Slate, text: &str) {
    let p = slate.dir().path().join("config.toml");
    let text = if text.contains("state_dir") {
        text.to_string()
    } else {
        format!("{}{text}", super::slate::state_dir_line(slate.dir().path()))
    };
    std::fs::write(&p, text).unwrap_or_else(|e| panic!("writing {}: {e}", p.display()));
}

/// The directory `DOCKER_CONFIG` points at for this test.
pub fn docker_config_dir(slate: &Slate) -> PathBuf {
    slate.dir().subdir("docker-config")
}

/// A `slate` command on the test's store and config, not yet started.
pub fn command(slate: &Slate, args: &[&str], log_level: &str) -> (Command, Vec<String>) {
    let mut all: Vec<String> = vec![
        "--root".into(),
        slate.root().display().to_string(),
        "--config".into(),
        slate.dir().path().join("config.toml").display().to_string(),
        "--log-level".into(),
        log_level.into(),
    ];
    all.extend(args.iter().map(|a| a.to_string()));
    let mut cmd = Command::new(SLATE_BIN);
    cmd.args(&all)
        .env_remove("RUST_LOG")
        .env_remove("SLATE_LOG")
        .env("DOCKER_CONFIG", docker_config_dir(slate));
    (cmd, all)
}

/// Runs slate to completion with extra environment and optional standard input.
pub fn run_with(
    slate: &Slate,
    args: &[&str],
    log_level: &str,
    env: &[(&str, &str)],
    stdin: Option<&str>,
) -> Output {
    let (mut cmd, all) = command(slate, args, log_level);
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("running {SLATE_BIN}: {e}"));
    if let Some(input) = stdin {
        let mut pipe = child.stdin.take().expect("stdin pipe");
        pipe.write_all(input.as_bytes()).expect("writing stdin");
    }
    let out = child.wait_with_output().expect("waiting for slate");
    Output {
        args: all,
        status: out.status,
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// A child slate killed (SIGKILL) and reaped on Drop if still running.
pub struct Running {
    child: Option<Child>,
}

impl Running {
    pub fn spawn(slate: &Slate, args: &[&str]) -> Running {
        let (mut cmd, _) = command(slate, args, "info");
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        Running {
            child: Some(
                cmd.spawn()
                    .unwrap_or_else(|e| panic!("running {SLATE_BIN}: {e}")),
            ),
        }
    }

    /// Whether the child has exited (it is reaped then).
    pub fn exited(&mut self) -> bool {
        match self.child.as_mut() {
            Some(c) => !matches!(c.try_wait(), Ok(None)),
            None => true,
        }
    }

    pub fn kill9(&mut self) {
        if let Some(c) = self.child.as_mut() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Waits for exit and returns the output.
    pub fn finish(mut self) -> Output {
        let child = self.child.take().expect("a running child");
        let out = child.wait_with_output().expect("waiting for slate");
        Output {
            args: Vec::new(),
            status: out.status,
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.kill9();
    }
}
