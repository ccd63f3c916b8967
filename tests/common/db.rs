//! Test databases: filled in by the store work.
