//! Phi-2's tokenizer, built from a GGUF's `tokenizer.ggml.*` metadata on Hugging Face's
//! `tokenizers` crate, so that it encodes and decodes exactly as `transformers` does.
//!
//! Phi-2 (CodeGen's tokenizer) is GPT-2's byte-level BPE plus 39 added tokens:
//! `<|endoftext|>` (50256, special) and 38 runs of whitespace (50257..=50294: 31 down to
//! 2 spaces, then 9 down to 2 tabs). llama.cpp's converter stores them as
//! `tokenizer.ggml.model = "gpt2"`, `pre = "phi-2"`, every token with its type (1 normal,
//! 3 control, 4 user-defined, 5 unused: the rows 50295..51199 that exist only in the
//! embedding, named `[PADn]`) and the merges as `"a b"` strings.
//!
//! Encoding, as Hugging Face does it:
//! 1. the text is split on the added tokens, leftmost-longest over all of them (so
//!    `"Hello  world"` is `Hello`, `"  "`, `world`, and `<|endoftext|>` in text is 50256);
//! 2. every other piece goes through GPT-2's split regex, its UTF-8 bytes are mapped to
//!    GPT-2's byte characters, and BPE merges them by rank.
//!
//! No BOS is added. Decoding maps every token back to its bytes and reads them as UTF-8,
//! lossily only where the bytes are invalid; special tokens are kept and spaces are not
//! "cleaned up" (transformers 5.x). Ids without text (padding rows, ids past the
//! vocabulary) decode to nothing.
//!
//! The split regex runs on `fancy-regex` (see the dependency in Cargo.toml). Its character
//! classes agree with Oniguruma's (what the Python package uses) on every code point and the
//! splits agree, with one pathological exception: `fancy-regex` gives up after a million
//! backtracking steps, which a single run of about a million whitespace characters (other
//! than spaces and tabs, which the added tokens absorb first) can reach; the crate then
//! leaves the rest of that piece unsplit, so such an input may tokenize differently from
//! Hugging Face's. It is never an error nor a panic.

use tokenizers::decoders::DecoderWrapper;
use tokenizers::models::bpe::{BPE, Vocab};
use tokenizers::normalizers::NormalizerWrapper;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::processors::PostProcessorWrapper;
use tokenizers::{AddedToken, TokenizerImpl};

use crate::gguf::{GgufHeader, MetaArray, MetaType, MetaValue};

pub const KEY_MODEL: &str = "tokenizer.ggml.model";
pub const KEY_PRE: &str = "tokenizer.ggml.pre";
pub const KEY_TOKENS: &str = "tokenizer.ggml.tokens";
pub const KEY_TOKEN_TYPE: &str = "tokenizer.ggml.token_type";
pub const KEY_MERGES: &str = "tokenizer.ggml.merges";
pub const KEY_BOS: &str = "tokenizer.ggml.bos_token_id";
pub const KEY_EOS: &str = "tokenizer.ggml.eos_token_id";
pub const KEY_ADD_BOS: &str = "tokenizer.ggml.add_bos_token";

/// The `tokenizer.ggml.pre` values whose pre-tokenizer is GPT-2's regex.
const GPT2_PRE: &[&str] = &["phi-2", "gpt-2"];

