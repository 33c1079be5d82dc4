//! End-to-end tests of the real slate binary.
