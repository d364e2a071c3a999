//! The real embedder: all-MiniLM-L6-v2 run with candle on the CPU.
//!
//! Loading reads the store only (no hub): `config.json` (BERT shape),
//! `tokenizer.json` (WordPiece, lower-casing), `model.safetensors` (F32 weights,
//! read into memory: no mmap, so no unsafe), and the sentence-transformers
//! module files, which must say what this code does: mean pooling over the
//! tokens (`1_Pooling/config.json`) followed by L2 normalisation
//! (`modules.json`). A model folder that says otherwise is refused rather than
//! silently embedded the wrong way.
//!
//! Inference: the tokenizer's own fixed 128-token padding is turned off; one
//! text runs unpadded, a batch is padded to its longest text with an attention
//! mask, and pooling averages only the real tokens. Texts are truncated to
//! [`MAX_TOKENS`] tokens (requests are short; catalog texts rarely reach it).

use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::bert::{BertModel, Config, DTYPE};
use tokenizers::{Tokenizer, TruncationParams};

use super::embed::{EmbedError, Embedder};
use crate::models::ModelSpec;

/// Errors of loading the model.
#[derive(Debug, thiserror::Error)]
pub enum BertError {
    #[error("{path}: {reason}")]
    File { path: PathBuf, reason: String },
    #[error("{path}: the model asks for {what}, which this embedder does not implement")]
    Unsupported { path: PathBuf, what: String },
}

/// The environment variable candle reads, on every matrix multiply, for the
/// number of CPU threads to use (rayon's own name for its pool size).
pub const THREADS_ENV: &str = "RAYON_NUM_THREADS";

/// Fix the number of CPU threads candle computes with, once, and return it.
///
/// Unless [`THREADS_ENV`] is set, candle works out its thread count again on
/// every matrix multiply by counting physical cores in `/proc/cpuinfo`: about
/// 47 reads of that file per embedded request, near a quarter of a short
/// request's time on a 2-core machine. This sets [`THREADS_ENV`] to the same
/// count (physical cores, capped by the CPUs this process may run on), so it
/// is read from the environment instead. A value the user set is kept.
///
/// Call it first thing in `main`, before any other thread exists: it changes
/// the process environment.
pub fn pin_cpu_threads() -> usize {
    let set = std::env::var(THREADS_ENV).ok();
    let allowed = std::thread::available_parallelism().map_or(1, |n| n.get());
    match threads_to_pin(set.as_deref(), num_cpus::get_physical, allowed) {
        Ok(n) => n,
        Err(n) => {
            std::env::set_var(THREADS_ENV, n.to_string());
            n
        }
    }
}

/// `Ok(n)`: the user's valid setting, kept; `Err(n)`: the count to set.
fn threads_to_pin(set: Option<&str>, physical: impl FnOnce() -> usize, allowed: usize) -> Result<usize, usize> {
    match set.and_then(|v| v.trim().parse::<usize>().ok()) {
        Some(n) if n > 0 => Ok(n),
        _ => Err(physical().clamp(1, allowed.max(1))),
    }
}

/// Longest input, in tokens, the embedder feeds the model.
pub const MAX_TOKENS: usize = 128;

/// all-MiniLM-L6-v2 (or any BERT sentence-transformer with mean pooling).
pub struct BertEmbedder {
    model: BertModel,
    tokenizer: Tokenizer,
    device: Device,
    dim: usize,
    fingerprint: String,
}

fn read(path: &Path) -> Result<Vec<u8>, BertError> {
    std::fs::read(path).map_err(|e| BertError::File { path: path.to_path_buf(), reason: e.to_string() })
}

fn json(path: &Path) -> Result<serde_json::Value, BertError> {
    serde_json::from_slice(&read(path)?)
        .map_err(|e| BertError::File { path: path.to_path_buf(), reason: format!("not valid JSON: {e}") })
}