/// Why a GGUF's tokenizer cannot be built, or a text not encoded. Every variant names the
/// metadata key concerned.
#[derive(Debug, thiserror::Error)]
pub enum TokenizerError {
    #[error("the GGUF has no tokenizer: metadata key {0:?} is missing")]
    MissingKey(&'static str),
    #[error("metadata key {key:?} is {found}, expected {expected}")]
    WrongType {
        key: &'static str,
        expected: &'static str,
        found: String,
    },
    #[error(
        "{KEY_MODEL} is {0:?}: phiq supports only \"gpt2\" (GPT-2 byte-level BPE, as Phi-2 uses)"
    )]
    UnsupportedModel(String),
    #[error("{KEY_PRE} is {0:?}: phiq supports only GPT-2's pre-tokenizer (\"phi-2\", \"gpt-2\")")]
    UnsupportedPre(String),
    #[error("metadata key {KEY_TOKENS:?} is empty")]
    EmptyVocab,
    #[error("metadata key {key:?} has {len} entries, but {KEY_TOKENS:?} has {n_vocab}")]
    LengthMismatch {
        key: &'static str,
        len: usize,
        n_vocab: usize,
    },
    #[error("metadata key {KEY_TOKEN_TYPE:?}: token {id} has unknown type {value}")]
    BadTokenType { id: usize, value: i64 },
    #[error(
        "metadata key {KEY_TOKENS:?}: no normal token for byte {byte:#04x} ({piece:?}), which byte-level BPE needs"
    )]
    MissingByte { byte: u8, piece: String },
    #[error("metadata key {KEY_MERGES:?}: merge #{index} {merge:?} {why}")]
    BadMerge {
        index: usize,
        merge: String,
        why: &'static str,
    },
    #[error("metadata key {key:?}: token id {id} is not below the vocabulary size {n_vocab}")]
    BadSpecialId {
        key: &'static str,
        id: u64,
        n_vocab: usize,
    },
    #[error("metadata key {KEY_TOKENS:?}: token {id} {piece:?} also appears as token {other}")]
    DuplicateToken {
        id: usize,
        other: u32,
        piece: String,
    },
    #[error("building the tokenizer: {0}")]
    Build(String),
    #[error("encoding: {0}")]
    Encode(String),
}

/// llama.cpp's `enum llama_token_type`, as far as a GPT-2 vocabulary uses it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TokenKind {
    /// An ordinary BPE token (llama.cpp types 1; also 0 "undefined" and 6 "byte").
    Normal,
    /// A special token such as `<|endoftext|>` (types 2 "unknown" and 3 "control"): matched
    /// in text before BPE, kept when decoding.
    Control,
    /// An added token (type 4), such as Phi-2's whitespace runs: matched before BPE.
    UserDefined,
    /// A row without text (type 5), such as Phi-2's `[PADn]` padding: decodes to nothing.
    Unused,
}

impl TokenKind {
    fn from_ggml(value: i64) -> Option<TokenKind> {
        Some(match value {
            0 | 1 | 6 => TokenKind::Normal,
            2 | 3 => TokenKind::Control,
            4 => TokenKind::UserDefined,
            5 => TokenKind::Unused,
            _ => return None,
        })
    }
}

type HfTokenizer =
    TokenizerImpl<BPE, NormalizerWrapper, ByteLevel, PostProcessorWrapper, DecoderWrapper>;

/// Phi-2's tokenizer: encodes text to token ids and decodes them back.
pub struct Tokenizer {
    hf: HfTokenizer,
    /// The GGUF's token strings, by id.
    pieces: Vec<String>,
    kinds: Vec<TokenKind>,
    /// What every id decodes to (`None`: nothing), for the streaming decoder.
    bytes: Vec<Option<Box<[u8]>>>,
    bos: Option<u32>,
    eos: Option<u32>,
    add_bos: bool,
}

impl std::fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokenizer")
            .field("n_vocab", &self.pieces.len())
            .field("bos", &self.bos)
            .field("eos", &self.eos)
            .finish_non_exhaustive()
    }
}

