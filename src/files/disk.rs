//! Free space of the filesystem that holds the data directory (`GET /readyz`).

use std::io;
use std::path::Path;

/// Bytes available to an unprivileged writer on the filesystem holding `path`
/// (`f_bavail × f_frsize`: the root-reserved blocks are not ours to fill with recordings).
pub fn free_bytes(path: &Path) -> io::Result<u64> {
    let st = rustix::fs::statvfs(path).map_err(io::Error::from)?;
    Ok(st.f_bavail.saturating_mul(st.f_frsize))
}

/// Reads one dashboard file from a directory (`serve --dashboard-dir`, for working on the
/// pages without rebuilding). `name` is one of the dashboard's own file names, never a path
/// from a request; a file larger than 4 MiB is an error.
pub async fn read_dev_asset(dir: &Path, name: &str) -> io::Result<Vec<u8>> {
    use std::io::Read;
    if name.contains('/') || name.contains("..") {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "not a file name",
        ));
    }
    let path = dir.join(name);
    const MAX: u64 = 4 << 20;
    tokio::task::spawn_blocking(move || {
        let mut body = Vec::new();
        std::fs::File::open(path)?
            .take(MAX + 1)
            .read_to_end(&mut body)?;
        if body.len() as u64 > MAX {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "larger than 4 MiB: not a dashboard file",
            ));
        }
        Ok(body)
    })
    .await
    .map_err(io::Error::other)?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn free_bytes_of_a_temp_dir_is_positive_and_a_missing_path_is_an_error() {
        let dir = std::env::temp_dir();
        assert!(free_bytes(&dir).expect("statvfs of the temp dir") > 0);
        assert!(free_bytes(&dir.join("no/such/dir/at/all")).is_err());
    }
}
