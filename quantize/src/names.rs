//! Tensor names: Hugging Face's (today's `PhiForCausalLM` and the pre-2024 phi-msft
//! layout many fine-tunes still carry) and llama.cpp's `phi2` GGUF names.

use std::fmt;

/// A Hugging Face tensor name that is not part of Phi-2.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NotPhi2;

/// What a tensor is in the Phi-2 graph, in llama.cpp's `phi2` vocabulary.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Role {
    TokenEmbd,
    AttnNorm,
    /// Fused query/key/value (phi-msft `Wqkv`, llama.cpp's Dec-2023 files).
    AttnQkv,
    AttnQ,
    AttnK,
    AttnV,
    AttnOutput,
    FfnUp,
    FfnDown,
    OutputNorm,
    Output,
}

impl Role {
    pub const PER_LAYER_SPLIT: [Role; 7] = [
        Role::AttnNorm,
        Role::AttnQ,
        Role::AttnK,
        Role::AttnV,
        Role::AttnOutput,
        Role::FfnUp,
        Role::FfnDown,
    ];

    pub fn gguf_base(self) -> &'static str {
        match self {
            Role::TokenEmbd => "token_embd",
            Role::AttnNorm => "attn_norm",
            Role::AttnQkv => "attn_qkv",
            Role::AttnQ => "attn_q",
            Role::AttnK => "attn_k",
            Role::AttnV => "attn_v",
            Role::AttnOutput => "attn_output",
            Role::FfnUp => "ffn_up",
            Role::FfnDown => "ffn_down",
            Role::OutputNorm => "output_norm",
            Role::Output => "output",
        }
    }

    pub fn is_norm(self) -> bool {
        matches!(self, Role::AttnNorm | Role::OutputNorm)
    }

    fn from_gguf_base(base: &str) -> Option<Role> {
        use Role::*;
        [
            TokenEmbd, AttnNorm, AttnQkv, AttnQ, AttnK, AttnV, AttnOutput, FfnUp, FfnDown,
            OutputNorm, Output,
        ]
        .into_iter()
        .find(|r| r.gguf_base() == base)
    }
}

/// A tensor's identity: role, block (layer) and weight-or-bias.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TensorId {
    pub role: Role,
    pub layer: Option<usize>,
    pub bias: bool,
}

impl TensorId {
    pub fn new(role: Role, layer: Option<usize>, bias: bool) -> TensorId {
        TensorId { role, layer, bias }
    }

    /// Parses a llama.cpp `phi2` name such as `blk.3.attn_v.weight`.
    pub fn from_gguf(name: &str) -> Option<TensorId> {
        let (stem, bias) = if let Some(s) = name.strip_suffix(".weight") {
            (s, false)
        } else {
            (name.strip_suffix(".bias")?, true)
        };
        match stem.strip_prefix("blk.") {
            Some(rest) => {
                let (layer, base) = rest.split_once('.')?;
                let role = Role::from_gguf_base(base)?;
                (!matches!(role, Role::TokenEmbd | Role::OutputNorm | Role::Output))
                    .then_some(TensorId::new(role, Some(layer.parse().ok()?), bias))
            }
            None => {
                let role = Role::from_gguf_base(stem)?;
                matches!(role, Role::TokenEmbd | Role::OutputNorm | Role::Output)
                    .then_some(TensorId::new(role, None, bias))
            }
        }
    }

    /// Parses a Hugging Face name, in either naming. `Ok(None)`: a buffer that is not a
    /// weight (rotary `inv_freq`), which conversion skips.
    pub fn from_hf(name: &str) -> Result<Option<TensorId>, NotPhi2> {
        if name.ends_with("rotary_emb.inv_freq") {
            return Ok(None);
        }
        let (stem, bias) = if let Some(s) = name.strip_suffix(".weight") {
            (s, false)
        } else {
            (name.strip_suffix(".bias").ok_or(NotPhi2)?, true)
        };
        let global = match stem {
            "model.embed_tokens" | "transformer.embd.wte" => Some(Role::TokenEmbd),
            "model.final_layernorm" | "lm_head.ln" => Some(Role::OutputNorm),
            "lm_head" | "lm_head.linear" => Some(Role::Output),
            _ => None,
        };
        if let Some(role) = global {
            // Embeddings have no bias in either layout.
            return if role == Role::TokenEmbd && bias {
                Err(NotPhi2)
            } else {
                Ok(Some(TensorId::new(role, None, bias)))
            };
        }
        let rest = stem
            .strip_prefix("model.layers.")
            .or_else(|| stem.strip_prefix("transformer.h."))
            .ok_or(NotPhi2)?;
        let (layer, part) = rest.split_once('.').ok_or(NotPhi2)?;
        let layer: usize = layer.parse().map_err(|_| NotPhi2)?;
        let role = match part {
            "input_layernorm" | "ln" => Role::AttnNorm,
            "self_attn.q_proj" => Role::AttnQ,
            "self_attn.k_proj" => Role::AttnK,
            "self_attn.v_proj" => Role::AttnV,
            "mixer.Wqkv" => Role::AttnQkv,
            "self_attn.dense" | "mixer.out_proj" => Role::AttnOutput,
            "mlp.fc1" => Role::FfnUp,
            "mlp.fc2" => Role::FfnDown,
            _ => return Err(NotPhi2),
        };
        Ok(Some(TensorId::new(role, Some(layer), bias)))
    }

