//! `adapter_config.json`: the parts of a PEFT LoRA config a merge depends on, and
//! PEFT's rules for matching module names.

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::Value;

use crate::error::{ConvertError, Result};

/// The parts of `adapter_config.json` a merge depends on.
pub(super) struct Config {
    pub r: usize,
    pub alpha: f64,
    pub rslora: bool,
    pub targets: Option<Vec<String>>,
    pub modules_to_save: Vec<String>,
    pub rank_pattern: BTreeMap<String, usize>,
    pub alpha_pattern: BTreeMap<String, f64>,
    pub base_model: Option<String>,
    pub warnings: Vec<String>,
}

impl Config {
    pub fn read(path: &Path) -> Result<Config> {
        let text = std::fs::read_to_string(path).map_err(|error| ConvertError::Io {
            path: path.to_path_buf(),
            error,
        })?;
        let v: Value = serde_json::from_str(&text).map_err(|e| ConvertError::Json {
            path: path.to_path_buf(),
            why: e.to_string(),
        })?;
        let bad = |key: &str, why: String| ConvertError::Config {
            path: path.to_path_buf(),
            key: key.into(),
            why,
        };
        let get = |k: &str| v.get(k).filter(|x| !x.is_null());
        let flag = |k: &str| -> Result<bool> {
            get(k).map_or(Ok(false), |x| {
                x.as_bool()
                    .ok_or_else(|| bad(k, format!("{x} is not true or false")))
            })
        };
        if let Some(t) = get("peft_type")
            && t.as_str() != Some("LORA")
        {
            return Err(bad(
                "peft_type",
                format!("{t}: phiq merges LoRA adapters only"),
            ));
        }
        if flag("use_dora")? {
            return Err(bad(
                "use_dora",
                "DoRA adapters rescale each weight column by a learned magnitude; \
                 phiq merges plain LoRA only (merge it with PEFT's merge_and_unload \
                 and convert the result)"
                    .into(),
            ));
        }
        let r = get("r")
            .and_then(Value::as_u64)
            .filter(|&r| r > 0)
            .ok_or_else(|| bad("r", "missing, or not a positive integer".into()))?
            as usize;
        let alpha = match get("lora_alpha") {
            None => 8.0, // PEFT's default
            Some(a) => a
                .as_f64()
                .ok_or_else(|| bad("lora_alpha", format!("{a} is not a number")))?,
        };
        let targets = match get("target_modules") {
            None => None,
            Some(Value::String(s)) if s == "all-linear" => None,
            Some(Value::String(s)) => {
                return Err(bad(
                    "target_modules",
                    format!(
                        "{s:?} is a regular expression; phiq reads a list of module names \
                         (the tensors in adapter_model.safetensors show which modules it has)"
                    ),
                ));
            }
            Some(Value::Array(a)) => Some(
                a.iter()
                    .map(|x| {
                        x.as_str()
                            .map(str::to_string)
                            .ok_or_else(|| bad("target_modules", format!("{x} is not a name")))
                    })
                    .collect::<Result<Vec<_>>>()?,
            ),
            Some(x) => return Err(bad("target_modules", format!("{x} is not a list"))),
        };
        let names = |k: &str| -> Result<Vec<String>> {
            match get(k) {
                None => Ok(Vec::new()),
                Some(Value::Array(a)) => a
                    .iter()
                    .map(|x| {
                        x.as_str()
                            .map(str::to_string)
                            .ok_or_else(|| bad(k, format!("{x} is not a name")))
                    })
                    .collect(),
                Some(x) => Err(bad(k, format!("{x} is not a list"))),
            }
        };
        let pattern = |k: &str| -> Result<BTreeMap<String, f64>> {
            let Some(obj) = get(k) else {
                return Ok(BTreeMap::new());
            };
            let obj = obj
                .as_object()
                .ok_or_else(|| bad(k, "not an object".into()))?;
            obj.iter()
                .map(|(name, val)| {
                    if !name
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.')
                    {
                        return Err(bad(
                            k,
                            format!(
                                "{name:?} is a regular expression; phiq matches plain module names"
                            ),
                        ));
                    }
                    let val = val
                        .as_f64()
                        .ok_or_else(|| bad(k, format!("{name:?}: {val} is not a number")))?;
                    Ok((name.clone(), val))
                })
                .collect()
        };
        let mut warnings = Vec::new();
        if flag("fan_in_fan_out")? {
            // PEFT resets it for torch.nn.Linear targets (every Phi-2 module) and
            // stores A and B as it always does; the merge is the same.
            warnings.push(
                "fan_in_fan_out is set, but Phi-2's modules are nn.Linear: ignored, as PEFT does"
                    .into(),
            );
        }
        let rank_pattern = pattern("rank_pattern")?
            .into_iter()
            .map(|(k, v)| {
                if v >= 1.0 && v.fract() == 0.0 {
                    Ok((k, v as usize))
                } else {
                    Err(bad("rank_pattern", format!("{k:?}: {v} is not a rank")))
                }
            })
            .collect::<Result<_>>()?;
        Ok(Config {
            r,
            alpha,
            rslora: flag("use_rslora")?,
            targets,
            modules_to_save: names("modules_to_save")?,
            rank_pattern,
            alpha_pattern: pattern("alpha_pattern")?,
            base_model: get("base_model_name_or_path")
                .and_then(Value::as_str)
                .map(str::to_string),
            warnings,
        })
    }

