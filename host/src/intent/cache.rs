//! Vector cache: every catalog text is embedded once, keyed by its content.
//!
//! The key of a vector is the sha256 of the text it was computed from, so an
//! unchanged entry is never embedded twice and a changed one is embedded again
//! without any invalidation logic. Vectors live in memory and, unless disabled,
//! in one file per model under the cache folder (`$XDG_CACHE_HOME/rayos/intent`,
//! `~/.cache/rayos/intent`). The file starts with the embedder's fingerprint and
//! the dimension; a file for another model, or a damaged one, is ignored (with a
//! warning) and rewritten. Saving writes a temporary file and renames it. Only
//! vectors used by the current catalog are saved, so the file does not grow
//! without bound as catalogs change.

use std::collections::{HashMap, HashSet};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::embed::{EmbedError, Embedder};

/// Errors of the vector cache.
#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    #[error(transparent)]
    Embed(#[from] EmbedError),
    #[error("cache file {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
}

const MAGIC: &[u8; 8] = b"RAYOSVC1";
/// Texts embedded per model call when filling the cache.
const BATCH: usize = 32;

type Key = [u8; 32];

fn key_of(text: &str) -> Key {
    Sha256::digest(text.as_bytes()).into()
}

/// Default folder of cache files.
pub fn default_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("XDG_CACHE_HOME").filter(|d| !d.is_empty()) {
        return PathBuf::from(d).join("rayos/intent");
    }
    match std::env::var_os("HOME").filter(|h| !h.is_empty()) {
        Some(h) => PathBuf::from(h).join(".cache/rayos/intent"),
        None => PathBuf::from("/var/cache/rayos/intent"),
    }
}

/// Counters of one session.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheStats {
    pub hits: usize,
    pub misses: usize,
    pub loaded: usize,
}

/// Content-keyed vectors of one embedder.
pub struct VectorCache {
    fingerprint: String,
    dim: usize,
    map: HashMap<Key, Vec<f32>>,
    used: HashSet<Key>,
    path: Option<PathBuf>,
    stats: CacheStats,
}

impl VectorCache {
    /// A cache in memory only.
    pub fn in_memory(fingerprint: &str, dim: usize) -> Self {
        Self {
            fingerprint: fingerprint.to_string(),
            dim,
            map: HashMap::new(),
            used: HashSet::new(),
            path: None,
            stats: CacheStats::default(),
        }
    }

    /// A cache backed by `<dir>/<name>.vectors`, loaded if present and valid.
    pub fn open(dir: &Path, name: &str, fingerprint: &str, dim: usize) -> Self {
        let path = dir.join(format!("{name}.vectors"));
        let mut c = Self::in_memory(fingerprint, dim);
        match read_file(&path, fingerprint, dim) {
            Ok(Some(map)) => {
                c.stats.loaded = map.len();
                c.map = map;
            }
            Ok(None) => {}
            Err(reason) => tracing::warn!("ignoring vector cache {}: {reason}; it will be rebuilt", path.display()),
        }
        c.path = Some(path);
        c
    }

    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    pub fn stats(&self) -> CacheStats {
        self.stats
    }

    /// Vectors for `texts`, embedding (in batches) only those not cached yet.
    pub fn vectors(&mut self, embedder: &dyn Embedder, texts: &[String]) -> Result<Vec<Vec<f32>>, CacheError> {
        let keys: Vec<Key> = texts.iter().map(|t| key_of(t)).collect();
        let mut missing: Vec<usize> = Vec::new();
        let mut queued = HashSet::new();
        for (i, k) in keys.iter().enumerate() {
            self.used.insert(*k);
            if self.map.contains_key(k) {
                self.stats.hits += 1;
            } else if queued.insert(*k) {
                missing.push(i);
            }
        }
        self.stats.misses += missing.len();
        // Similar lengths in one batch waste less padding.
        missing.sort_by_key(|&i| texts[i].len());
        for chunk in missing.chunks(BATCH) {
            let batch: Vec<&str> = chunk.iter().map(|&i| texts[i].as_str()).collect();
            let vecs = embedder.embed(&batch)?;
            if vecs.len() != batch.len() || vecs.iter().any(|v| v.len() != self.dim) {
                return Err(EmbedError::Shape {
                    got: vecs.len(),
                    want: batch.len(),
                    dim: vecs.first().map_or(0, |v| v.len()),
                    expected: self.dim,
                }
                .into());
            }
            for (&i, v) in chunk.iter().zip(vecs) {
                self.map.insert(keys[i], v);
            }
        }
        Ok(keys.iter().map(|k| self.map[k].clone()).collect())
    }

    /// Write the vectors used in this session to the cache file (if any),
    /// through a temporary file and a rename.
    pub fn save(&self) -> Result<(), CacheError> {
        let Some(path) = &self.path else {
            return Ok(());
        };
        let io_err = |source| CacheError::Io { path: path.clone(), source };
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(io_err)?;
        }
        let mut buf = Vec::with_capacity(64 + self.used.len() * (32 + 4 * self.dim));
        buf.extend_from_slice(MAGIC);
        buf.extend_from_slice(&(self.fingerprint.len() as u32).to_le_bytes());
        buf.extend_from_slice(self.fingerprint.as_bytes());
        buf.extend_from_slice(&(self.dim as u32).to_le_bytes());
        let mut keys: Vec<&Key> = self.used.iter().filter(|k| self.map.contains_key(*k)).collect();
        keys.sort();
        buf.extend_from_slice(&(keys.len() as u64).to_le_bytes());
        for k in keys {
            buf.extend_from_slice(k);
            for x in &self.map[k] {
                buf.extend_from_slice(&x.to_le_bytes());
            }
        }
        let dir = path.parent().unwrap_or(Path::new("."));
        let mut tmp = tempfile::NamedTempFile::new_in(dir).map_err(io_err)?;
        tmp.write_all(&buf).map_err(io_err)?;
        tmp.persist(path).map_err(|e| io_err(e.error))?;
        Ok(())
    }
}

