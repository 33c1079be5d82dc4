//! slate-image: image references, the registry client, manifests and platform choice,
//! the content store and safe layer unpacking. It never prints and never depends on
//! `slate-runtime`.

pub mod unpack;
pub mod auth;
pub mod digest;
pub mod manifest;
pub mod platform;
pub mod reference;
pub mod registry;