impl BertEmbedder {
    /// Load the model from its store folder. `spec` provides the pinned
    /// checksum that goes into the fingerprint (and so into cache keys).
    pub fn load(dir: &Path, spec: &ModelSpec) -> Result<Self, BertError> {
        // Pooling and normalisation must be what we implement.
        let pooling_path = dir.join("1_Pooling/config.json");
        let pooling = json(&pooling_path)?;
        if pooling.get("pooling_mode_mean_tokens").and_then(|v| v.as_bool()) != Some(true)
            || ["pooling_mode_cls_token", "pooling_mode_max_tokens", "pooling_mode_mean_sqrt_len_tokens"]
                .iter()
                .any(|k| pooling.get(*k).and_then(|v| v.as_bool()) == Some(true))
        {
            return Err(BertError::Unsupported {
                path: pooling_path,
                what: "a pooling other than mean over tokens".into(),
            });
        }
        let modules_path = dir.join("modules.json");
        let modules = json(&modules_path)?;
        let normalize = modules.as_array().is_some_and(|a| {
            a.iter().any(|m| m.get("type").and_then(|t| t.as_str()).is_some_and(|t| t.ends_with(".Normalize")))
        });
        if !normalize {
            return Err(BertError::Unsupported {
                path: modules_path,
                what: "no Normalize module (unnormalised embeddings)".into(),
            });
        }

        let config_path = dir.join("config.json");
        let config: Config = serde_json::from_slice(&read(&config_path)?)
            .map_err(|e| BertError::File { path: config_path.clone(), reason: format!("not a BERT config: {e}") })?;

        let tok_path = dir.join("tokenizer.json");
        let mut tokenizer = Tokenizer::from_file(&tok_path)
            .map_err(|e| BertError::File { path: tok_path.clone(), reason: e.to_string() })?;
        tokenizer.with_padding(None);
        tokenizer
            .with_truncation(Some(TruncationParams { max_length: MAX_TOKENS, ..Default::default() }))
            .map_err(|e| BertError::File { path: tok_path.clone(), reason: e.to_string() })?;

        let weights_path = dir.join("model.safetensors");
        let device = Device::Cpu;
        let bytes = read(&weights_path)?;
        let vb = VarBuilder::from_buffered_safetensors(bytes, DTYPE, &device)
            .map_err(|e| BertError::File { path: weights_path.clone(), reason: e.to_string() })?;
        let model = BertModel::load(vb, &config).map_err(|e| BertError::File {
            path: weights_path.clone(),
            reason: format!("not the expected BERT weights: {e}"),
        })?;
        let weights_sha = spec
            .files
            .iter()
            .find(|f| f.store_path == "model.safetensors")
            .map(|f| f.sha256.clone())
            .unwrap_or_default();
        let fingerprint =
            format!("{}:{}:mean-norm:{}", spec.name, &weights_sha[..weights_sha.len().min(16)], MAX_TOKENS);
        Ok(Self { model, tokenizer, device, dim: config.hidden_size, fingerprint })
    }

    fn run(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, EmbedError> {
        let tok = |e: tokenizers::Error| EmbedError::Tokenizer(e.to_string());
        let m = |e: candle_core::Error| EmbedError::Model(e.to_string());
        let encodings: Vec<_> =
            texts.iter().map(|t| self.tokenizer.encode(*t, true)).collect::<Result<_, _>>().map_err(tok)?;
        let n = encodings.len();
        let len = encodings.iter().map(|e| e.get_ids().len()).max().unwrap_or(0).max(1);
        let mut ids = vec![0u32; n * len];
        let mut mask = vec![0u32; n * len];
        for (row, e) in encodings.iter().enumerate() {
            for (col, (&id, &am)) in e.get_ids().iter().zip(e.get_attention_mask()).enumerate() {
                ids[row * len + col] = id;
                mask[row * len + col] = am;
            }
        }
        let padded = n > 1 && encodings.iter().any(|e| e.get_ids().len() != len);
        // The whole pass runs inside candle's CPU thread pool: each of its
        // ~100 short parallel operations then starts from a pool worker,
        // instead of this thread handing every one of them over and sleeping
        // until it is done.
        let rows: Vec<Vec<f32>> = self.device.with_context(|| self.pooled(ids, mask, (n, len), padded)).map_err(m)?;
        Ok(rows
            .into_iter()
            .map(|mut v| {
                super::embed::normalize(&mut v);
                v
            })
            .collect())
    }

    /// The model over `(n, len)` token ids, mean-pooled over the real tokens
    /// (unnormalised).
    fn pooled(
        &self,
        ids: Vec<u32>,
        mask: Vec<u32>,
        shape: (usize, usize),
        padded: bool,
    ) -> candle_core::Result<Vec<Vec<f32>>> {
        let ids = Tensor::from_vec(ids, shape, &self.device)?;
        let types = ids.zeros_like()?;
        let mask = Tensor::from_vec(mask, shape, &self.device)?;
        let hidden = self.model.forward(&ids, &types, padded.then_some(&mask))?; // (n, len, dim)
        let maskf = mask.to_dtype(DType::F32)?.unsqueeze(2)?; // (n, len, 1)
        let summed = hidden.broadcast_mul(&maskf)?.sum(1)?; // (n, dim)
        let counts = maskf.sum(1)?; // (n, 1)
        summed.broadcast_div(&counts)?.to_vec2()
    }
}

impl Embedder for BertEmbedder {
    fn fingerprint(&self) -> &str {
        &self.fingerprint
    }
    fn dim(&self) -> usize {
        self.dim
    }
    fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, EmbedError> {
        if texts.is_empty() {
            return Ok(Vec::new());
        }
        self.run(texts)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_valid_thread_setting_is_kept_otherwise_physical_cores_capped_by_affinity() {
        assert_eq!(threads_to_pin(Some("3"), || 8, 2), Ok(3));
        assert_eq!(threads_to_pin(None, || 4, 8), Err(4));
        assert_eq!(threads_to_pin(None, || 8, 2), Err(2));
        assert_eq!(threads_to_pin(Some("0"), || 2, 2), Err(2));
        assert_eq!(threads_to_pin(Some("many"), || 0, 2), Err(1));
    }
}
