//! `slate exec`: runs a command in a running container.

use crate::config::Settings;

#[derive(Debug, clap::Args)]
pub struct ExecArgs {
    /// Keep standard input open
    #[arg(short, long)]
    pub interactive: bool,
    /// Allocate a pseudo-TTY
    #[arg(short, long)]
    pub tty: bool,
    /// User: name|uid[:group|gid]
    #[arg(short, long)]
    pub user: Option<String>,
    /// Set environment variables
    #[arg(short, long = "env", value_name = "NAME=VALUE")]
    pub env: Vec<String>,
    /// Working directory inside the container
    #[arg(short, long)]
    pub workdir: Option<String>,
    /// Container name or id (prefix)
    pub container: String,
    /// Command and arguments
    #[arg(required = true, trailing_var_arg = true, allow_hyphen_values = true)]
    pub command: Vec<String>,
}

pub fn run(_settings: &Settings, _args: ExecArgs) -> anyhow::Result<u8> {
    anyhow::bail!("exec: not yet")
}
