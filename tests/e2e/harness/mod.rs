//! The end-to-end harness: a real registry on loopback, fixtures built byte by byte, the real
//! slate binary on a store of each test's own, and tree comparisons with readable diffs.
//! Later tests (of `slate run`) reuse all of it.

// The harness serves later test sets (`slate run`) too: not every helper is used by every set.
#![allow(dead_code)]

pub mod fixture;
pub mod flaky_proxy;
pub mod registry;
pub mod run_image;
pub mod slate;
pub mod slate_cmd;
pub mod store;
pub mod tar_writer;
pub mod tls;
pub mod tree;
pub mod umoci;