    /// Today's Hugging Face name, for messages about missing tensors.
    pub fn hf_name(&self) -> String {
        let suffix = if self.bias { "bias" } else { "weight" };
        let layer = self.layer.unwrap_or(0);
        let stem = match self.role {
            Role::TokenEmbd => "model.embed_tokens".to_string(),
            Role::OutputNorm => "model.final_layernorm".to_string(),
            Role::Output => "lm_head".to_string(),
            Role::AttnNorm => format!("model.layers.{layer}.input_layernorm"),
            Role::AttnQkv => format!("transformer.h.{layer}.mixer.Wqkv"),
            Role::AttnQ => format!("model.layers.{layer}.self_attn.q_proj"),
            Role::AttnK => format!("model.layers.{layer}.self_attn.k_proj"),
            Role::AttnV => format!("model.layers.{layer}.self_attn.v_proj"),
            Role::AttnOutput => format!("model.layers.{layer}.self_attn.dense"),
            Role::FfnUp => format!("model.layers.{layer}.mlp.fc1"),
            Role::FfnDown => format!("model.layers.{layer}.mlp.fc2"),
        };
        format!("{stem}.{suffix}")
    }
}

/// llama.cpp's name: `token_embd.weight`, `blk.3.attn_v.bias`, ...
impl fmt::Display for TensorId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let suffix = if self.bias { "bias" } else { "weight" };
        match self.layer {
            Some(l) => write!(f, "blk.{l}.{}.{suffix}", self.role.gguf_base()),
            None => write!(f, "{}.{suffix}", self.role.gguf_base()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hf_names_of_both_layouts_map_to_gguf_names() {
        let cases = [
            ("model.embed_tokens.weight", "token_embd.weight"),
            ("transformer.embd.wte.weight", "token_embd.weight"),
            ("model.layers.7.self_attn.q_proj.bias", "blk.7.attn_q.bias"),
            (
                "model.layers.0.self_attn.dense.weight",
                "blk.0.attn_output.weight",
            ),
            (
                "transformer.h.31.mixer.out_proj.weight",
                "blk.31.attn_output.weight",
            ),
            ("transformer.h.2.mixer.Wqkv.bias", "blk.2.attn_qkv.bias"),
            ("transformer.h.2.ln.weight", "blk.2.attn_norm.weight"),
            ("model.layers.5.mlp.fc2.bias", "blk.5.ffn_down.bias"),
            ("lm_head.linear.weight", "output.weight"),
            ("lm_head.ln.bias", "output_norm.bias"),
            ("lm_head.bias", "output.bias"),
            ("model.final_layernorm.weight", "output_norm.weight"),
        ];
        for (hf, gguf) in cases {
            let id = TensorId::from_hf(hf).unwrap().unwrap();
            assert_eq!(id.to_string(), gguf, "{hf}");
            assert_eq!(TensorId::from_gguf(gguf), Some(id), "{gguf}");
        }
    }

    #[test]
    fn unknown_names_are_refused_and_buffers_skipped() {
        for bad in [
            "model.layers.0.self_attn.q_layernorm.weight",
            "model.layers.x.mlp.fc1.weight",
            "model.embed_tokens.bias",
            "encoder.weight",
            "lm_head.weight.extra",
        ] {
            assert_eq!(TensorId::from_hf(bad), Err(NotPhi2), "{bad}");
        }
        assert_eq!(
            TensorId::from_hf("model.layers.0.self_attn.rotary_emb.inv_freq"),
            Ok(None)
        );
        assert_eq!(TensorId::from_gguf("blk.1.output.weight"), None);
        assert_eq!(TensorId::from_gguf("token_embd.weight.x"), None);
    }
}