impl Tokenizer {
    /// Builds the tokenizer from a GGUF's `tokenizer.ggml.*` metadata.
    pub fn from_gguf(header: &GgufHeader) -> Result<Tokenizer, TokenizerError> {
        let model = string(header, KEY_MODEL)?;
        if model != "gpt2" {
            return Err(TokenizerError::UnsupportedModel(model.to_string()));
        }
        // Files written before llama.cpp had this key (May 2024) used GPT-2's regex for Phi-2.
        if let Some(pre) = optional(header, KEY_PRE) {
            let pre = pre
                .as_str()
                .ok_or_else(|| wrong_type(KEY_PRE, "a string", pre))?;
            if !GPT2_PRE.contains(&pre) {
                return Err(TokenizerError::UnsupportedPre(pre.to_string()));
            }
        }

        let pieces: Vec<String> = string_array(header, KEY_TOKENS)?
            .iter()
            .map(|s| s.to_string())
            .collect();
        let n_vocab = pieces.len();
        if n_vocab == 0 {
            return Err(TokenizerError::EmptyVocab);
        }
        if u32::try_from(n_vocab).is_err() {
            return Err(TokenizerError::Build(format!(
                "{n_vocab} tokens do not fit 32-bit ids"
            )));
        }
        let kinds = token_kinds(header, &pieces)?;
        let merges = string_array(header, KEY_MERGES)?;
        let bos = special_id(header, KEY_BOS, n_vocab)?;
        let eos = special_id(header, KEY_EOS, n_vocab)?;
        let add_bos = match optional(header, KEY_ADD_BOS) {
            None => false,
            Some(v) => v
                .as_bool()
                .ok_or_else(|| wrong_type(KEY_ADD_BOS, "a bool", v))?,
        };

        // Every token with text goes into the BPE model's vocabulary with its GGUF id, the
        // added ones too: the crate gives an added token the id its text has in the model,
        // and would otherwise number added tokens on from the model's size. BPE itself only
        // ever looks up byte-level strings, which the whitespace runs are not.
        let mut vocab = Vocab::default();
        for (id, (piece, kind)) in pieces.iter().zip(&kinds).enumerate() {
            if *kind == TokenKind::Unused || piece.is_empty() {
                continue;
            }
            if let Some(&other) = vocab.get(piece.as_str()) {
                return Err(TokenizerError::DuplicateToken {
                    id,
                    other,
                    piece: piece.clone(),
                });
            }
            vocab.insert(piece.clone(), id as u32);
        }
        // Without these, BPE would silently drop the bytes it has no token for.
        for byte in 0..=255u8 {
            let piece = BYTE_CHARS[byte as usize].to_string();
            let normal = vocab
                .get(piece.as_str())
                .is_some_and(|&id| kinds[id as usize] == TokenKind::Normal);
            if !normal {
                return Err(TokenizerError::MissingByte { byte, piece });
            }
        }
        let merges = parse_merges(merges, &vocab)?;

        let bpe = BPE::builder()
            .vocab_and_merges(vocab, merges)
            .build()
            .map_err(|e| TokenizerError::Build(e.to_string()))?;
        let mut hf = HfTokenizer::new(bpe);
        // As Phi-2's tokenizer.json: no normalizer; ByteLevel without a prefix space, with
        // GPT-2's regex; ByteLevel decoding.
        hf.with_pre_tokenizer(Some(ByteLevel::new(false, true, true)));
        hf.with_decoder(Some(ByteLevel::new(false, true, true)));
        let added = |kind| {
            pieces
                .iter()
                .zip(&kinds)
                .filter(move |(p, k)| **k == kind && !p.is_empty())
                .map(|(p, _)| p)
        };
        // Special tokens match the raw text; user-defined ones the normalized text, which
        // without a normalizer is the same.
        hf.add_special_tokens(added(TokenKind::Control).map(|p| {
            AddedToken::from(p.clone(), true)
                .normalized(false)
                .single_word(false)
                .lstrip(false)
                .rstrip(false)
        }))
        .map_err(|e| TokenizerError::Build(e.to_string()))?;
        hf.add_tokens(added(TokenKind::UserDefined).map(|p| {
            AddedToken::from(p.clone(), false)
                .normalized(true)
                .single_word(false)
                .lstrip(false)
                .rstrip(false)
        }))
        .map_err(|e| TokenizerError::Build(e.to_string()))?;

        // What each id decodes to, by the crate's own lookup (added tokens, then the
        // model), turned into bytes as its ByteLevel decoder does.
        let bytes = (0..n_vocab as u32)
            .map(|id| {
                hf.id_to_token(id)
                    .map(|t| token_bytes(&t).into_boxed_slice())
            })
            .collect();
        Ok(Tokenizer {
            hf,
            pieces,
            kinds,
            bytes,
            bos,
            eos,
            add_bos,
        })
    }

