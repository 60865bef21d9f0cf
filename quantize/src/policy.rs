//! Which ggml type each tensor gets: llama-quantize's rules for `phi2`, in one table.

use phiq::quant::GgmlType;

use crate::names::{Role, TensorId};

/// A file type the user asks for (`--type`), in llama.cpp's terms.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FileType {
    /// The name on the command line.
    pub name: &'static str,
    /// The type most weight matrices get.
    pub base: GgmlType,
    /// `general.file_type` (`enum llama_ftype`).
    pub file_type: u32,
    /// Bumps to more bits on sensitive tensors (the `_M` and `_S` K-quant mixes).
    pub mix: Mix,
    pub help: &'static str,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mix {
    None,
    /// `_M`: Q6_K for attn_v and ffn_down on the `use_more_bits` layers.
    Medium,
    /// `_S` of Q4_K: Q5_K for the first 4 attn_v and the first 1/8 of ffn_down.
    Small,
}

use GgmlType as T;

/// The types `--type` accepts, with what `--help` says of each.
pub const FILE_TYPES: &[FileType] = &[
    FileType {
        name: "f32",
        base: T::F32,
        file_type: 0,
        mix: Mix::None,
        help: "32 bits per weight: lossless, for reference",
    },
    FileType {
        name: "f16",
        base: T::F16,
        file_type: 1,
        mix: Mix::None,
        help: "16 bpw: Phi-2 as released (5.6 GB)",
    },
    FileType {
        name: "bf16",
        base: T::BF16,
        file_type: 32,
        mix: Mix::None,
        help: "16 bpw, bfloat16",
    },
    FileType {
        name: "q8_0",
        base: T::Q8_0,
        file_type: 7,
        mix: Mix::None,
        help: "8.5 bpw: nearly lossless (3.0 GB)",
    },
    FileType {
        name: "q6_k",
        base: T::Q6_K,
        file_type: 18,
        mix: Mix::None,
        help: "6.56 bpw K-quant (2.3 GB)",
    },
    FileType {
        name: "q5_1",
        base: T::Q5_1,
        file_type: 9,
        mix: Mix::None,
        help: "6.0 bpw, scale and minimum per 32 weights",
    },
    FileType {
        name: "q5_k_m",
        base: T::Q5_K,
        file_type: 17,
        mix: Mix::Medium,
        help: "5.5 bpw K-quant, Q6_K on sensitive tensors (2.0 GB)",
    },
    FileType {
        name: "q5_k_s",
        base: T::Q5_K,
        file_type: 16,
        mix: Mix::None,
        help: "5.5 bpw K-quant throughout",
    },
    FileType {
        name: "q5_0",
        base: T::Q5_0,
        file_type: 8,
        mix: Mix::None,
        help: "5.5 bpw, scale per 32 weights",
    },
    FileType {
        name: "q4_1",
        base: T::Q4_1,
        file_type: 3,
        mix: Mix::None,
        help: "5.0 bpw, scale and minimum per 32 weights",
    },
    FileType {
        name: "q4_k_m",
        base: T::Q4_K,
        file_type: 15,
        mix: Mix::Medium,
        help: "4.5 bpw K-quant, Q6_K on sensitive tensors (1.7 GB): the usual choice for a Pi",
    },
    FileType {
        name: "q4_k_s",
        base: T::Q4_K,
        file_type: 14,
        mix: Mix::Small,
        help: "4.5 bpw K-quant, Q5_K on the first attn_v and ffn_down",
    },
    FileType {
        name: "q4_0",
        base: T::Q4_0,
        file_type: 2,
        mix: Mix::None,
        help: "4.5 bpw, scale per 32 weights (1.6 GB): the fastest",
    },
];

impl FileType {
    pub fn by_name(name: &str) -> Option<FileType> {
        FILE_TYPES
            .iter()
            .find(|f| f.name.eq_ignore_ascii_case(name))
            .copied()
    }

    fn is_quantized(&self) -> bool {
        !matches!(self.base, T::F32 | T::F16 | T::BF16)
    }

    /// The type of tensor `id`, whose rows are `row_len` long, in a model of `n_layers`,
    /// quantized with an importance matrix or not. Follows `llama_tensor_get_type` of
    /// llama.cpp's `llama-quant.cpp` for `phi2`.
    pub fn tensor_type(
        &self,
        id: TensorId,
        n_dims: usize,
        row_len: u64,
        n_layers: usize,
        imatrix: bool,
    ) -> GgmlType {
        // Norms, biases (one dimension) stay F32: they are tiny and precision-critical.
        if n_dims < 2 || id.bias || id.role.is_norm() {
            return T::F32;
        }
        if !self.is_quantized() {
            return self.base;
        }
        if id.role == Role::Output {
            // More bits where the logits are made; Q8_0 when Q6_K's rows do not fit.
            return if !row_len.is_multiple_of(self.base.block_size() as u64) {
                fallback(T::Q8_0, row_len)
            } else if self.base != T::Q8_0 {
                fallback(T::Q6_K, row_len)
            } else {
                T::Q8_0
            };
        }
        let layer = id.layer.unwrap_or(0);
        let ty = match (self.mix, id.role) {
            (Mix::Medium, Role::AttnV | Role::FfnDown) if use_more_bits(layer, n_layers) => T::Q6_K,
            (Mix::Medium, Role::AttnQkv) if self.base == T::Q4_K => T::Q5_K,
            (Mix::Medium, Role::AttnQkv) => T::Q6_K,
            (Mix::Small, Role::AttnV) if layer < 4 => T::Q5_K,
            (Mix::Small, Role::FfnDown) if layer < n_layers / 8 => T::Q5_K,
            // llama.cpp guards the first ffn_down layers of imatrix Q4_0/Q5_0 files
            // (which "go crazy" there) with the type that has a minimum.
            (Mix::None, Role::FfnDown) if imatrix && layer < n_layers / 8 => match self.base {
                T::Q4_0 => T::Q4_1,
                T::Q5_0 => T::Q5_1,
                base => base,
            },
            _ => self.base,
        };
        fallback(ty, row_len)
    }
}

