//! API test state: filled in by the API work.
