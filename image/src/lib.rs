//! slate-image: image references, the registry client, manifests and platform choice,
//! the content store and safe layer unpacking. It never prints and never depends on
//! `slate-runtime`.

pub mod unpack;
