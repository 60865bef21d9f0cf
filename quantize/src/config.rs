//! Phi-2 hyperparameters from a Hugging Face `config.json`, in every layout found in the
//! wild: the microsoft/phi-2 hub file (top-level `partial_rotary_factor`, `rope_theta`),
//! transformers 5 (`rope_parameters`), and the pre-2024 phi-msft names (`n_embd`, ...).

use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

use crate::error::{ConvertError, Result};

#[derive(Clone, Debug, PartialEq)]
pub struct Phi2Config {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_layers: usize,
    pub num_heads: usize,
    pub num_kv_heads: usize,
    pub context_length: usize,
    pub layer_norm_eps: f64,
    pub rope_theta: f64,
    pub partial_rotary_factor: f64,
    /// `torch_dtype` / `dtype`, as declared (the weights' own dtypes are what is read).
    pub dtype: Option<String>,
}

impl Phi2Config {
    pub fn head_dim(&self) -> usize {
        self.hidden_size / self.num_heads
    }

    /// Rotary dimensions per head: `int(head_dim * partial_rotary_factor)`, as HF computes.
    pub fn rope_dims(&self) -> usize {
        (self.head_dim() as f64 * self.partial_rotary_factor + 1e-9) as usize
    }

    pub fn from_file(path: &Path) -> Result<Phi2Config> {
        let text = std::fs::read_to_string(path).map_err(|source| ConvertError::Io {
            path: path.to_path_buf(),
            error: source,
        })?;
        let json: Value = serde_json::from_str(&text).map_err(|e| ConvertError::Json {
            path: path.to_path_buf(),
            why: e.to_string(),
        })?;
        let obj = json.as_object().ok_or_else(|| ConvertError::Json {
            path: path.to_path_buf(),
            why: "not a JSON object".into(),
        })?;
        Keys { path, obj }.parse()
    }
}

struct Keys<'a> {
    path: &'a Path,
    obj: &'a Map<String, Value>,
}

