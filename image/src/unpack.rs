//! Safe layer unpacking.