    /// The token ids of `text`, without a BOS.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>, TokenizerError> {
        let encoding = self
            .hf
            .encode_fast(text, false)
            .map_err(|e| TokenizerError::Encode(e.to_string()))?;
        Ok(encoding.get_ids().to_vec())
    }

    /// The text of `ids`: special tokens kept, invalid UTF-8 replaced by U+FFFD, ids without
    /// text (padding rows, ids past the vocabulary) skipped.
    pub fn decode(&self, ids: &[u32]) -> String {
        match self.hf.decode(ids, false) {
            Ok(text) => text,
            // The ByteLevel decoder cannot fail; should it, the same bytes give the same text.
            Err(_) => String::from_utf8_lossy(&self.decode_bytes(ids)).into_owned(),
        }
    }

    /// The raw bytes of `ids`, which may end inside a UTF-8 character.
    pub fn decode_bytes(&self, ids: &[u32]) -> Vec<u8> {
        ids.iter()
            .filter_map(|&id| self.token_bytes(id))
            .flatten()
            .copied()
            .collect()
    }

    /// The bytes `id` decodes to; `None` for ids without text.
    pub fn token_bytes(&self, id: u32) -> Option<&[u8]> {
        self.bytes.get(id as usize)?.as_deref()
    }

    /// The token's string as the vocabulary stores it (GPT-2's byte characters, as in
    /// `"Ġworld"`, or `"[PAD50295]"`), for display; `""` past the vocabulary.
    pub fn token_piece(&self, id: u32) -> &str {
        self.pieces.get(id as usize).map_or("", String::as_str)
    }

    /// The kind of token `id` is; `None` past the vocabulary.
    pub fn token_kind(&self, id: u32) -> Option<TokenKind> {
        self.kinds.get(id as usize).copied()
    }

    /// The id of a token by its vocabulary string, e.g. `"<|endoftext|>"`.
    pub fn token_id(&self, piece: &str) -> Option<u32> {
        self.hf.token_to_id(piece)
    }

    /// Number of token ids, padding rows included (Phi-2: 51200).
    pub fn n_vocab(&self) -> usize {
        self.pieces.len()
    }

    /// `tokenizer.ggml.bos_token_id` (Phi-2: 50256).
    pub fn bos_id(&self) -> Option<u32> {
        self.bos
    }

    /// `tokenizer.ggml.eos_token_id` (Phi-2: 50256).
    pub fn eos_id(&self) -> Option<u32> {
        self.eos
    }

    /// `tokenizer.ggml.add_bos_token` (Phi-2: false). [`Tokenizer::encode`] never adds one.
    pub fn add_bos(&self) -> bool {
        self.add_bos
    }

    /// A decoder to feed generated ids one at a time.
    pub fn stream_decoder(&self) -> StreamDecoder<'_> {
        StreamDecoder::new(self)
    }
}

/// Decodes ids one at a time, returning the text that each one completes. Bytes of a
/// character split across tokens are held until it is whole; bytes that can never be
/// valid become U+FFFD as soon as that is known, exactly where [`Tokenizer::decode`] puts
/// them, so that everything returned by [`push`](Self::push) and then
/// [`flush`](Self::flush) is the whole decode.
#[derive(Debug)]
pub struct StreamDecoder<'a> {
    tokenizer: &'a Tokenizer,
    /// Bytes not yet returned: at most the start of one incomplete character.
    pending: Vec<u8>,
}

