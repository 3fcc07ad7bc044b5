//! Identifiers: cluster id, topic ids, producer ids.

use std::hash::{BuildHasher, Hasher};
use std::path::{Path, PathBuf};

use crate::error::CoreError;
use sluice_storage::StorageError;

/// Producer ids handed out per persisted block; a restart skips the rest of a block.
const PRODUCER_ID_BLOCK: i64 = 1000;

/// 16 random bytes from the standard library's per-process random hasher keys.
pub fn random_bytes16() -> [u8; 16] {
    let mut out = [0u8; 16];
    for (i, chunk) in out.chunks_mut(8).enumerate() {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u128(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos()),
        );
        h.write_usize(i);
        chunk.copy_from_slice(&h.finish().to_be_bytes());
    }
    out
}

/// Kafka-style base64url id without padding (22 characters) for 16 bytes.
pub fn base64url(bytes: &[u8; 16]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::with_capacity(22);
    let mut acc: u32 = 0;
    let mut bits = 0;
    for &b in bytes {
        acc = (acc << 8) | u32::from(b);
        bits += 8;
        while bits >= 6 {
            bits -= 6;
            out.push(ALPHABET[((acc >> bits) & 0x3f) as usize] as char);
        }
    }
    if bits > 0 {
        out.push(ALPHABET[((acc << (6 - bits)) & 0x3f) as usize] as char);
    }
    out
}

/// Writes `bytes` to `path` atomically: temporary file, fsync, rename, fsync dir.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), CoreError> {
    let io = |source, path: &Path| {
        CoreError::Storage(StorageError::Io {
            path: path.to_path_buf(),
            source,
        })
    };
    let tmp = path.with_extension("tmp");
    {
        use std::io::Write;
        let mut f = std::fs::File::create(&tmp).map_err(|e| io(e, &tmp))?;
        f.write_all(bytes).map_err(|e| io(e, &tmp))?;
        f.sync_all().map_err(|e| io(e, &tmp))?;
    }
    std::fs::rename(&tmp, path).map_err(|e| io(e, path))?;
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| io(e, dir))?;
    }
    Ok(())
}

/// Hands out producer ids that are unique across restarts.
pub struct ProducerIdAllocator {
    path: PathBuf,
    next: i64,
    block_end: i64,
}

impl ProducerIdAllocator {
    /// Loads the allocator state from `path` (starting at 0 when absent).
    pub fn open(path: PathBuf) -> Result<Self, CoreError> {
        let next = match std::fs::read_to_string(&path) {
            Ok(s) => s.trim().parse::<i64>().unwrap_or(0),
            Err(_) => 0,
        };
        Ok(ProducerIdAllocator {
            path,
            next,
            block_end: next,
        })
    }

    /// Returns a fresh producer id; persists a new block first when needed.
    pub fn allocate(&mut self) -> Result<i64, CoreError> {
        if self.next >= self.block_end {
            let end = self.next + PRODUCER_ID_BLOCK;
            write_atomically(&self.path, end.to_string().as_bytes())?;
            self.block_end = end;
        }
        let id = self.next;
        self.next += 1;
        Ok(id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn producer_ids_stay_unique_across_reopen() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("producer_ids");
        let mut a = ProducerIdAllocator::open(path.clone()).unwrap();
        let first: Vec<i64> = (0..3).map(|_| a.allocate().unwrap()).collect();
        assert_eq!(first, vec![0, 1, 2]);
        let mut b = ProducerIdAllocator::open(path).unwrap();
        assert!(b.allocate().unwrap() > 2);
    }

    #[test]
    fn base64url_of_16_bytes_is_22_chars() {
        assert_eq!(base64url(&[0u8; 16]), "AAAAAAAAAAAAAAAAAAAAAA");
        assert_eq!(base64url(&[0xffu8; 16]).len(), 22);
    }
}