fn read_file(path: &Path, fingerprint: &str, dim: usize) -> Result<Option<HashMap<Key, Vec<f32>>>, String> {
    let mut f = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e.to_string()),
    };
    let mut data = Vec::new();
    f.read_to_end(&mut data).map_err(|e| e.to_string())?;
    let mut p = 0usize;
    let mut take = |n: usize| -> Result<&[u8], String> {
        let s = data.get(p..p + n).ok_or("truncated")?;
        p += n;
        Ok(s)
    };
    if take(8)? != MAGIC {
        return Err("not a RayOS vector cache".into());
    }
    let flen = u32::from_le_bytes(take(4)?.try_into().unwrap()) as usize;
    if flen > 4096 {
        return Err("bad header".into());
    }
    let fp = take(flen)?.to_vec();
    let d = u32::from_le_bytes(take(4)?.try_into().unwrap()) as usize;
    if fp != fingerprint.as_bytes() || d != dim {
        // Another model's cache: start afresh, silently.
        return Ok(None);
    }
    let count = u64::from_le_bytes(take(8)?.try_into().unwrap()) as usize;
    let rec = 32 + 4 * dim;
    if count.checked_mul(rec).is_none_or(|n| n != data.len() - (8 + 4 + flen + 4 + 8)) {
        return Err(format!("{} bytes do not hold {count} vectors", data.len()));
    }
    let mut map = HashMap::with_capacity(count);
    let body = &data[8 + 4 + flen + 4 + 8..];
    for r in body.chunks_exact(rec) {
        let key: Key = r[..32].try_into().unwrap();
        let v: Vec<f32> = r[32..].chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().unwrap())).collect();
        if v.iter().any(|x| !x.is_finite()) {
            return Err("non-finite value".into());
        }
        map.insert(key, v);
    }
    Ok(Some(map))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::intent::embed::fake::HashEmbedder;

    fn texts(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn embeds_each_text_once_per_content() {
        let e = HashEmbedder::new();
        let mut c = VectorCache::in_memory(e.fingerprint(), e.dim());
        let a = c.vectors(&e, &texts(&["web browser", "text editor", "web browser"])).unwrap();
        assert_eq!(e.texts_embedded.get(), 2, "duplicate text embedded once");
        assert_eq!(a[0], a[2]);
        c.vectors(&e, &texts(&["text editor", "terminal"])).unwrap();
        assert_eq!(e.texts_embedded.get(), 3, "only the new text is embedded");
        assert_eq!(c.stats().misses, 3);
    }

    #[test]
    fn persists_and_reloads_by_fingerprint() {
        let tmp = tempfile::tempdir().unwrap();
        let e = HashEmbedder::new();
        let mut c = VectorCache::open(tmp.path(), "m", e.fingerprint(), e.dim());
        let v1 = c.vectors(&e, &texts(&["a web browser", "an image editor"])).unwrap();
        c.save().unwrap();
        let e2 = HashEmbedder::new();
        let mut c2 = VectorCache::open(tmp.path(), "m", e2.fingerprint(), e2.dim());
        assert_eq!(c2.stats().loaded, 2);
        let v2 = c2.vectors(&e2, &texts(&["a web browser", "an image editor"])).unwrap();
        assert_eq!(e2.texts_embedded.get(), 0, "all from the file");
        assert_eq!(v1, v2);
        // A changed entry text is a new key: embedded again.
        c2.vectors(&e2, &texts(&["a web browser for the internet"])).unwrap();
        assert_eq!(e2.texts_embedded.get(), 1);
        // Another fingerprint ignores the file.
        let c3 = VectorCache::open(tmp.path(), "m", "other-model", e.dim());
        assert_eq!(c3.stats().loaded, 0);
    }

    #[test]
    fn damaged_file_is_ignored_and_rewritten() {
        let tmp = tempfile::tempdir().unwrap();
        let e = HashEmbedder::new();
        let path = tmp.path().join("m.vectors");
        std::fs::write(&path, b"RAYOSVC1garbage").unwrap();
        let mut c = VectorCache::open(tmp.path(), "m", e.fingerprint(), e.dim());
        assert_eq!(c.stats().loaded, 0);
        c.vectors(&e, &texts(&["x y z"])).unwrap();
        c.save().unwrap();
        // Truncate the good file: refused, not half-read.
        let good = std::fs::read(&path).unwrap();
        std::fs::write(&path, &good[..good.len() - 3]).unwrap();
        assert_eq!(VectorCache::open(tmp.path(), "m", e.fingerprint(), e.dim()).stats().loaded, 0);
        std::fs::write(&path, &good).unwrap();
        assert_eq!(VectorCache::open(tmp.path(), "m", e.fingerprint(), e.dim()).stats().loaded, 1);
    }

    #[test]
    fn saves_only_vectors_in_use() {
        let tmp = tempfile::tempdir().unwrap();
        let e = HashEmbedder::new();
        let mut c = VectorCache::open(tmp.path(), "m", e.fingerprint(), e.dim());
        c.vectors(&e, &texts(&["one", "two"])).unwrap();
        c.save().unwrap();
        let mut c = VectorCache::open(tmp.path(), "m", e.fingerprint(), e.dim());
        c.vectors(&e, &texts(&["two"])).unwrap();
        c.save().unwrap();
        assert_eq!(VectorCache::open(tmp.path(), "m", e.fingerprint(), e.dim()).stats().loaded, 1);
    }
}