impl<'a> StreamDecoder<'a> {
    pub fn new(tokenizer: &'a Tokenizer) -> StreamDecoder<'a> {
        StreamDecoder {
            tokenizer,
            pending: Vec::new(),
        }
    }

    /// Adds `id`; returns the text that became complete (often empty).
    pub fn push(&mut self, id: u32) -> String {
        if let Some(bytes) = self.tokenizer.token_bytes(id) {
            self.pending.extend_from_slice(bytes);
        }
        let mut out = String::new();
        let mut start = 0;
        loop {
            match std::str::from_utf8(&self.pending[start..]) {
                Ok(s) => {
                    out.push_str(s);
                    start = self.pending.len();
                    break;
                }
                Err(e) => {
                    let valid = start + e.valid_up_to();
                    // The prefix was just checked, so this never fails.
                    out.push_str(std::str::from_utf8(&self.pending[start..valid]).unwrap_or(""));
                    match e.error_len() {
                        // Invalid whatever follows: one U+FFFD, as `from_utf8_lossy` does.
                        Some(n) => {
                            out.push(char::REPLACEMENT_CHARACTER);
                            start = valid + n;
                        }
                        // A character that later bytes may complete.
                        None => {
                            start = valid;
                            break;
                        }
                    }
                }
            }
        }
        self.pending.drain(..start);
        out
    }

    /// Ends the stream: an incomplete character left over becomes U+FFFD. The decoder can
    /// then be used again.
    pub fn flush(&mut self) -> String {
        let out = String::from_utf8_lossy(&self.pending).into_owned();
        self.pending.clear();
        out
    }

    /// Whether bytes of an incomplete character are held.
    pub fn has_pending(&self) -> bool {
        !self.pending.is_empty()
    }
}

/// GPT-2's `bytes_to_unicode`: the printable Latin-1 bytes stand for themselves, the other
/// 68 (controls, space, 0x7f..0xa0, 0xad) for U+0100 onwards, in byte order.
const BYTE_CHARS: [char; 256] = byte_chars();

const fn byte_chars() -> [char; 256] {
    let mut table = ['\0'; 256];
    let mut next = 0x100u32;
    let mut b = 0;
    while b < 256 {
        let printable = (b >= 0x21 && b <= 0x7e) || (b >= 0xa1 && b <= 0xac) || b >= 0xae;
        let c = if printable {
            b as u32
        } else {
            next += 1;
            next - 1
        };
        table[b] = match char::from_u32(c) {
            Some(c) => c,
            None => '\0',
        };
        b += 1;
    }
    table
}

/// The inverse of [`BYTE_CHARS`], indexed by code point: `CHAR_BYTES[c]` is the byte that
/// `c` stands for, or -1.
const CHAR_BYTES: [i16; 0x100 + 68] = char_bytes();

const fn char_bytes() -> [i16; 0x100 + 68] {
    let mut table = [-1i16; 0x100 + 68];
    let mut b = 0;
    while b < 256 {
        table[BYTE_CHARS[b] as usize] = b as i16;
        b += 1;
    }
    table
}

/// The byte that GPT-2's byte character `c` stands for.
fn char_byte(c: char) -> Option<u8> {
    let b = *CHAR_BYTES.get(c as usize)?;
    u8::try_from(b).ok()
}

/// A token's bytes as the crate's ByteLevel decoder makes them: its byte characters if
/// all of it is, else (an added token such as `"  "`) its own UTF-8.
fn token_bytes(token: &str) -> Vec<u8> {
    token
        .chars()
        .map(char_byte)
        .collect::<Option<Vec<u8>>>()
        .unwrap_or_else(|| token.as_bytes().to_vec())
}

fn optional<'h>(header: &'h GgufHeader, key: &'static str) -> Option<&'h MetaValue> {
    header.get(key)
}

fn required<'h>(
    header: &'h GgufHeader,
    key: &'static str,
) -> Result<&'h MetaValue, TokenizerError> {
    header.get(key).ok_or(TokenizerError::MissingKey(key))
}

fn wrong_type(key: &'static str, expected: &'static str, v: &MetaValue) -> TokenizerError {
    let found = match v {
        MetaValue::Array(a) => format!("an array of {}", a.elem_type),
        v => format!("a {}", v.meta_type()),
    };
    TokenizerError::WrongType {
        key,
        expected,
        found,
    }
}

fn string<'h>(header: &'h GgufHeader, key: &'static str) -> Result<&'h str, TokenizerError> {
    let v = required(header, key)?;
    v.as_str().ok_or_else(|| wrong_type(key, "a string", v))
}

fn array<'h>(
    header: &'h GgufHeader,
    key: &'static str,
    expected: &'static str,
    elem_ok: fn(MetaType) -> bool,
) -> Result<&'h MetaArray, TokenizerError> {
    let v = required(header, key)?;
    match v.as_array() {
        Some(a) if elem_ok(a.elem_type) || a.is_empty() => Ok(a),
        _ => Err(wrong_type(key, expected, v)),
    }
}

fn string_array<'h>(
    header: &'h GgufHeader,
    key: &'static str,
) -> Result<Vec<&'h str>, TokenizerError> {
    let a = array(header, key, "an array of strings", |t| {
        t == MetaType::String
    })?;
    a.values
        .iter()
        .map(|v| {
            v.as_str()
                .ok_or_else(|| wrong_type(key, "an array of strings", v))
        })
        .collect()
}

