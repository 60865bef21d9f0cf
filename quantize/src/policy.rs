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

/// Which of llama.cpp's per-ftype rules apply (`llama_tensor_get_type_impl` in
/// `llama-quant.cpp`, for a `phi2` model: not Falcon, no experts, not 70B). "attn_v"
/// includes a fused attn_qkv, which llama.cpp counts and bumps as an attn_v.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mix {
    /// The base type throughout: Q8_0, Q6_K, Q5_K_S, Q3_K_S and the legacy types
    /// (whose imatrix guard on the first ffn_down is below).
    None,
    /// `_M` of Q4_K and Q5_K: Q6_K for attn_v and ffn_down on the `use_more_bits` layers.
    Medium,
    /// `_S` of Q4_K: Q5_K for the first 4 attn_v and the first 1/8 of ffn_down.
    Small,
    /// Q2_K: Q3_K for attn_v (Q4_K with 4 or more heads per key/value head),
    /// attn_output and ffn_down.
    Q2,
    /// Q3_K_M: attn_v Q5_K on the first 2 layers, Q4_K after; ffn_down Q5_K on the first
    /// 1/16 of the layers, Q4_K after; attn_output Q4_K.
    Q3Medium,
    /// Q3_K_L: Q5_K for attn_v, attn_output and ffn_down.
    Q3Large,
    /// IQ4_NL and IQ4_XS: Q5_K for the first 1/8 of ffn_down when quantized without an
    /// importance matrix (and for attn_v with 4 or more heads per key/value head).
    Iq4,
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
    FileType {
        name: "iq4_nl",
        base: T::IQ4_NL,
        file_type: 25,
        mix: Mix::Iq4,
        help: "4.5 bpw non-linear, scale per 32 weights; Q5_K on the first ffn_down without --imatrix (1.6 GB)",
    },
    FileType {
        name: "iq4_xs",
        base: T::IQ4_XS,
        file_type: 30,
        mix: Mix::Iq4,
        help: "4.25 bpw non-linear, blocks of 256; Q5_K on the first ffn_down without --imatrix (1.5 GB)",
    },
    FileType {
        name: "q3_k_l",
        base: T::Q3_K,
        file_type: 13,
        mix: Mix::Q3Large,
        help: "3.44 bpw K-quant, Q5_K on attn_v, attn_output and ffn_down (1.6 GB)",
    },
    FileType {
        name: "q3_k_m",
        base: T::Q3_K,
        file_type: 12,
        mix: Mix::Q3Medium,
        help: "3.44 bpw K-quant, Q4_K and Q5_K on attn_v, attn_output and ffn_down (1.4 GB)",
    },
    FileType {
        name: "q3_k_s",
        base: T::Q3_K,
        file_type: 11,
        mix: Mix::None,
        help: "3.44 bpw K-quant throughout (1.3 GB)",
    },
    FileType {
        name: "q2_k",
        base: T::Q2_K,
        file_type: 10,
        mix: Mix::Q2,
        help: "2.63 bpw K-quant, Q3_K on attn_v, attn_output and ffn_down (1.1 GB): the smallest, the least accurate",
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

    /// The type of tensor `id`, whose rows are `row_len` long, in a model of `n_layers`
    /// with `n_gqa` query heads per key/value head, quantized with an importance matrix
    /// or not. Follows `llama_tensor_get_type` of llama.cpp's `llama-quant.cpp` (b10470)
    /// for `phi2`.
    pub fn tensor_type(
        &self,
        id: TensorId,
        n_dims: usize,
        row_len: u64,
        n_layers: usize,
        n_gqa: usize,
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
            // More bits where the logits are made; Q8_0 when the base type's blocks do
            // not fit the rows. (Phi-2's embeddings are not tied to the output, so
            // token_embd takes the rules of the other matrices.)
            return if !row_len.is_multiple_of(self.base.block_size() as u64) {
                fallback(T::Q8_0, row_len)
            } else if self.base != T::Q8_0 {
                fallback(T::Q6_K, row_len)
            } else {
                T::Q8_0
            };
        }
        let layer = id.layer.unwrap_or(0);
        let n = n_layers;
        // llama.cpp's `category_is_attn_v`: since the refactor of b8266 (#19770) a fused
        // attn_qkv takes attn_v's rules (its own attn_qkv branch is no longer reached),
        // and the attn_v counter it compares is the layer.
        let attn_v = matches!(id.role, Role::AttnV | Role::AttnQkv);
        let ty = match (self.mix, id.role) {
            (Mix::Q2, _) if attn_v => {
                if n_gqa >= 4 {
                    T::Q4_K
                } else {
                    T::Q3_K
                }
            }
            (Mix::Q3Medium, _) if attn_v => {
                if layer < 2 {
                    T::Q5_K
                } else {
                    T::Q4_K
                }
            }
            (Mix::Q3Large, _) if attn_v => T::Q5_K,
            (Mix::Iq4, _) if attn_v && n_gqa >= 4 => T::Q5_K,
            (Mix::Medium, _) if attn_v && use_more_bits(layer, n) => T::Q6_K,
            (Mix::Small, _) if attn_v && layer < 4 => T::Q5_K,
            (Mix::Q2, Role::FfnDown) => T::Q3_K,
            (Mix::Q3Medium, Role::FfnDown) if layer < n / 16 => T::Q5_K,
            (Mix::Q3Medium, Role::FfnDown) => T::Q4_K,
            (Mix::Q3Large, Role::FfnDown) => T::Q5_K,
            (Mix::Medium, Role::FfnDown) if use_more_bits(layer, n) => T::Q6_K,
            // Only without a matrix (llama.cpp's `!qs.has_imatrix`).
            (Mix::Iq4, Role::FfnDown) if !imatrix && layer < n / 8 => T::Q5_K,
            (Mix::Small, Role::FfnDown) if layer < n / 8 => T::Q5_K,
            // llama.cpp guards the first ffn_down layers of imatrix Q4_0/Q5_0 files
            // (which "go crazy" there) with the type that has a minimum.
            (Mix::None, Role::FfnDown) if imatrix && layer < n / 8 => match self.base {
                T::Q4_0 => T::Q4_1,
                T::Q5_0 => T::Q5_1,
                base => base,
            },
            (Mix::Q2, Role::AttnOutput) => T::Q3_K,
            (Mix::Q3Medium, Role::AttnOutput) => T::Q4_K,
            (Mix::Q3Large, Role::AttnOutput) => T::Q5_K,
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

/// llama.cpp's fallback (`tensor_type_fallback`) for rows that are not a whole number
/// of the chosen type's blocks; F16 when even the fallback's blocks do not fit.
/// (llama.cpp refuses the 32-element types themselves, legacy and IQ4_NL, on rows not a
/// multiple of 32; F16 is kept here instead of failing.)
fn fallback(ty: GgmlType, row_len: u64) -> GgmlType {
    if row_len.is_multiple_of(ty.block_size() as u64) {
        return ty;
    }
    let next = match ty {
        T::Q2_K | T::Q3_K => T::Q4_0,
        T::IQ4_XS => T::IQ4_NL,
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
            .tensor_type(id, 2, row_len, 32, 1, false)
    }

    /// Full-size Phi-2 (32 layers, rows of 2560, ffn_down's of 10240).
    fn phi2(ft: &str, role: Role, layer: usize, n_gqa: usize, imatrix: bool) -> GgmlType {
        let row_len = if role == Role::FfnDown { 10240 } else { 2560 };
        let id = TensorId::new(role, (role != Role::TokenEmbd).then_some(layer), false);
        FileType::by_name(ft)
            .unwrap()
            .tensor_type(id, 2, row_len, 32, n_gqa, imatrix)
    }

    fn output(ft: &str, row_len: u64) -> GgmlType {
        let out = TensorId::new(Role::Output, None, false);
        FileType::by_name(ft)
            .unwrap()
            .tensor_type(out, 2, row_len, 32, 1, false)
    }

    const ALL_LAYERS: [usize; 6] = [0, 1, 2, 3, 4, 31];

    #[test]
    fn file_type_ids_are_llama_cpps() {
        for (name, id) in [
            ("q2_k", 10),
            ("q3_k_s", 11),
            ("q3_k_m", 12),
            ("q3_k_l", 13),
            ("q4_k_s", 14),
            ("q4_k_m", 15),
            ("iq4_nl", 25),
            ("iq4_xs", 30),
        ] {
            assert_eq!(FileType::by_name(name).unwrap().file_type, id, "{name}");
        }
        for (i, f) in FILE_TYPES.iter().enumerate() {
            assert!(
                FILE_TYPES[..i]
                    .iter()
                    .all(|g| g.name != f.name && g.file_type != f.file_type)
            );
        }
    }

    #[test]
    fn q2_k_mix() {
        for l in ALL_LAYERS {
            for imatrix in [false, true] {
                let t = |role| phi2("q2_k", role, l, 1, imatrix);
                assert_eq!(t(Role::AttnV), T::Q3_K);
                assert_eq!(t(Role::AttnQkv), T::Q3_K);
                assert_eq!(t(Role::AttnOutput), T::Q3_K);
                assert_eq!(t(Role::FfnDown), T::Q3_K);
                for role in [Role::TokenEmbd, Role::AttnQ, Role::AttnK, Role::FfnUp] {
                    assert_eq!(t(role), T::Q2_K, "{role:?} {l}");
                }
            }
            // Grouped-query attention (4 or more heads per key/value head): Q4_K attn_v.
            assert_eq!(phi2("q2_k", Role::AttnV, l, 4, false), T::Q4_K);
            assert_eq!(phi2("q2_k", Role::AttnV, l, 2, false), T::Q3_K);
        }
        assert_eq!(output("q2_k", 2560), T::Q6_K);
    }

    #[test]
    fn q3_k_s_is_q3_k_but_the_output() {
        for l in ALL_LAYERS {
            for role in [
                Role::TokenEmbd,
                Role::AttnQ,
                Role::AttnK,
                Role::AttnV,
                Role::AttnQkv,
                Role::AttnOutput,
                Role::FfnUp,
                Role::FfnDown,
            ] {
                for (n_gqa, imatrix) in [(1, false), (1, true), (4, false)] {
                    assert_eq!(
                        phi2("q3_k_s", role, l, n_gqa, imatrix),
                        T::Q3_K,
                        "{role:?} {l}"
                    );
                }
            }
        }
        assert_eq!(output("q3_k_s", 2560), T::Q6_K);
    }

    #[test]
    fn q3_k_m_mix() {
        for l in ALL_LAYERS {
            let t = |role| phi2("q3_k_m", role, l, 1, false);
            // attn_v: Q5_K on the first two, Q4_K after; ffn_down: Q5_K on the first
            // 32/16 = 2 layers, Q4_K after (Q3_K only for Falcon).
            let first_two = if l < 2 { T::Q5_K } else { T::Q4_K };
            assert_eq!(t(Role::AttnV), first_two, "attn_v {l}");
            assert_eq!(t(Role::AttnQkv), first_two, "attn_qkv {l}");
            assert_eq!(t(Role::FfnDown), first_two, "ffn_down {l}");
            assert_eq!(t(Role::AttnOutput), T::Q4_K);
            for role in [Role::TokenEmbd, Role::AttnQ, Role::AttnK, Role::FfnUp] {
                assert_eq!(t(role), T::Q3_K, "{role:?} {l}");
            }
            assert_eq!(phi2("q3_k_m", Role::FfnDown, l, 4, true), first_two);
        }
        assert_eq!(output("q3_k_m", 2560), T::Q6_K);
    }

    #[test]
    fn q3_k_l_mix() {
        for l in ALL_LAYERS {
            let t = |role| phi2("q3_k_l", role, l, 1, false);
            for role in [Role::AttnV, Role::AttnQkv, Role::AttnOutput, Role::FfnDown] {
                assert_eq!(t(role), T::Q5_K, "{role:?} {l}");
            }
            for role in [Role::TokenEmbd, Role::AttnQ, Role::AttnK, Role::FfnUp] {
                assert_eq!(t(role), T::Q3_K, "{role:?} {l}");
            }
        }
        assert_eq!(output("q3_k_l", 2560), T::Q6_K);
    }

    #[test]
    fn iq4_mixes_bump_the_first_ffn_down_only_without_an_imatrix() {
        for (ft, base) in [("iq4_nl", T::IQ4_NL), ("iq4_xs", T::IQ4_XS)] {
            for l in ALL_LAYERS {
                // The first 32/8 = 4 ffn_down.
                let want = if l < 4 { T::Q5_K } else { base };
                assert_eq!(phi2(ft, Role::FfnDown, l, 1, false), want, "{ft} {l}");
                assert_eq!(phi2(ft, Role::FfnDown, l, 1, true), base, "{ft} {l}");
                for role in [
                    Role::TokenEmbd,
                    Role::AttnQ,
                    Role::AttnK,
                    Role::AttnV,
                    Role::AttnQkv,
                    Role::AttnOutput,
                    Role::FfnUp,
                ] {
                    assert_eq!(phi2(ft, role, l, 1, false), base, "{ft} {role:?} {l}");
                }
                assert_eq!(phi2(ft, Role::AttnV, l, 4, true), T::Q5_K);
            }
            assert_eq!(output(ft, 2560), T::Q6_K, "{ft}");
        }
    }

    /// llama.cpp b10470 bumps a fused attn_qkv as an attn_v (its attn_qkv branch, Q5_K
    /// for Q4_K_M, is unreachable since #19770).
    #[test]
    fn a_fused_qkv_takes_the_attn_v_rules() {
        for l in ALL_LAYERS.into_iter().chain([5, 6, 27, 28]) {
            for ft in [
                "q4_k_m", "q5_k_m", "q4_k_s", "q2_k", "q3_k_m", "q3_k_l", "iq4_xs",
            ] {
                assert_eq!(
                    phi2(ft, Role::AttnQkv, l, 1, false),
                    phi2(ft, Role::AttnV, l, 1, false),
                    "{ft} {l}"
                );
            }
        }
        assert_eq!(phi2("q4_k_m", Role::AttnQkv, 4, 1, false), T::Q4_K);
        assert_eq!(phi2("q4_k_m", Role::AttnQkv, 6, 1, false), T::Q6_K);
        assert_eq!(phi2("q5_k_m", Role::AttnQkv, 4, 1, false), T::Q5_K);
        assert_eq!(phi2("q4_k_s", Role::AttnQkv, 3, 1, false), T::Q5_K);
        assert_eq!(phi2("q4_k_s", Role::AttnQkv, 4, 1, false), T::Q4_K);
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
                .tensor_type(id, 2, 10240, 32, 1, imatrix)
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
        assert_eq!(q4km.tensor_type(out, 2, 2560, 32, 1, false), T::Q6_K);
        let norm = TensorId::new(Role::AttnNorm, Some(0), false);
        assert_eq!(q4km.tensor_type(norm, 1, 2560, 32, 1, false), T::F32);
        let bias = TensorId::new(Role::AttnQ, Some(0), true);
        assert_eq!(q4km.tensor_type(bias, 1, 2560, 32, 1, false), T::F32);
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
            assert_eq!(f.tensor_type(out, 2, 2560, 32, 1, false), want, "{ft}");
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
        assert_eq!(q4_0.tensor_type(out, 2, 32, 2, 1, false), T::Q8_0);
    }

    #[test]
    fn odd_rows_of_the_new_types_fall_back_like_llama_cpp() {
        // Q2_K and Q3_K to Q4_0, IQ4_XS to IQ4_NL; F16 when 32 does not divide the row
        // either (llama.cpp does the same there, and refuses IQ4_NL's own odd rows).
        for ft in ["q2_k", "q3_k_s"] {
            assert_eq!(ty(ft, Role::FfnUp, 5, 32 * 3), T::Q4_0, "{ft}");
            assert_eq!(ty(ft, Role::FfnUp, 5, 48), T::F16, "{ft}");
        }
        assert_eq!(ty("iq4_xs", Role::FfnUp, 5, 32 * 3), T::IQ4_NL);
        assert_eq!(ty("iq4_xs", Role::FfnUp, 5, 48), T::F16);
        assert_eq!(ty("iq4_nl", Role::FfnUp, 5, 32 * 3), T::IQ4_NL);
        assert_eq!(ty("iq4_nl", Role::FfnUp, 5, 48), T::F16);
        // The bumped types fall back by their own table: Q3_K_M's Q4_K/Q5_K, Q3_K_L's Q5_K.
        assert_eq!(ty("q3_k_m", Role::AttnV, 0, 32 * 3), T::Q5_1);
        assert_eq!(ty("q3_k_m", Role::AttnV, 5, 32 * 3), T::Q5_0);
        assert_eq!(ty("q3_k_m", Role::AttnOutput, 5, 32 * 3), T::Q5_0);
        assert_eq!(ty("q3_k_l", Role::FfnDown, 5, 32 * 3), T::Q5_1);
        assert_eq!(ty("q2_k", Role::AttnV, 5, 32 * 3), T::Q4_0);
        assert_eq!(ty("iq4_xs", Role::FfnDown, 0, 32 * 3), T::Q5_1);
        // The output: Q8_0 when the base type's blocks do not fit its rows (Q2_K, Q3_K,
        // IQ4_XS); IQ4_NL's do, so it is Q6_K's fallback, Q8_0 too.
        for ft in ["q2_k", "q3_k_s", "q3_k_m", "q3_k_l", "iq4_nl", "iq4_xs"] {
            assert_eq!(output(ft, 32 * 3), T::Q8_0, "{ft}");
            assert_eq!(output(ft, 48), T::F16, "{ft}");
        }
        // The dev model (2 layers of 32 wide, ffn_down rows of 128), as llama-quantize
        // b10470 types it: Q3_K_M's ffn_down is Q4_K (2/16 = 0 layers get Q5_K), so Q5_0.
        let dev = |ft: &str, role, layer, row_len| {
            let id = TensorId::new(role, Some(layer), false);
            FileType::by_name(ft)
                .unwrap()
                .tensor_type(id, 2, row_len, 2, 1, false)
        };
        assert_eq!(dev("q3_k_m", Role::FfnDown, 0, 128), T::Q5_0);
        assert_eq!(dev("q3_k_m", Role::AttnV, 1, 32), T::Q5_1);
        assert_eq!(dev("iq4_nl", Role::FfnDown, 0, 128), T::IQ4_NL);
        assert_eq!(dev("q2_k", Role::FfnDown, 1, 128), T::Q4_0);
    }
}
