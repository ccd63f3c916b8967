//! Reading a byte range of a file (the API's `Range: bytes=...` on recordings).
//!
//! Synchronous std I/O like the rest of `files`: callers on the runtime wrap each call in
//! `spawn_blocking`. A range is read in chunks ([`RangeReader`]) so a long recording is
//! streamed, never held in memory whole.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::path::Path;

/// Size of one chunk of [`RangeReader::next_chunk`].
pub const CHUNK: usize = 64 * 1024;

/// The length of a file in bytes.
pub fn file_len(path: &Path) -> io::Result<u64> {
    Ok(std::fs::metadata(path)?.len())
}

/// Reads `len` bytes from `start` of an open range, chunk by chunk.
#[derive(Debug)]
pub struct RangeReader {
    file: File,
    remaining: u64,
}

impl RangeReader {
    /// Opens `path` positioned at `start`, to read `len` bytes.
    pub fn open(path: &Path, start: u64, len: u64) -> io::Result<RangeReader> {
        let mut file = File::open(path)?;
        file.seek(SeekFrom::Start(start))?;
        Ok(RangeReader {
            file,
            remaining: len,
        })
    }

    /// Bytes still to read.
    pub fn remaining(&self) -> u64 {
        self.remaining
    }

    /// The next chunk (at most [`CHUNK`] bytes); `None` when the range is read. A file that
    /// shrank under us is an `UnexpectedEof` error rather than a short response.
    pub fn next_chunk(&mut self) -> io::Result<Option<Vec<u8>>> {
        if self.remaining == 0 {
            return Ok(None);
        }
        let want = usize::try_from(self.remaining).map_or(CHUNK, |r| r.min(CHUNK));
        let mut buf = vec![0u8; want];
        self.file.read_exact(&mut buf)?;
        self.remaining -= want as u64;
        Ok(Some(buf))
    }
}

/// Reads `len` bytes from `start` at once (small ranges, tests).
pub fn read_range(path: &Path, start: u64, len: u64) -> io::Result<Vec<u8>> {
    let mut reader = RangeReader::open(path, start, len)?;
    let mut out = Vec::new();
    while let Some(chunk) = reader.next_chunk()? {
        out.extend_from_slice(&chunk);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_exactly_the_requested_range_across_chunks() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("f.bin");
        let data: Vec<u8> = (0..(CHUNK * 2 + 100)).map(|i| (i % 251) as u8).collect();
        std::fs::write(&path, &data).expect("write");
        assert_eq!(file_len(&path).expect("len"), data.len() as u64);
        assert_eq!(read_range(&path, 10, 5).expect("read"), &data[10..15]);
        let big = read_range(&path, 7, (CHUNK + 50) as u64).expect("read");
        assert_eq!(big, &data[7..7 + CHUNK + 50]);
        assert_eq!(read_range(&path, 0, 0).expect("read"), Vec::<u8>::new());
    }

    #[test]
    fn a_range_past_the_end_is_an_error_not_a_short_read() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("f.bin");
        std::fs::write(&path, b"0123456789").expect("write");
        let err = read_range(&path, 5, 10).expect_err("past the end");
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
    }
}
