//! callplane: the application crate. It is the only layer that performs I/O.
