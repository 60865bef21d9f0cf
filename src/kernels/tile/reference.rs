//! A plain-Rust [`Engine`]: the tile design's own reference, run natively on every
//! machine. It checks the layouts, the formats and the prepared activations against
//! the scalar `vec_dot` without any instruction set, in both offset styles (codes
//! centred at decode, as the ARM engines do, or corrected afterwards, as x86's) and
//! with paired tokens (as `smmla` takes them), so a SIMD engine has only its own
//! primitives left to prove.

use half::f16;

use super::Engine;
use super::layout::Lanes;

/// `R` rows; `CENTERS` and `PAIRED` as [`Engine`] says.
#[derive(Clone, Copy)]
pub struct Reference<const R: usize, const CENTERS: bool, const PAIRED: bool>;

// SAFETY: plain Rust, no instruction set to detect.
unsafe impl<const R: usize, const CENTERS: bool, const PAIRED: bool> Engine<R>
    for Reference<R, CENTERS, PAIRED>
{
    type V = [[u8; 4]; R];
    /// `[row][side]`, as [`Reference::at`] maps them.
    type I = [[i32; 2]; R];
    type F = [[f32; 2]; R];
    type RowsI = [i32; R];
    type RowsF = [f32; R];

    const CENTERS: bool = CENTERS;
    const PAIRED: bool = PAIRED;
    const Q8_OFFSET: i32 = if CENTERS { 0 } else { 128 };

    fn load(self, v: &Lanes<R>) -> Self::V {
        *v
    }

    fn shift_mask(self, v: Self::V, shift: i32, mask: u8) -> Self::V {
        v.map(|l| {
            l.map(|b| {
                let s = if shift >= 0 { b << shift } else { b >> -shift };
                s & mask
            })
        })
    }

    fn or(self, a: Self::V, b: Self::V) -> Self::V {
        core::array::from_fn(|r| core::array::from_fn(|j| a[r][j] | b[r][j]))
    }

    fn sub(self, v: Self::V, k: u8) -> Self::V {
        v.map(|l| l.map(|b| b.wrapping_sub(k)))
    }

    /// Centring references read Q4_0 as the signed engines do: nibbles ×16.
    const Q4_0_UNIT: i32 = if CENTERS { 16 } else { 1 };

    fn q4_0_codes(self, x: Self::V) -> [Self::V; 2] {
        if CENTERS {
            [self.shift_mask(x, 4, 0xf0), self.shift_mask(x, 0, 0xf0)]
        } else {
            let x = self.xor(x, 0x88);
            [self.shift_mask(x, 0, 0x0f), self.shift_mask(x, -4, 0x0f)]
        }
    }

    fn xor(self, v: Self::V, k: u8) -> Self::V {
        v.map(|l| l.map(|b| b ^ k))
    }

    fn lookup16(self, v: Self::V, table: &[i8; 16]) -> Self::V {
        v.map(|l| l.map(|b| table[usize::from(b)] as u8))
    }

    fn q8_codes(self, v: Self::V) -> Self::V {
        if CENTERS {
            v
        } else {
            v.map(|l| l.map(|b| b ^ 0x80))
        }
    }

    fn dots<const N: usize, const T: usize>(
        self,
        init: [Self::I; T],
        codes: &[Self::V; N],
        words: &[u32],
        w: usize,
        w0: usize,
        bound: i32,
    ) -> [Self::I; T] {
        let code = |v: u8| {
            let c = if CENTERS {
                i32::from(v as i8)
            } else {
                i32::from(v)
            };
            assert!(c.abs() <= bound, "code {c} beyond the stated bound {bound}");
            c
        };
        self.dot_with(init, codes, words, w, w0, code)
    }

    fn dots_q8<const N: usize, const T: usize>(
        self,
        init: [Self::I; T],
        codes: &[Self::V; N],
        words: &[u32],
        w: usize,
        w0: usize,
    ) -> [Self::I; T] {
        let code = |v: u8| {
            if CENTERS {
                i32::from(v as i8)
            } else {
                i32::from(v)
            }
        };
        self.dot_with(init, codes, words, w, w0, code)
    }

    /// Correcting references take unsigned codes of any size, so the wide-code
    /// path runs in the tests on every machine.
    const WIDE_CODES: bool = !CENTERS;

    fn shr_exact<const T: usize>(self, x: [Self::I; T], s: u32) -> [Self::I; T] {
        self.each(|k, r, t| {
            assert_eq!(x[k][r][t] % (1 << s), 0, "inexact shift");
            x[k][r][t] >> s
        })
    }

    fn zero_i<const T: usize>(self) -> [Self::I; T] {
        [[[0; 2]; R]; T]
    }

    fn splat_tokens<const T: usize>(self, v: &[i32; T]) -> [Self::I; T] {
        self.each(|k, r, s| {
            let (_, t) = self.at::<T>(k, r, s);
            v[t]
        })
    }

    fn mla_rows<const T: usize>(
        self,
        acc: [Self::I; T],
        x: [Self::I; T],
        rows: Self::RowsI,
    ) -> [Self::I; T] {
        self.each(|k, r, s| acc[k][r][s] + x[k][r][s] * rows[r])
    }

    fn mla_outer<const T: usize>(
        self,
        acc: [Self::I; T],
        rows: Self::RowsI,
        tokens: &[i32; T],
    ) -> [Self::I; T] {
        self.each(|k, r, s| {
            let (_, t) = self.at::<T>(k, r, s);
            acc[k][r][s] + rows[r] * tokens[t]
        })
    }

    /// Checks the 16-bit contract the x86 engines' `vpdpwssd`/`vpmaddwd` rely on.
    fn mla_rows_i16<const T: usize>(
        self,
        acc: [Self::I; T],
        x: [Self::I; T],
        rows: Self::RowsI,
    ) -> [Self::I; T] {
        unsigned16(&rows);
        let small = |v: &i32| i16::try_from(*v).is_ok();
        assert!(x.iter().flatten().flatten().all(small), "sum beyond i16");
        self.mla_rows(acc, x, rows)
    }

    fn mla_outer_i16<const T: usize>(
        self,
        acc: [Self::I; T],
        rows: Self::RowsI,
        tokens: &[i32; T],
    ) -> [Self::I; T] {
        unsigned16(&rows);
        assert!(
            tokens.iter().all(|t| i16::try_from(*t).is_ok()),
            "token {tokens:?}"
        );
        self.mla_outer(acc, rows, tokens)
    }

    fn rows_u8(self, b: &[u8; R]) -> Self::RowsI {
        b.map(i32::from)
    }

    fn rows_i8(self, b: &[i8; R]) -> Self::RowsI {
        b.map(i32::from)
    }

    fn rows_f16(self, b: &[f16; R]) -> Self::RowsF {
        b.map(f16::to_f32)
    }

    fn rows_f32(self, b: &[f32; R]) -> Self::RowsF {
        *b
    }

    fn scale_rows(self, r: Self::RowsF, k: f32) -> Self::RowsF {
        r.map(|v| v * k)
    }

    fn zero_f<const T: usize>(self) -> [Self::F; T] {
        [[[0.0; 2]; R]; T]
    }

    fn fma_scaled<const T: usize>(
        self,
        acc: [Self::F; T],
        x: [Self::I; T],
        rows: Self::RowsF,
        tokens: &[f32; T],
    ) -> [Self::F; T] {
        self.each_f(|k, r, s| {
            let (_, t) = self.at::<T>(k, r, s);
            acc[k][r][s] + x[k][r][s] as f32 * (rows[r] * tokens[t])
        })
    }

    fn fma_outer<const T: usize>(
        self,
        acc: [Self::F; T],
        rows: Self::RowsF,
        tokens: &[f32; T],
    ) -> [Self::F; T] {
        self.each_f(|k, r, s| {
            let (_, t) = self.at::<T>(k, r, s);
            acc[k][r][s] + rows[r] * tokens[t]
        })
    }

    fn add_f<const T: usize>(self, a: [Self::F; T], b: [Self::F; T]) -> [Self::F; T] {
        self.each_f(|k, r, s| a[k][r][s] + b[k][r][s])
    }

    fn store<const T: usize>(self, acc: &[Self::F; T], out: &mut [f32]) {
        for (k, a) in acc.iter().enumerate() {
            for (r, sides) in a.iter().enumerate() {
                for (s, v) in sides.iter().enumerate() {
                    if self.used::<T>(k, s) {
                        let (r, t) = self.at::<T>(k, r, s);
                        out[t * R + r] = *v;
                    }
                }
            }
        }
    }
}

