//! The embedder seam: what the engine needs from a sentence-embedding model.
//!
//! The engine only needs "text in, unit vector out", so it is written against
//! the [`Embedder`] trait: the real model ([`super::bert::BertEmbedder`]) in
//! production, a tiny hashing embedder in unit tests, so the engine's logic
//! (scoring, thresholds, NoDisplay, arguments, cache) is tested without a model.

/// Errors of an embedder.
#[derive(Debug, thiserror::Error)]
pub enum EmbedError {
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    #[error("model: {0}")]
    Model(String),
    #[error("embedder returned {got} vectors of dimension {dim} for {want} texts (expected dimension {expected})")]
    Shape { got: usize, want: usize, dim: usize, expected: usize },
}

/// A sentence-embedding model.
pub trait Embedder {
    /// Identifies the model and everything that changes its vectors (weights,
    /// pooling, token limit). Cached vectors are keyed by it.
    fn fingerprint(&self) -> &str;
    /// Length of every vector.
    fn dim(&self) -> usize;
    /// One L2-normalised vector per text, in order.
    fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, EmbedError>;
}

/// Dot product of two equally long slices (cosine for unit vectors).
#[inline]
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    // Eight independent accumulators let the compiler use full-width SIMD
    // without reassociating floats itself.
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    let mut acc = [0f32; 8];
    let mut ca = a.chunks_exact(8);
    let mut cb = b.chunks_exact(8);
    for (x, y) in (&mut ca).zip(&mut cb) {
        for j in 0..8 {
            acc[j] += x[j] * y[j];
        }
    }
    let mut s = acc.iter().sum::<f32>();
    for (x, y) in ca.remainder().iter().zip(cb.remainder()) {
        s += x * y;
    }
    s
}

/// Scale a vector to unit length (left as is if it is all zeros).
pub fn normalize(v: &mut [f32]) {
    let n = dot(v, v).sqrt();
    if n > 0.0 {
        v.iter_mut().for_each(|x| *x /= n);
    }
}

#[cfg(test)]
pub(crate) mod fake {
    //! A deterministic bag-of-words embedder for unit tests: each lower-cased
    //! word (and a crude stem) is hashed to a signed bucket. Texts that share
    //! words are similar; others are near orthogonal.
    use super::*;
    use std::cell::Cell;

    pub struct HashEmbedder {
        pub dim: usize,
        pub calls: Cell<usize>,
        pub texts_embedded: Cell<usize>,
    }

    impl HashEmbedder {
        pub fn new() -> Self {
            Self { dim: 256, calls: Cell::new(0), texts_embedded: Cell::new(0) }
        }
    }

    fn h(s: &str) -> u64 {
        // FNV-1a
        let mut x: u64 = 0xcbf29ce484222325;
        for b in s.bytes() {
            x ^= b as u64;
            x = x.wrapping_mul(0x100000001b3);
        }
        x
    }

    impl Embedder for HashEmbedder {
        fn fingerprint(&self) -> &str {
            "hash-embedder-v1"
        }
        fn dim(&self) -> usize {
            self.dim
        }
        fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, EmbedError> {
            self.calls.set(self.calls.get() + 1);
            self.texts_embedded.set(self.texts_embedded.get() + texts.len());
            Ok(texts
                .iter()
                .map(|t| {
                    let mut v = vec![0f32; self.dim];
                    for w in t.to_lowercase().split(|c: char| !c.is_alphanumeric()).filter(|w| w.len() > 2) {
                        let stem: String = w.chars().take(5).collect();
                        for key in [w.to_string(), format!("stem:{stem}")] {
                            let x = h(&key);
                            let sign = if x >> 63 == 0 { 1.0 } else { -1.0 };
                            v[(x % self.dim as u64) as usize] += sign;
                        }
                    }
                    normalize(&mut v);
                    v
                })
                .collect())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dot_and_normalize() {
        let mut v = vec![3.0, 4.0, 0.0, 0.0, 0.0];
        normalize(&mut v);
        assert!((dot(&v, &v) - 1.0).abs() < 1e-6);
        assert!((v[0] - 0.6).abs() < 1e-6);
        let mut z = vec![0.0; 3];
        normalize(&mut z);
        assert_eq!(z, [0.0; 3]);
    }

    #[test]
    fn fake_embedder_is_deterministic_and_similar_on_shared_words() {
        let e = fake::HashEmbedder::new();
        let v = e.embed(&["web browser", "browse the web", "calculator"]).unwrap();
        assert!(dot(&v[0], &v[1]) > dot(&v[0], &v[2]));
        assert_eq!(e.embed(&["web browser"]).unwrap()[0], v[0]);
    }
}
