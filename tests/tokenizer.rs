//! Phi-2's tokenizer, built from GGUF metadata, against Hugging Face's outputs in
//! tests/fixtures/oracle/dev/expected/reference.json.
//!
//! The GGUF holds only the `tokenizer.*` metadata, made from the dev checkpoint's tokenizer
//! files by the converter's own code (`phiq_quantize::vocab`), and no tensors.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use phiq::gguf::{GgufFile, GgufWriter, MetaValue};
use phiq::tokenizer::{TokenKind, Tokenizer, TokenizerError};
use serde_json::Value;

const N_VOCAB: usize = 51200;

fn oracle() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/oracle/dev")
}

fn reference() -> &'static Value {
    static REF: OnceLock<Value> = OnceLock::new();
    REF.get_or_init(|| {
        let path = oracle().join("expected/reference.json");
        let text = std::fs::read_to_string(&path).unwrap();
        serde_json::from_str(&text).unwrap()
    })
}

/// The tokenizer metadata of the dev checkpoint, as the converter writes it.
fn metadata() -> Vec<(String, MetaValue)> {
    let vocab = phiq_quantize::vocab::Vocab::load(&oracle().join("checkpoint"), N_VOCAB).unwrap();
    let mut kv = vec![(
        "general.architecture".to_string(),
        MetaValue::String("phi2".into()),
    )];
    kv.extend(vocab.metadata());
    kv
}

/// Writes `metadata` as a GGUF without tensors and builds the tokenizer from the file read
/// back.
fn tokenizer_from(
    dir: &Path,
    metadata: &[(String, MetaValue)],
) -> Result<Tokenizer, TokenizerError> {
    let path = dir.join("tokenizer.gguf");
    GgufWriter::create(&path, metadata, vec![])
        .unwrap()
        .finish()
        .unwrap();
    let file = GgufFile::open(&path).unwrap();
    Tokenizer::from_gguf(file.header())
}

fn tokenizer() -> &'static Tokenizer {
    static TOK: OnceLock<Tokenizer> = OnceLock::new();
    TOK.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        tokenizer_from(dir.path(), &metadata()).unwrap()
    })
}

fn ids(v: &Value) -> Vec<u32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| u32::try_from(x.as_u64().unwrap()).unwrap())
        .collect()
}

fn cases() -> &'static [Value] {
    reference()["tokenizer"]["cases"].as_array().unwrap()
}

fn stream_decode(tok: &Tokenizer, ids: &[u32]) -> (String, Vec<String>) {
    let mut dec = tok.stream_decoder();
    let mut pieces: Vec<String> = ids.iter().map(|&id| dec.push(id)).collect();
    pieces.push(dec.flush());
    (pieces.concat(), pieces)
}

#[test]
fn reference_cases_encode_and_decode_exactly() {
    let tok = tokenizer();
    assert!(cases().len() >= 8);
    for case in cases() {
        let text = case["text"].as_str().unwrap();
        let want = ids(&case["ids"]);
        assert_eq!(tok.encode(text).unwrap(), want, "encode {text:?}");
        let decoded = case["decoded"].as_str().unwrap();
        assert_eq!(tok.decode(&want), decoded, "decode {want:?}");
        let pieces: Vec<&str> = want.iter().map(|&id| tok.token_piece(id)).collect();
        let tokens: Vec<&str> = case["tokens"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t.as_str().unwrap())
            .collect();
        assert_eq!(pieces, tokens, "pieces of {text:?}");
    }
}

#[test]
fn perplexity_text_encodes_to_its_ids() {
    let ppl = &reference()["perplexity"];
    let text = ppl["text"].as_str().unwrap();
    let want = ids(&ppl["ids"]);
    assert_eq!(tok_encode(text), want);
    assert_eq!(tokenizer().decode(&want), text);
}

fn tok_encode(text: &str) -> Vec<u32> {
    tokenizer().encode(text).unwrap()
}

