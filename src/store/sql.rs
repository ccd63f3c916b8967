//! [`SqlStore`]: the [`Store`](super::Store) on SQLite or PostgreSQL through sqlx's `Any` driver.

/// Which database a [`SqlStore`] talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// The embedded default: a file, WAL mode.
    Sqlite,
    /// PostgreSQL by URL.
    Postgres,
}

/// The SQL store (placeholder until the implementation lands).
#[derive(Debug)]
pub struct SqlStore {
    backend: Backend,
}

impl SqlStore {
    /// Which database this is.
    pub fn backend(&self) -> Backend {
        self.backend
    }
}
