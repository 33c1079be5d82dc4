//! The command-line grammar (clap derive). Kept apart from the commands so `--help` reads
//! as one document, like docker's.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

#[derive(Debug, Parser)]
#[command(
    name = "slate",
    version,
    about = "Run OCI and Docker images on a fresh root filesystem every time, with no daemon",
    long_about = "slate pulls OCI/Docker images and runs each container on a fresh root filesystem \
under Linux namespaces and cgroups, with no daemon. Built for Raspberry Pi boards and small cloud VMs.",
    propagate_version = true
)]
pub struct Cli {
    /// Where images and layers are stored
    #[arg(long, global = true, env = "SLATE_ROOT", value_name = "DIR")]
    pub root: Option<PathBuf>,

    /// Configuration file
    #[arg(long, global = true, env = "SLATE_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Log level: error, warn, info, debug or trace
    #[arg(long, global = true, value_name = "LEVEL")]
    pub log_level: Option<String>,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Download an image from a registry
    Pull(PullArgs),
    /// List images
    Images(ImagesArgs),
    /// Remove one or more images
    Rmi(RmiArgs),
    /// Manage images
    #[command(subcommand)]
    Image(ImageCommand),
    /// Log in to a registry
    Login(LoginArgs),
    /// Log out from a registry
    Logout(LogoutArgs),
    /// Manage slate's store
    #[command(subcommand)]
    System(SystemCommand),
}

#[derive(Debug, Subcommand)]
pub enum SystemCommand {
    /// Show disk usage of images, layers, blobs and work in progress
    Df(DfArgs),
}

#[derive(Debug, Args)]
pub struct DfArgs {
    /// Output format
    #[arg(long, value_enum, default_value = "table")]
    pub format: Format,
}

#[derive(Debug, Args)]
pub struct PruneArgs {
    /// Remove all images, not only unused layers (none are in use by a container yet)
    #[arg(short, long)]
    pub all: bool,
    /// Do not prompt (slate never does; accepted for docker compatibility)
    #[arg(short, long)]
    pub force: bool,
}

#[derive(Debug, Subcommand)]
pub enum ImageCommand {
    /// Download an image from a registry
    Pull(PullArgs),
    /// List images
    #[command(alias = "list")]
    Ls(ImagesArgs),
    /// Remove one or more images
    Rm(RmiArgs),
    /// Show an image's manifest digest, platform, config and layers as JSON
    Inspect(InspectArgs),
    /// Mount an image's layers read-only at a directory, to look inside
    Mount(MountArgs),
    /// Unmount a directory mounted by `slate image mount`
    Unmount(UnmountArgs),
    /// Remove layers no image uses (with -a, all images too) and print the space freed
    Prune(PruneArgs),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Table,
    Json,
}

#[derive(Debug, Args)]
pub struct PullArgs {
    /// Print only the image digest
    #[arg(short, long)]
    pub quiet: bool,
    /// Platform to pull instead of this host's, e.g. linux/arm64 or linux/arm/v7
    #[arg(long, value_name = "OS/ARCH[/VARIANT]")]
    pub platform: Option<String>,
    /// Image reference, e.g. nginx:alpine or registry.example.com/app@sha256:...
    pub image: String,
}

#[derive(Debug, Args)]
pub struct ImagesArgs {
    /// Output format
    #[arg(long, value_enum, default_value = "table")]
    pub format: Format,
    /// Print only image digests
    #[arg(short, long)]
    pub quiet: bool,
}

#[derive(Debug, Args)]
pub struct RmiArgs {
    /// Images to remove (name[:tag], name@digest, or a digest prefix)
    #[arg(required = true)]
    pub images: Vec<String>,
}

#[derive(Debug, Args)]
pub struct InspectArgs {
    pub image: String,
}

#[derive(Debug, Args)]
pub struct MountArgs {
    pub image: String,
    /// Existing directory to mount at
    pub dir: PathBuf,
}

#[derive(Debug, Args)]
pub struct UnmountArgs {
    pub dir: PathBuf,
}

#[derive(Debug, Args)]
pub struct LoginArgs {
    /// User name
    #[arg(short, long)]
    pub username: Option<String>,
    /// Read the password from standard input
    #[arg(long)]
    pub password_stdin: bool,
    /// Registry host[:port]; Docker Hub when omitted
    pub registry: Option<String>,
}

#[derive(Debug, Args)]
pub struct LogoutArgs {
    /// Registry host[:port]; Docker Hub when omitted
    pub registry: Option<String>,
}