    /// PEFT's `get_pattern_key`: a key names `module` when it is the module's name or
    /// its dotted suffix.
    fn pattern<'p, T>(patterns: &'p BTreeMap<String, T>, module: &str) -> Option<&'p T> {
        patterns
            .iter()
            .find(|(k, _)| module == k.as_str() || module.ends_with(&format!(".{k}")))
            .map(|(_, v)| v)
    }

    /// `alpha / r`, or `alpha / √r` for rank-stabilised LoRA, for `module`.
    pub fn scaling(&self, module: &str) -> (usize, f64) {
        let r = *Config::pattern(&self.rank_pattern, module).unwrap_or(&self.r);
        let alpha = *Config::pattern(&self.alpha_pattern, module).unwrap_or(&self.alpha);
        let s = if self.rslora {
            alpha / (r as f64).sqrt()
        } else {
            alpha / r as f64
        };
        (r, s)
    }
}

/// The modules of Phi-2 a LoRA can target, in both layouts (last name component).
pub(super) const MODULES: [&str; 12] = [
    "q_proj",
    "k_proj",
    "v_proj",
    "dense",
    "fc1",
    "fc2",
    "Wqkv",
    "out_proj",
    "lm_head",
    "linear",
    "embed_tokens",
    "wte",
];

/// Whether a `target_modules` entry names a module of Phi-2 (PEFT matches an
/// entry against a module's name or its dotted suffix).
pub(super) fn is_phi2_module(entry: &str) -> bool {
    MODULES.contains(&entry.rsplit('.').next().unwrap_or(entry))
}

/// PEFT's matching of a `target_modules` or `modules_to_save` entry: the module's
/// name, or a dotted suffix of it.
pub(super) fn names_module(entry: &str, module: &str) -> bool {
    module == entry || module.ends_with(&format!(".{entry}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(json: &str) -> Result<Config> {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("adapter_config.json");
        std::fs::write(&p, json).unwrap();
        Config::read(&p)
    }

    #[test]
    fn scaling_follows_peft_patterns_and_rslora() {
        let c = config(
            r#"{"peft_type": "LORA", "r": 4, "lora_alpha": 8, "rank_pattern": {"fc2": 2},
                "alpha_pattern": {"model.layers.1.self_attn.q_proj": 3}}"#,
        )
        .unwrap();
        assert_eq!(c.scaling("model.layers.0.self_attn.q_proj"), (4, 2.0));
        assert_eq!(c.scaling("model.layers.1.self_attn.q_proj"), (4, 0.75));
        assert_eq!(c.scaling("model.layers.0.mlp.fc2"), (2, 4.0));
        // "fc2" names a module ending ".fc2", not one ending "xfc2".
        assert_eq!(c.scaling("model.layers.0.mlp.xfc2"), (4, 2.0));
        let c = config(r#"{"r": 16, "lora_alpha": 8, "use_rslora": true}"#).unwrap();
        assert_eq!(c.scaling("lm_head"), (16, 2.0));
        // PEFT's default alpha is 8.
        assert_eq!(config(r#"{"r": 2}"#).unwrap().scaling("fc1"), (2, 4.0));
    }

    #[test]
    fn configs_phiq_cannot_merge_exactly_are_refused() {
        for (json, key) in [
            (r#"{"r": 4, "use_dora": true}"#, "use_dora"),
            (r#"{"peft_type": "IA3", "r": 4}"#, "peft_type"),
            (r#"{"lora_alpha": 4}"#, "\"r\""),
            (r#"{"r": 0}"#, "\"r\""),
            (
                r#"{"r": 4, "target_modules": ".*proj"}"#,
                "regular expression",
            ),
            (
                r#"{"r": 4, "rank_pattern": {"^model.*": 2}}"#,
                "regular expression",
            ),
            (r#"{"r": 4, "rank_pattern": {"fc1": 1.5}}"#, "not a rank"),
            ("{not json", "adapter_config.json"),
        ] {
            let e = config(json).err().unwrap().to_string();
            assert!(e.contains(key), "{json}: {e}");
            assert!(e.contains("adapter_config.json"), "{json}: {e}");
        }
        assert!(is_phi2_module("q_proj") && is_phi2_module("model.layers.0.mlp.fc1"));
        assert!(!is_phi2_module("gate_proj") && !is_phi2_module("mlp"));
    }
}