/// llama.cpp's `use_more_bits`: the first and last eighth of the layers and every third
/// one between.
pub fn use_more_bits(layer: usize, n_layers: usize) -> bool {
    let (i, n) = (layer as i64, n_layers as i64);
    i < n / 8 || i >= 7 * n / 8 || (i - n / 8) % 3 == 2
}

/// llama.cpp's fallback for rows that are not a whole number of 256-element K-quant
/// blocks; F16 when even the fallback's blocks do not fit. (llama.cpp refuses legacy
/// types on rows not a multiple of 32; F16 is kept here instead of failing.)
fn fallback(ty: GgmlType, row_len: u64) -> GgmlType {
    if row_len.is_multiple_of(ty.block_size() as u64) {
        return ty;
    }
    let next = match ty {
        T::Q4_K => T::Q5_0,
        T::Q5_K => T::Q5_1,
        T::Q6_K => T::Q8_0,
        _ => T::F16,
    };
    if row_len.is_multiple_of(next.block_size() as u64) {
        next
    } else {
        T::F16
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ty(ft: &str, role: Role, layer: usize, row_len: u64) -> GgmlType {
        let id = TensorId::new(role, Some(layer), false);
        FileType::by_name(ft)
            .unwrap()
            .tensor_type(id, 2, row_len, 32, false)
    }

    #[test]
    fn use_more_bits_matches_llama_cpp_for_32_layers() {
        let layers: Vec<usize> = (0..32).filter(|&i| use_more_bits(i, 32)).collect();
        assert_eq!(
            layers,
            [0, 1, 2, 3, 6, 9, 12, 15, 18, 21, 24, 27, 28, 29, 30, 31]
        );
    }

    #[test]
    fn an_imatrix_gives_q4_0_and_q5_0_a_minimum_on_the_first_ffn_down_layers() {
        let ffn_down = |ft: &str, layer: usize, imatrix: bool| {
            let id = TensorId::new(Role::FfnDown, Some(layer), false);
            FileType::by_name(ft)
                .unwrap()
                .tensor_type(id, 2, 10240, 32, imatrix)
        };
        assert_eq!(ffn_down("q4_0", 3, true), T::Q4_1);
        assert_eq!(ffn_down("q4_0", 4, true), T::Q4_0);
        assert_eq!(ffn_down("q4_0", 0, false), T::Q4_0);
        assert_eq!(ffn_down("q5_0", 0, true), T::Q5_1);
        assert_eq!(ffn_down("q4_1", 0, true), T::Q4_1);
        assert_eq!(ffn_down("q4_k_m", 0, true), T::Q6_K);
    }

    #[test]
    fn q4_k_m_mix() {
        assert_eq!(ty("q4_k_m", Role::AttnV, 0, 2560), T::Q6_K);
        assert_eq!(ty("q4_k_m", Role::AttnV, 4, 2560), T::Q4_K);
        assert_eq!(ty("q4_k_m", Role::FfnDown, 6, 10240), T::Q6_K);
        assert_eq!(ty("q4_k_m", Role::FfnUp, 0, 2560), T::Q4_K);
        assert_eq!(ty("q4_k_m", Role::AttnQ, 0, 2560), T::Q4_K);
        let out = TensorId::new(Role::Output, None, false);
        let q4km = FileType::by_name("q4_k_m").unwrap();
        assert_eq!(q4km.tensor_type(out, 2, 2560, 32, false), T::Q6_K);
        let norm = TensorId::new(Role::AttnNorm, Some(0), false);
        assert_eq!(q4km.tensor_type(norm, 1, 2560, 32, false), T::F32);
        let bias = TensorId::new(Role::AttnQ, Some(0), true);
        assert_eq!(q4km.tensor_type(bias, 1, 2560, 32, false), T::F32);
    }

    #[test]
    fn legacy_types_get_q6_k_output_except_q8_0() {
        let out = TensorId::new(Role::Output, None, false);
        for (ft, want) in [
            ("q4_0", T::Q6_K),
            ("q5_1", T::Q6_K),
            ("q8_0", T::Q8_0),
            ("f16", T::F16),
        ] {
            let f = FileType::by_name(ft).unwrap();
            assert_eq!(f.tensor_type(out, 2, 2560, 32, false), want, "{ft}");
        }
        assert_eq!(ty("q4_0", Role::TokenEmbd, 0, 2560), T::Q4_0);
    }

    #[test]
    fn odd_rows_fall_back_like_llama_cpp() {
        assert_eq!(ty("q4_k_m", Role::FfnUp, 5, 32 * 3), T::Q5_0);
        assert_eq!(ty("q5_k_s", Role::FfnUp, 5, 32 * 3), T::Q5_1);
        assert_eq!(ty("q6_k", Role::FfnUp, 5, 32 * 3), T::Q8_0);
        assert_eq!(ty("q4_k_m", Role::FfnUp, 5, 48), T::F16);
        assert_eq!(ty("q4_0", Role::FfnUp, 5, 48), T::F16);
        let out = TensorId::new(Role::Output, None, false);
        let q4_0 = FileType::by_name("q4_0").unwrap();
        assert_eq!(q4_0.tensor_type(out, 2, 32, 2, false), T::Q8_0);
    }
}