#[test]
fn generation_prompts_encode_and_continuations_decode() {
    let tok = tokenizer();
    let prompts = reference()["generation"]["prompts"].as_array().unwrap();
    assert!(!prompts.is_empty());
    for p in prompts {
        let prompt = p["prompt"].as_str().unwrap();
        let prompt_ids = ids(&p["prompt_ids"]);
        assert_eq!(tok.encode(prompt).unwrap(), prompt_ids, "{prompt:?}");
        // The continuations hold padding ids (>= 50295), which decode to nothing.
        let new_ids = ids(&p["new_ids"]);
        assert_eq!(tok.decode(&new_ids), p["new_text"].as_str().unwrap());
        let all: Vec<u32> = prompt_ids.iter().chain(&new_ids).copied().collect();
        assert_eq!(tok.decode(&all), p["full_text"].as_str().unwrap());
        assert_eq!(stream_decode(tok, &all).0, p["full_text"].as_str().unwrap());
    }
}

#[test]
fn readme_examples() {
    let spaces32 = format!("x{}y", " ".repeat(32));
    let examples: &[(&str, &[u32])] = &[
        ("Hello  world", &[15496, 50286, 6894]),
        ("    return", &[50284, 7783]),
        (" return", &[1441]),
        ("\t", &[197]),
        (&spaces32, &[87, 50257, 331]),
        ("<|endoftext|>", &[50256]),
        ("a<|endoftext|>b", &[64, 50256, 65]),
        ("\t\t", &[50294]),
        ("\t\t\t\t\t\t\t\t\t", &[50287]),
        ("  ", &[50286]),
        ("Hello world", &[15496, 995]),
    ];
    for (text, want) in examples {
        assert_eq!(tok_encode(text), *want, "{text:?}");
        assert_eq!(tokenizer().decode(want), *text);
    }
}

#[test]
fn special_ids_and_metadata() {
    let tok = tokenizer();
    assert_eq!(tok.n_vocab(), N_VOCAB);
    assert_eq!(tok.bos_id(), Some(50256));
    assert_eq!(tok.eos_id(), Some(50256));
    assert!(!tok.add_bos());
    assert_eq!(tok.token_id("<|endoftext|>"), Some(50256));
    assert_eq!(tok.token_kind(50256), Some(TokenKind::Control));
    assert_eq!(tok.token_kind(50257), Some(TokenKind::UserDefined));
    assert_eq!(tok.token_kind(50295), Some(TokenKind::Unused));
    assert_eq!(tok.token_kind(262), Some(TokenKind::Normal));
    assert_eq!(tok.token_kind(N_VOCAB as u32), None);
    assert_eq!(tok.token_piece(262), "Ġthe");
    assert_eq!(tok.token_piece(50257), " ".repeat(31));
    assert_eq!(tok.token_piece(50295), "[PAD50295]");
    assert_eq!(tok.token_piece(N_VOCAB as u32), "");
    assert_eq!(tok.token_bytes(262), Some(&b" the"[..]));
    assert_eq!(tok.token_bytes(50295), None);
    assert_eq!(tok.token_bytes(u32::MAX), None);
    // The reference's own statement of the special ids.
    let t = &reference()["tokenizer"];
    assert_eq!(t["eos_token_id"].as_u64(), tok.eos_id().map(u64::from));
    assert_eq!(t["bos_token_id"].as_u64(), tok.bos_id().map(u64::from));
    assert_eq!(t["adds_bos"].as_bool(), Some(tok.add_bos()));
}