/// The rows a 16-bit product takes: unsigned, below 2¹⁵.
fn unsigned16<const R: usize>(rows: &[i32; R]) {
    assert!(
        rows.iter().all(|r| (0..1 << 15).contains(r)),
        "row {rows:?}"
    );
}

impl<const R: usize, const CENTERS: bool, const PAIRED: bool> Reference<R, CENTERS, PAIRED> {
    /// Whether side `s` of accumulator `k` holds a token: side 0 of token `k`;
    /// paired, both sides of pair `k` for `k < T / 2`, and none in the rest.
    fn used<const T: usize>(self, k: usize, s: usize) -> bool {
        if PAIRED { k < T / 2 } else { s == 0 }
    }

    /// (row, token) of lane `(r, s)` of accumulator `k` (see [`Reference::used`]).
    fn at<const T: usize>(self, k: usize, r: usize, s: usize) -> (usize, usize) {
        if PAIRED { (r, 2 * k + s) } else { (r, k) }
    }

    fn each<const T: usize>(self, f: impl Fn(usize, usize, usize) -> i32) -> [[[i32; 2]; R]; T] {
        core::array::from_fn(|k| {
            core::array::from_fn(|r| {
                core::array::from_fn(|s| if self.used::<T>(k, s) { f(k, r, s) } else { 0 })
            })
        })
    }

    fn each_f<const T: usize>(self, f: impl Fn(usize, usize, usize) -> f32) -> [[[f32; 2]; R]; T] {
        core::array::from_fn(|k| {
            core::array::from_fn(|r| {
                core::array::from_fn(|s| {
                    if self.used::<T>(k, s) {
                        f(k, r, s)
                    } else {
                        0.0
                    }
                })
            })
        })
    }

    /// Σ codes · words per (row, token), with each activation word read where the
    /// prepared layout puts it.
    fn dot_with<const N: usize, const T: usize>(
        self,
        init: [[[i32; 2]; R]; T],
        codes: &[[[u8; 4]; R]; N],
        words: &[u32],
        w: usize,
        w0: usize,
        code: impl Fn(u8) -> i32,
    ) -> [[[i32; 2]; R]; T] {
        let word = |t: usize, j: usize| -> [i8; 4] {
            let at = if PAIRED {
                (t / 2) * 2 * w + (j / 2) * 4 + (t % 2) * 2 + j % 2
            } else {
                t * w + j
            };
            bytemuck::cast(words[at])
        };
        self.each(|k, r, s| {
            let (_, t) = self.at::<T>(k, r, s);
            let dot: i32 = codes
                .iter()
                .enumerate()
                .map(|(j, c)| {
                    let a = word(t, w0 + j);
                    (0..4).map(|b| code(c[r][b]) * i32::from(a[b])).sum::<i32>()
                })
                .sum();
            init[k][r][s] + dot
        })
    }
}
