//! One module per verb. Each takes its parsed arguments and the settings and returns the
//! process exit status; errors carry context and are printed once, by `main`.

pub(crate) mod autoupdate;
pub(crate) mod cp;
pub(crate) mod doctor;
pub(crate) mod exec;
mod image;
pub(crate) mod inspect;
pub(crate) mod kill;
pub(crate) mod lifecycle;
pub(crate) mod load;
mod login;
pub(crate) mod logs;
pub(crate) mod network;
mod prune;
pub(crate) mod ps;
pub(crate) mod pull;
pub(crate) mod rm;
pub(crate) mod run;
pub(crate) mod save;
pub(crate) mod stats;
pub(crate) mod stop;
pub(crate) mod system;
pub(crate) mod systemd;
pub(crate) mod volume;
pub(crate) mod wait;

use std::fmt;

use anyhow::Context;
use slate_image::store::Store;

use crate::cli::{Cli, Command, ContainerCommand, ImageCommand, SystemCommand, SystemdCommand};
use crate::config::Settings;

/// An error that asks for a specific exit status (docker's 125/126/127 for `run`). It
/// prints as the whole chain of the error it wraps, so `main` still prints one line.
#[derive(Debug)]
pub struct ExitWith {
    pub code: u8,
    pub error: anyhow::Error,
}

impl ExitWith {
    pub fn wrap(code: u8, error: anyhow::Error) -> anyhow::Error {
        anyhow::Error::new(ExitWith { code, error })
    }
}

impl fmt::Display for ExitWith {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:#}", self.error)
    }
}

impl std::error::Error for ExitWith {}

pub fn dispatch(cli: Cli) -> anyhow::Result<u8> {
    let mut settings = Settings::load(cli.root.as_deref(), cli.config.as_deref())?;
    if let Some(d) = cli.state_dir {
        settings.state_dir = d;
    }
    if matches!(
        cli.command,
        Command::Run(_)
            | Command::Exec(_)
            | Command::Supervise(_)
            | Command::Start(_)
            | Command::Restart(_)
    ) {
        seal_binary(&settings)?;
    }
    match cli.command {
        Command::Run(a) => run::run(&settings, *a),
        Command::Pull(a) | Command::Image(ImageCommand::Pull(a)) => pull::run(&settings, a),
        Command::Images(a) | Command::Image(ImageCommand::Ls(a)) => image::list(&settings, a),
        Command::Rmi(a) | Command::Image(ImageCommand::Rm(a)) => image::remove(&settings, a),
        Command::Image(ImageCommand::Inspect(a)) => image::inspect(&settings, a),
        Command::Image(ImageCommand::Mount(a)) => image::mount(&settings, a),
        Command::Image(ImageCommand::Unmount(a)) => image::unmount(&settings, a),
        Command::Login(a) => login::login(&settings, a),
        Command::Logout(a) => login::logout(&settings, a),
        Command::Image(ImageCommand::Prune(a)) => prune::run(&settings, a),
        Command::System(SystemCommand::Df(a)) => system::df(&settings, a),
        Command::System(SystemCommand::Prune(a)) => system::prune(&settings, a),
        Command::System(SystemCommand::Info(a)) | Command::Info(a) => system::info(&settings, a),
        Command::Version(a) => system::version(a),
        Command::Container(ContainerCommand::Prune(_)) => {
            let freed = system::container_prune(&settings)?;
            println!(
                "Total reclaimed space: {}",
                crate::output::human_size(freed)
            );
            Ok(0)
        }
        Command::Container(ContainerCommand::Ls(a)) => ps::run(&settings, a),
        Command::Container(ContainerCommand::Rm(a)) => rm::run(&settings, a),
        Command::Container(ContainerCommand::Inspect(a)) => inspect::run(&settings, a),
        Command::Load(a) => load::run(&settings, a),
        Command::Save(a) => save::run(&settings, a),
        Command::Ps(a) => ps::run(&settings, a),
        Command::Logs(a) => logs::run(&settings, a),
        Command::Stop(a) => stop::run(&settings, a),
        Command::Start(a) => lifecycle::start(&settings, a),
        Command::Restart(a) => lifecycle::restart(&settings, a),
        Command::Pause(a) => lifecycle::pause(&settings, a, true),
        Command::Unpause(a) => lifecycle::pause(&settings, a, false),
        Command::Rename(a) => lifecycle::rename(&settings, a),
        Command::Stats(a) => stats::stats(&settings, a),
        Command::Top(a) => stats::top(&settings, a),
        Command::Kill(a) => kill::run(&settings, a),
        Command::Rm(a) => rm::run(&settings, a),
        Command::Exec(a) => exec::run(&settings, a),
        Command::Cp(a) => cp::run(&settings, a),
        Command::Inspect(a) => inspect::run(&settings, a),
        Command::Port(a) => network::port(&settings, a),
        Command::Network(c) => network::run(&settings, c),
        Command::Volume(c) => volume::run(&settings, c),
        Command::Wait(a) => wait::run(&settings, a),
        Command::Doctor(a) => doctor::run(&settings, a),
        Command::Systemd(SystemdCommand::Unit(a)) => systemd::run(*a),
        Command::AutoUpdate(a) => autoupdate::run(&settings, a),
        Command::Supervise(a) => crate::supervisor::run(&settings, &a.id),
        Command::Healthcheck(a) => crate::health::monitor(&settings, &a.id),
    }
}

/// CVE-2019-5736: commands that put a process into a container run from a sealed copy of
/// slate's binary, so that nothing the container reaches through `/proc/*/exe` can be
/// written (see `slate_runtime::seal`). Re-executes slate, before any thread exists, unless
/// it already runs from one.
pub fn seal_binary(settings: &Settings) -> anyhow::Result<()> {
    std::fs::create_dir_all(&settings.state_dir)
        .with_context(|| format!("cannot create {}", settings.state_dir.display()))?;
    let how = slate_runtime::seal::ensure(&settings.state_dir)?;
    tracing::debug!(?how, "running from a sealed copy of slate's binary");
    Ok(())
}

/// Opens the store, with a hint when the cause is the usual one.
pub fn open_store(settings: &Settings) -> anyhow::Result<Store> {
    let store = Store::open(&settings.root).with_context(|| {
        if nix::unistd::geteuid().is_root() {
            format!("cannot open the store at {}", settings.root.display())
        } else {
            format!(
                "cannot open the store at {} (slate needs root: run it with sudo)",
                settings.root.display()
            )
        }
    })?;
    Ok(store.with_policy(settings.store_policy()?))
}