#[test]
fn every_id_decodes_without_panicking() {
    let tok = tokenizer();
    let mut with_text = 0;
    for id in 0..N_VOCAB as u32 + 100 {
        let text = tok.decode(&[id]);
        let (streamed, _) = stream_decode(tok, &[id]);
        // The streaming decoder's bytes agree with the crate's ByteLevel decoder.
        assert_eq!(streamed, text, "id {id}");
        assert_eq!(
            String::from_utf8_lossy(&tok.decode_bytes(&[id])),
            text,
            "id {id}"
        );
        if id >= 50295 {
            assert_eq!(text, "", "id {id} has no text");
        } else {
            assert!(!text.is_empty(), "id {id} decodes to nothing");
            with_text += 1;
        }
    }
    assert_eq!(with_text, 50295);
    assert_eq!(tok.decode(&[u32::MAX, 15496, 50300, 995]), "Hello world");
}

#[test]
fn stream_decoder_matches_decode() {
    let tok = tokenizer();
    let mut all = Vec::new();
    for case in cases() {
        let want = ids(&case["ids"]);
        let (streamed, pieces) = stream_decode(tok, &want);
        assert_eq!(streamed, tok.decode(&want), "{want:?}");
        for p in &pieces {
            assert!(
                !p.contains('\u{fffd}'),
                "partial character emitted: {pieces:?}"
            );
        }
        all.extend(want);
    }
    assert_eq!(stream_decode(tok, &all).0, tok.decode(&all));
}

#[test]
fn stream_decoder_holds_split_characters_until_whole() {
    let tok = tokenizer();
    // 東 is E6 9D B1: the reference splits it over " æ" (20 E6), "Ŀ" (9D) and "±" (B1).
    let text = "crème brûlée, 東京, 🙂";
    let ids = tok.encode(text).unwrap();
    let (streamed, pieces) = stream_decode(tok, &ids);
    assert_eq!(streamed, text);
    assert!(pieces.iter().any(|p| p.contains('東')));
    assert!(pieces.iter().all(|p| !p.contains('\u{fffd}')));
    // Byte by byte: no piece but the whole character's.
    let mut dec = tok.stream_decoder();
    assert_eq!(dec.push(10545), " "); // " æ": the space, then E6 held
    assert!(dec.has_pending());
    assert_eq!(dec.push(251), ""); // 9D
    assert_eq!(dec.push(109), "東"); // B1
    assert!(!dec.has_pending());
    // Padding and out-of-range ids in the middle of a character change nothing.
    assert_eq!(dec.push(12859), ""); // E4 BA
    assert_eq!(dec.push(50295), "");
    assert_eq!(dec.push(u32::MAX), "");
    assert_eq!(dec.push(105), "京"); // AC
    assert_eq!(dec.flush(), "");

    // An emoji: 🙂 is F0 9F 99 82, split here over four single-byte tokens.
    let bytes_ids: Vec<u32> = "🙂"
        .bytes()
        .map(|b| {
            (0..50257u32)
                .find(|&id| tok.token_bytes(id) == Some(&[b][..]))
                .unwrap()
        })
        .collect();
    let (streamed, pieces) = stream_decode(tok, &bytes_ids);
    assert_eq!(streamed, "🙂");
    assert_eq!(pieces, ["", "", "", "🙂", ""]);

    // An incomplete character at the end is flushed as U+FFFD, like decode.
    let cut = &bytes_ids[..2];
    let (streamed, pieces) = stream_decode(tok, cut);
    assert_eq!(pieces, ["", "", "\u{fffd}"]);
    assert_eq!(streamed, tok.decode(cut));
    // Bytes that can never be valid come out at once, where decode puts them.
    let bad = [bytes_ids[0], 64, bytes_ids[1]]; // F0 'a' 9F
    let (streamed, pieces) = stream_decode(tok, &bad);
    assert_eq!(streamed, tok.decode(&bad));
    assert_eq!(streamed, "\u{fffd}a\u{fffd}");
    assert_eq!(pieces, ["", "\u{fffd}a", "\u{fffd}", ""]);
}

