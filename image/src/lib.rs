//! slate-image: image references, the registry client, manifests and platform choice,
//! the content store and safe layer unpacking. It never prints and never depends on
//! `slate-runtime`.

pub mod archive;
pub mod auth;
pub mod digest;
mod gzip;
pub mod manifest;
pub mod platform;
pub mod pull;
pub mod reference;
pub mod registry;
pub mod rootfs;
pub mod save;
pub mod store;
pub mod tarsplit;
pub mod unpack;