/// Each token's kind from `tokenizer.ggml.token_type`. Without that key: llama.cpp's
/// `[PADn]` placeholders are unused, tokens that are not all byte characters (which BPE
/// can never make, such as Phi-2's whitespace runs) are added tokens, the rest normal.
fn token_kinds(header: &GgufHeader, pieces: &[String]) -> Result<Vec<TokenKind>, TokenizerError> {
    if optional(header, KEY_TOKEN_TYPE).is_none() {
        return Ok(pieces
            .iter()
            .enumerate()
            .map(|(id, p)| {
                if is_placeholder(id, p) {
                    TokenKind::Unused
                } else if p.chars().all(|c| char_byte(c).is_some()) {
                    TokenKind::Normal
                } else {
                    TokenKind::UserDefined
                }
            })
            .collect());
    }
    const INTS: &str = "an array of integers";
    let is_int = |t: MetaType| {
        use MetaType::*;
        matches!(t, U8 | I8 | U16 | I16 | U32 | I32 | U64 | I64)
    };
    let a = array(header, KEY_TOKEN_TYPE, INTS, is_int)?;
    if a.len() != pieces.len() {
        return Err(TokenizerError::LengthMismatch {
            key: KEY_TOKEN_TYPE,
            len: a.len(),
            n_vocab: pieces.len(),
        });
    }
    a.values
        .iter()
        .zip(pieces)
        .enumerate()
        .map(|(id, (v, piece))| {
            let value = v
                .as_i64()
                .ok_or_else(|| wrong_type(KEY_TOKEN_TYPE, INTS, v))?;
            match TokenKind::from_ggml(value) {
                // Older llama.cpp converters typed their `[PADn]` placeholders user-defined
                // (older Phi-2 files): they are no text, as in Hugging Face's tokenizer.
                Some(TokenKind::UserDefined) if is_placeholder(id, piece) => Ok(TokenKind::Unused),
                Some(kind) => Ok(kind),
                None => Err(TokenizerError::BadTokenType { id, value }),
            }
        })
        .collect()
}

/// Whether `piece` is llama.cpp's placeholder `[PAD<id>]` for a row without a token.
fn is_placeholder(id: usize, piece: &str) -> bool {
    piece
        .strip_prefix("[PAD")
        .and_then(|rest| rest.strip_suffix(']'))
        .is_some_and(|n| n == id.to_string())
}

/// `"a b"` merges as pairs, each checked against the vocabulary (which the crate would
/// otherwise check only partly, and could panic on).
fn parse_merges(merges: Vec<&str>, vocab: &Vocab) -> Result<Vec<(String, String)>, TokenizerError> {
    let mut joined = String::new();
    merges
        .into_iter()
        .enumerate()
        .map(|(index, merge)| {
            let bad = |why| TokenizerError::BadMerge {
                index,
                merge: merge.to_string(),
                why,
            };
            // As llama.cpp: the separator is the first space after the first character.
            let first_len = merge.chars().next().map_or(0, char::len_utf8);
            let at = merge[first_len..]
                .find(' ')
                .map(|i| first_len + i)
                .ok_or_else(|| bad("has no space between its two tokens"))?;
            let (a, b) = (&merge[..at], &merge[at + 1..]);
            if a.is_empty() || b.is_empty() {
                return Err(bad("has an empty side"));
            }
            if !vocab.contains_key(a) || !vocab.contains_key(b) {
                return Err(bad("joins a token that is not in the vocabulary"));
            }
            joined.clear();
            joined.push_str(a);
            joined.push_str(b);
            if !vocab.contains_key(joined.as_str()) {
                return Err(bad("makes a token that is not in the vocabulary"));
            }
            Ok((a.to_string(), b.to_string()))
        })
        .collect()
}

/// A special token id, if the key is there; it must name a token.
fn special_id(
    header: &GgufHeader,
    key: &'static str,
    n_vocab: usize,
) -> Result<Option<u32>, TokenizerError> {
    let Some(v) = optional(header, key) else {
        return Ok(None);
    };
    let id = v
        .as_u64()
        .ok_or_else(|| wrong_type(key, "a non-negative integer", v))?;
    match u32::try_from(id) {
        Ok(id32) if (id32 as usize) < n_vocab => Ok(Some(id32)),
        _ => Err(TokenizerError::BadSpecialId { key, id, n_vocab }),
    }
}