#[test]
fn round_trips_assorted_text() {
    let tok = tokenizer();
    let texts = [
        "def f(x):\n\treturn x  # two spaces\n\n\n",
        "  \t \t\t  mixed   whitespace\r\n\r\n",
        "It's we'll they'RE don't I'M 'll",
        "¡Hola! ¿Qué tal? Ünïcödé ß ﬁ Ωμέγα Русский العربية हिन्दी 日本語 한국어",
        "emoji 👩‍👩‍👧‍👦 🇫🇷 ❤️ zero\u{200b}width \u{feff}bom",
        "numbers 3.14159 1,000,000 ٣٤٥ ½",
        "<|endoftext|><|endoftext|> <|endoftext|>x<|endoftext",
        "\u{0}\u{1}\u{7f}\u{85}\u{a0}\u{2028}\u{3000}",
    ];
    for text in texts {
        let ids = tok.encode(text).unwrap();
        assert_eq!(tok.decode(&ids), text, "{ids:?}");
        assert_eq!(stream_decode(tok, &ids).0, text);
        assert!(ids.iter().all(|&id| id < 50295), "{text:?}: {ids:?}");
    }
    assert_eq!(tok.encode("").unwrap(), Vec::<u32>::new());
    assert_eq!(tok.decode(&[]), "");
}

#[test]
fn long_inputs_do_not_fail() {
    let tok = tokenizer();
    let text = "The quick brown fox jumps over the lazy dog.\n    indented(code)\n".repeat(2000);
    let ids = tok.encode(&text).unwrap();
    assert_eq!(tok.decode(&ids), text);
    // Whitespace runs: the added tokens absorb spaces and tabs; newlines go through the regex.
    for text in [
        " ".repeat(100_000),
        "\t".repeat(100_000),
        "\n".repeat(100_000),
        "x".repeat(100_000),
    ] {
        let ids = tok.encode(&text).unwrap();
        assert_eq!(tok.decode(&ids), text);
    }
}

fn without(key: &str) -> Vec<(String, MetaValue)> {
    metadata().into_iter().filter(|(k, _)| k != key).collect()
}

fn with(key: &str, value: MetaValue) -> Vec<(String, MetaValue)> {
    metadata()
        .into_iter()
        .map(|(k, v)| if k == key { (k, value.clone()) } else { (k, v) })
        .collect()
}

#[test]
fn missing_or_wrong_metadata_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let err = |kv: Vec<(String, MetaValue)>| tokenizer_from(dir.path(), &kv).unwrap_err();

    for key in [
        "tokenizer.ggml.model",
        "tokenizer.ggml.tokens",
        "tokenizer.ggml.merges",
    ] {
        let e = err(without(key));
        assert!(
            matches!(e, TokenizerError::MissingKey(k) if k == key),
            "{e:?}"
        );
        assert!(e.to_string().contains(key), "{e}");
    }
    // No tokenizer keys at all.
    let bare = vec![(
        "general.architecture".to_string(),
        MetaValue::String("phi2".into()),
    )];
    let e = err(bare);
    assert!(e.to_string().contains("tokenizer.ggml.model"), "{e}");

    let e = err(with(
        "tokenizer.ggml.model",
        MetaValue::String("llama".into()),
    ));
    assert!(
        matches!(e, TokenizerError::UnsupportedModel(ref m) if m == "llama"),
        "{e:?}"
    );
    assert!(e.to_string().contains("tokenizer.ggml.model"), "{e}");

    let e = err(with(
        "tokenizer.ggml.pre",
        MetaValue::String("llama3".into()),
    ));
    assert!(e.to_string().contains("tokenizer.ggml.pre"), "{e}");

    let e = err(with("tokenizer.ggml.tokens", MetaValue::U32(3)));
    assert!(matches!(e, TokenizerError::WrongType { key, .. } if key == "tokenizer.ggml.tokens"));

    let e = err(with(
        "tokenizer.ggml.token_type",
        MetaValue::string_array(["x"]),
    ));
    assert!(e.to_string().contains("tokenizer.ggml.token_type"), "{e}");

    let e = err(with("tokenizer.ggml.eos_token_id", MetaValue::U32(60000)));
    assert!(e.to_string().contains("tokenizer.ggml.eos_token_id"), "{e}");

    let e = err(with(
        "tokenizer.ggml.merges",
        MetaValue::string_array(["Ġ t", "nospace", "h e"]),
    ));
    assert!(
        matches!(e, TokenizerError::BadMerge { index: 1, .. }),
        "{e:?}"
    );
    // A merge whose result is longer than any token (the crate itself would write past
    // a buffer sized by the longest token, and panic).
    let tok = tokenizer();
    let longest = (0..50257)
        .map(|id| tok.token_piece(id))
        .max_by_key(|p| p.len())
        .unwrap();
    let e = err(with(
        "tokenizer.ggml.merges",
        MetaValue::string_array([format!("{longest} {longest}")]),
    ));
    assert!(
        matches!(e, TokenizerError::BadMerge { index: 0, .. }),
        "{e:?}"
    );
    let e = err(with(
        "tokenizer.ggml.merges",
        MetaValue::string_array(["Ġ nosuchtoken"]),
    ));
    assert!(
        matches!(e, TokenizerError::BadMerge { index: 0, .. }),
        "{e:?}"
    );
}