impl Keys<'_> {
    fn err(&self, key: &str, why: impl Into<String>) -> ConvertError {
        ConvertError::Config {
            path: PathBuf::from(self.path),
            key: key.to_string(),
            why: why.into(),
        }
    }

    /// The first of `keys` present and not null.
    fn find<'k>(&self, keys: &[&'k str]) -> Option<(&'k str, &Value)> {
        keys.iter()
            .find_map(|k| self.obj.get(*k).filter(|v| !v.is_null()).map(|v| (*k, v)))
    }

    fn uint(&self, keys: &[&str]) -> Result<Option<usize>> {
        match self.find(keys) {
            None => Ok(None),
            Some((k, v)) => match v.as_u64() {
                Some(n) if n > 0 => Ok(Some(n as usize)),
                _ => Err(self.err(k, format!("expected a positive integer, found {v}"))),
            },
        }
    }

    fn required_uint(&self, keys: &[&str]) -> Result<usize> {
        self.uint(keys)?
            .ok_or_else(|| self.err(keys[0], "missing (needed for Phi-2)"))
    }

    fn float(&self, keys: &[&str]) -> Result<Option<f64>> {
        match self.find(keys) {
            None => Ok(None),
            Some((k, v)) => v
                .as_f64()
                .filter(|f| f.is_finite())
                .map(Some)
                .ok_or_else(|| self.err(k, format!("expected a number, found {v}"))),
        }
    }

    /// `rope_parameters.KEY` (transformers 5) when the top level lacks KEY.
    fn rope_param(&self, key: &str) -> Result<Option<f64>> {
        if let Some(v) = self.float(&[key])? {
            return Ok(Some(v));
        }
        let Some(params) = self.obj.get("rope_parameters").and_then(Value::as_object) else {
            return Ok(None);
        };
        Keys {
            path: self.path,
            obj: params,
        }
        .float(&[key])
        .map_err(|_| self.err(&format!("rope_parameters.{key}"), "expected a number"))
    }

    fn parse(&self) -> Result<Phi2Config> {
        self.check_model_type()?;
        let hidden_size = self.required_uint(&["hidden_size", "n_embd"])?;
        let num_heads = self.required_uint(&["num_attention_heads", "n_head"])?;
        if hidden_size % num_heads != 0 {
            return Err(self.err(
                "num_attention_heads",
                format!("{num_heads} heads do not divide hidden_size {hidden_size}"),
            ));
        }
        let num_kv_heads = self
            .uint(&["num_key_value_heads", "n_head_kv"])?
            .unwrap_or(num_heads);
        if num_heads % num_kv_heads != 0 {
            return Err(self.err(
                "num_key_value_heads",
                format!("{num_kv_heads} key/value heads do not divide {num_heads} heads"),
            ));
        }
        let head_dim = hidden_size / num_heads;
        let partial_rotary_factor = match self.rope_param("partial_rotary_factor")? {
            Some(f) => f,
            // phi-msft states rotary dimensions instead of a factor.
            None => match self.uint(&["rotary_dim"])? {
                Some(r) => r as f64 / head_dim as f64,
                None => 0.5,
            },
        };
        if !(0.0..=1.0).contains(&partial_rotary_factor) {
            return Err(self.err("partial_rotary_factor", "must be between 0 and 1"));
        }
        Ok(Phi2Config {
            vocab_size: self.required_uint(&["vocab_size"])?,
            hidden_size,
            intermediate_size: self
                .uint(&["intermediate_size", "n_inner"])?
                .unwrap_or(4 * hidden_size),
            num_layers: self.required_uint(&["num_hidden_layers", "n_layer"])?,
            num_heads,
            num_kv_heads,
            context_length: self.required_uint(&["max_position_embeddings", "n_positions"])?,
            layer_norm_eps: self
                .float(&["layer_norm_eps", "layer_norm_epsilon"])?
                .unwrap_or(1e-5),
            rope_theta: self.rope_param("rope_theta")?.unwrap_or(10000.0),
            partial_rotary_factor,
            dtype: self
                .find(&["torch_dtype", "dtype"])
                .and_then(|(_, v)| v.as_str())
                .map(str::to_string),
        })
    }

    /// Phi-2 is `phi` in transformers and `phi-msft` before 2024; anything else is
    /// another architecture this tool would silently mis-convert.
    fn check_model_type(&self) -> Result<()> {
        match self.obj.get("model_type").and_then(Value::as_str) {
            None | Some("phi") | Some("phi-msft") => Ok(()),
            Some(other) => Err(self.err(
                "model_type",
                format!("{other:?} is not Phi-2 (expected \"phi\" or \"phi-msft\")"),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: &str) -> Result<Phi2Config> {
        let v: Value = serde_json::from_str(json).unwrap();
        Keys {
            path: Path::new("config.json"),
            obj: v.as_object().unwrap(),
        }
        .parse()
    }

    const HUB: &str = r#"{"model_type":"phi","vocab_size":51200,"hidden_size":2560,
        "intermediate_size":10240,"num_hidden_layers":32,"num_attention_heads":32,
        "num_key_value_heads":null,"max_position_embeddings":2048,"layer_norm_eps":1e-05,
        "partial_rotary_factor":0.4,"rope_theta":10000.0,"torch_dtype":"float16"}"#;

    #[test]
    fn hub_layout() {
        let c = parse(HUB).unwrap();
        assert_eq!((c.num_kv_heads, c.head_dim(), c.rope_dims()), (32, 80, 32));
        assert_eq!(c.dtype.as_deref(), Some("float16"));
    }

    #[test]
    fn transformers_5_layout() {
        let c = parse(
            r#"{"model_type":"phi","vocab_size":51200,"hidden_size":2560,
            "intermediate_size":10240,"num_hidden_layers":32,"num_attention_heads":32,
            "num_key_value_heads":8,"max_position_embeddings":2048,"layer_norm_eps":1e-05,
            "rope_parameters":{"rope_type":"default","rope_theta":5000.0,"partial_rotary_factor":0.4},
            "dtype":"bfloat16"}"#,
        )
        .unwrap();
        assert_eq!(
            (c.num_kv_heads, c.rope_dims(), c.rope_theta),
            (8, 32, 5000.0)
        );
        assert_eq!(c.dtype.as_deref(), Some("bfloat16"));
    }

    #[test]
    fn phi_msft_layout_and_defaults() {
        let c = parse(
            r#"{"model_type":"phi-msft","vocab_size":51200,"n_embd":2560,"n_layer":32,
            "n_head":32,"n_positions":2048,"layer_norm_epsilon":1e-05,"rotary_dim":32,"n_inner":null}"#,
        )
        .unwrap();
        assert_eq!(
            (c.intermediate_size, c.rope_dims(), c.num_kv_heads),
            (10240, 32, 32)
        );
        let c = parse(&HUB.replace(r#""partial_rotary_factor":0.4,"#, "")).unwrap();
        assert_eq!(c.partial_rotary_factor, 0.5);
    }

    #[test]
    fn errors_name_the_key() {
        let e = parse(&HUB.replace(r#""hidden_size":2560,"#, "")).unwrap_err();
        assert!(e.to_string().contains("\"hidden_size\""), "{e}");
        let e =
            parse(&HUB.replace(r#""model_type":"phi""#, r#""model_type":"llama""#)).unwrap_err();
        assert!(e.to_string().contains("not Phi-2"), "{e}");
        let e = parse(&HUB.replace("\"num_attention_heads\":32", "\"num_attention_heads\":3"))
            .unwrap_err();
        assert!(e.to_string().contains("num_attention_heads"), "{e}");
    }
}