#[test]
fn file_without_token_types_or_pre_still_works() {
    // Older or other converters: no `pre` key, no token types (the [PADn] rows are then
    // recognised by name).
    let dir = tempfile::tempdir().unwrap();
    let kv: Vec<_> = metadata()
        .into_iter()
        .filter(|(k, _)| k != "tokenizer.ggml.pre" && k != "tokenizer.ggml.token_type")
        .collect();
    let tok = tokenizer_from(dir.path(), &kv).unwrap();
    // The whitespace runs, not being byte characters, are still added tokens;
    // <|endoftext|> becomes an ordinary entry that text no longer matches.
    assert_eq!(tok.token_kind(50286), Some(TokenKind::UserDefined));
    assert_eq!(tok.token_kind(50256), Some(TokenKind::Normal));
    assert_eq!(tok.token_kind(50295), Some(TokenKind::Unused));
    assert_eq!(tok.encode("Hello  world").unwrap(), [15496, 50286, 6894]);
    assert_eq!(
        tok.encode("Good morning, world").unwrap(),
        [10248, 3329, 11, 995]
    );
    assert_eq!(tok.decode(&[50295, 15496, 50256]), "Hello<|endoftext|>");
}

#[test]
fn old_files_with_user_defined_placeholders() {
    // Older llama.cpp converters typed the [PADn] rows user-defined: they must still be no
    // text, neither matched in text nor decoded.
    let dir = tempfile::tempdir().unwrap();
    let types: Vec<MetaValue> = (0..N_VOCAB)
        .map(|id| {
            MetaValue::I32(match id {
                50256 => 3,
                50257..=50294 => 4,
                50295.. => 4,
                _ => 1,
            })
        })
        .collect();
    let kv = with(
        "tokenizer.ggml.token_type",
        MetaValue::Array(phiq::gguf::MetaArray::new(phiq::gguf::MetaType::I32, types)),
    );
    let tok = tokenizer_from(dir.path(), &kv).unwrap();
    assert_eq!(tok.token_kind(50295), Some(TokenKind::Unused));
    assert_eq!(tok.token_kind(50294), Some(TokenKind::UserDefined));
    assert_eq!(tok.decode(&[15496, 50888, 51199]), "Hello");
    assert_eq!(
        tok.encode("[PAD50295]").unwrap(),
        tokenizer().encode("[PAD50295]").unwrap()
    );
    assert_eq!(tok.encode("Hello  world").unwrap(), [15496, 50286, 6894]);
}

#[test]
fn tokenizer_is_send_and_sync() {
    fn check<T: Send + Sync>() {}
    check::<Tokenizer>();
}
