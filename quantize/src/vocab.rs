//! The tokenizer, embedded in the GGUF as llama.cpp's converter embeds Phi-2's: GPT-2
//! byte-level BPE (`tokenizer.ggml.model = gpt2`, `pre = phi-2`), every token with its
//! type, the merges, the special ids, padded to the embedding's rows.

use std::collections::HashMap;
use std::path::Path;

use phiq::gguf::{MetaArray, MetaType, MetaValue};
use serde_json::Value;

use crate::error::{ConvertError, Result};

/// llama.cpp's `enum llama_token_type`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(i32)]
pub enum TokenType {
    Normal = 1,
    Control = 3,
    UserDefined = 4,
    Unused = 5,
}

#[derive(Clone, Debug)]
struct AddedToken {
    id: usize,
    content: String,
    special: bool,
}

#[derive(Debug)]
pub struct Vocab {
    pub tokens: Vec<String>,
    pub types: Vec<TokenType>,
    pub merges: Vec<String>,
    pub bos: Option<u32>,
    pub eos: Option<u32>,
    pub unk: Option<u32>,
    pub chat_template: Option<String>,
}

impl Vocab {
    /// Reads the tokenizer of the checkpoint in `dir`: `tokenizer.json`, else
    /// `vocab.json` + `merges.txt` + `added_tokens.json`; padded to `n_rows` tokens.
    pub fn load(dir: &Path, n_rows: usize) -> Result<Vocab> {
        let (vocab, merges, added) = if dir.join("tokenizer.json").exists() {
            read_tokenizer_json(&dir.join("tokenizer.json"))?
        } else if dir.join("vocab.json").exists() {
            read_split_files(dir)?
        } else {
            return Err(ConvertError::Tokenizer {
                path: dir.to_path_buf(),
                why: "no tokenizer.json, nor vocab.json with merges.txt".into(),
            });
        };
        let (tokens, types) = token_table(dir, vocab, &added, n_rows)?;
        let config = read_json_opt(&dir.join("tokenizer_config.json"))?;
        let id_of = |name: &str| special_id(dir, config.as_ref(), name, &tokens);
        Ok(Vocab {
            bos: id_of("bos")?,
            eos: id_of("eos")?,
            unk: id_of("unk")?,
            chat_template: match read_text_opt(&dir.join("chat_template.jinja"))? {
                // transformers >= 4.50 saves the template in its own file, and reads it first.
                Some(t) => Some(t),
                None => config.as_ref().and_then(chat_template),
            },
            tokens,
            types,
            merges,
        })
    }

    /// The `tokenizer.*` metadata, as llama.cpp's converter writes it for Phi-2.
    pub fn metadata(&self) -> Vec<(String, MetaValue)> {
        let mut kv = vec![
            (
                "tokenizer.ggml.model".into(),
                MetaValue::String("gpt2".into()),
            ),
            (
                "tokenizer.ggml.pre".into(),
                MetaValue::String("phi-2".into()),
            ),
            (
                "tokenizer.ggml.tokens".into(),
                MetaValue::string_array(self.tokens.iter().cloned()),
            ),
            (
                "tokenizer.ggml.token_type".into(),
                MetaValue::Array(MetaArray::new(
                    MetaType::I32,
                    self.types
                        .iter()
                        .map(|t| MetaValue::I32(*t as i32))
                        .collect(),
                )),
            ),
            (
                "tokenizer.ggml.merges".into(),
                MetaValue::string_array(self.merges.iter().cloned()),
            ),
        ];
        for (key, id) in [("bos", self.bos), ("eos", self.eos), ("unknown", self.unk)] {
            if let Some(id) = id {
                kv.push((format!("tokenizer.ggml.{key}_token_id"), MetaValue::U32(id)));
            }
        }
        kv.push((
            "tokenizer.ggml.add_bos_token".into(),
            MetaValue::Bool(false),
        ));
        if let Some(t) = &self.chat_template {
            kv.push((
                "tokenizer.chat_template".into(),
                MetaValue::String(t.clone()),
            ));
        }
        kv
    }
}

type Parts = (HashMap<String, usize>, Vec<String>, Vec<AddedToken>);

fn tok_err(path: &Path, why: impl Into<String>) -> ConvertError {
    ConvertError::Tokenizer {
        path: path.to_path_buf(),
        why: why.into(),
    }
}

fn read_json(path: &Path) -> Result<Value> {
    let text = std::fs::read_to_string(path).map_err(|source| ConvertError::Io {
        path: path.to_path_buf(),
        error: source,
    })?;
    serde_json::from_str(&text).map_err(|e| ConvertError::Json {
        path: path.to_path_buf(),
        why: e.to_string(),
    })
}

fn read_json_opt(path: &Path) -> Result<Option<Value>> {
    if path.exists() {
        read_json(path).map(Some)
    } else {
        Ok(None)
    }
}

fn vocab_map(path: &Path, v: Option<&Value>) -> Result<HashMap<String, usize>> {
    let obj = v
        .and_then(Value::as_object)
        .ok_or_else(|| tok_err(path, "no vocabulary object"))?;
    obj.iter()
        .map(|(tok, id)| {
            let id = id
                .as_u64()
                .ok_or_else(|| tok_err(path, format!("token {tok:?} has a non-integer id")))?;
            Ok((tok.clone(), id as usize))
        })
        .collect()
}

/// Merges are `"a b"` strings in older files and `["a", "b"]` pairs in newer ones.
fn merge_list(path: &Path, v: Option<&Value>) -> Result<Vec<String>> {
    let items = v
        .and_then(Value::as_array)
        .ok_or_else(|| tok_err(path, "no merges list (only BPE tokenizers are supported)"))?;
    items
        .iter()
        .map(|m| match m {
            Value::String(s) => Ok(s.clone()),
            Value::Array(pair) if pair.len() == 2 => match (&pair[0], &pair[1]) {
                (Value::String(a), Value::String(b)) => Ok(format!("{a} {b}")),
                _ => Err(tok_err(path, format!("bad merge {m}"))),
            },
            _ => Err(tok_err(path, format!("bad merge {m}"))),
        })
        .collect()
}

fn read_tokenizer_json(path: &Path) -> Result<Parts> {
    let json = read_json(path)?;
    let model = json
        .get("model")
        .ok_or_else(|| tok_err(path, "no \"model\""))?;
    if let Some(t) = model.get("type").and_then(Value::as_str)
        && t != "BPE"
    {
        return Err(tok_err(
            path,
            format!("model type {t:?}: Phi-2's tokenizer is BPE"),
        ));
    }
    let vocab = vocab_map(path, model.get("vocab"))?;
    let merges = merge_list(path, model.get("merges"))?;
    let added = json
        .get("added_tokens")
        .and_then(Value::as_array)
        .map(|list| list.iter().map(|t| added_token(path, t)).collect())
        .transpose()?
        .unwrap_or_default();
    Ok((vocab, merges, added))
}

fn added_token(path: &Path, t: &Value) -> Result<AddedToken> {
    let id = t.get("id").and_then(Value::as_u64);
    let content = t.get("content").and_then(Value::as_str);
    match (id, content) {
        (Some(id), Some(content)) => Ok(AddedToken {
            id: id as usize,
            content: content.to_string(),
            special: t.get("special").and_then(Value::as_bool).unwrap_or(false),
        }),
        _ => Err(tok_err(
            path,
            format!("added token without id or content: {t}"),
        )),
    }
}

fn read_split_files(dir: &Path) -> Result<Parts> {
    let vocab_path = dir.join("vocab.json");
    let vocab = vocab_map(&vocab_path, Some(&read_json(&vocab_path)?))?;
    let merges_path = dir.join("merges.txt");
    let text = std::fs::read_to_string(&merges_path).map_err(|source| ConvertError::Io {
        path: merges_path.clone(),
        error: source,
    })?;
    let merges = text
        .lines()
        .filter(|l| !l.starts_with("#version") && !l.trim().is_empty())
        .map(str::to_string)
        .collect();
    // The added tokens: tokenizer_config.json's `added_tokens_decoder` when present (it
    // also lists `<|endoftext|>`, which vocab.json holds as an ordinary entry), then
    // added_tokens.json, whose flags are guessed as llama.cpp's converter does.
    let config_path = dir.join("tokenizer_config.json");
    let mut added: Vec<AddedToken> = Vec::new();
    if let Some(decoder) = read_json_opt(&config_path)?.and_then(|c| {
        c.get("added_tokens_decoder")
            .and_then(Value::as_object)
            .cloned()
    }) {
        for (id, t) in decoder {
            let id: usize = id.parse().map_err(|_| {
                tok_err(
                    &config_path,
                    format!("added token id {id:?} is not a number"),
                )
            })?;
            let mut t = t.clone();
            t["id"] = Value::from(id);
            added.push(added_token(&config_path, &t)?);
        }
    }
    if let Some(map) = read_json_opt(&dir.join("added_tokens.json"))? {
        for (content, id) in vocab_map(&dir.join("added_tokens.json"), Some(&map))? {
            if !added.iter().any(|t| t.id == id) {
                let special = looks_special(&content);
                added.push(AddedToken {
                    id,
                    content,
                    special,
                });
            }
        }
    }
    // Without a decoder, the tokens special_tokens_map.json names are special too.
    if let Some(map) = read_json_opt(&dir.join("special_tokens_map.json"))? {
        for v in map.as_object().into_iter().flat_map(|m| m.values()) {
            let name = v
                .as_str()
                .or_else(|| v.get("content").and_then(Value::as_str));
            if let Some(&id) = name.and_then(|n| vocab.get(n))
                && !added.iter().any(|t| t.id == id)
            {
                let content = name.unwrap_or_default().to_string();
                added.push(AddedToken {
                    id,
                    content,
                    special: true,
                });
            }
        }
    }
    Ok((vocab, merges, added))
}

fn looks_special(token: &str) -> bool {
    (token.starts_with("<|") && token.ends_with("|>"))
        || (token.starts_with('<')
            && token.ends_with('>')
            && token.len() > 2
            && !token.contains(' '))
}

fn token_table(
    dir: &Path,
    vocab: HashMap<String, usize>,
    added: &[AddedToken],
    n_rows: usize,
) -> Result<(Vec<String>, Vec<TokenType>)> {
    let mut tokens: Vec<Option<String>> = vec![None; n_rows];
    let mut types = vec![TokenType::Unused; n_rows];
    let too_big = |tok: &str, id: usize| {
        tok_err(
            dir,
            format!("token {tok:?} has id {id}, but the embedding has only {n_rows} rows"),
        )
    };
    for (tok, id) in vocab {
        let slot = tokens.get_mut(id).ok_or_else(|| too_big(&tok, id))?;
        *slot = Some(tok);
        types[id] = TokenType::Normal;
    }
    for t in added {
        *tokens
            .get_mut(t.id)
            .ok_or_else(|| too_big(&t.content, t.id))? = Some(t.content.clone());
        types[t.id] = if t.special {
            TokenType::Control
        } else {
            TokenType::UserDefined
        };
    }
    // Rows beyond the tokenizer (Phi-2: 50295..51199) get llama.cpp's placeholders.
    let tokens = tokens
        .into_iter()
        .enumerate()
        .map(|(i, t)| t.unwrap_or_else(|| format!("[PAD{i}]")))
        .collect();
    Ok((tokens, types))
}

/// The id of the `bos`/`eos`/`unk` token: named in tokenizer_config.json or
/// special_tokens_map.json, else by id in config.json.
fn special_id(
    dir: &Path,
    config: Option<&Value>,
    which: &str,
    tokens: &[String],
) -> Result<Option<u32>> {
    let key = format!("{which}_token");
    let map = read_json_opt(&dir.join("special_tokens_map.json"))?;
    let named = [config, map.as_ref()]
        .into_iter()
        .flatten()
        .find_map(|c| match c.get(&key)? {
            Value::String(s) => Some(s.clone()),
            v => v.get("content")?.as_str().map(str::to_string),
        });
    if let Some(name) = named {
        return match tokens.iter().position(|t| *t == name) {
            Some(id) => Ok(Some(id as u32)),
            None => Err(tok_err(
                &dir.join("tokenizer_config.json"),
                format!("{key} {name:?} is not in the vocabulary"),
            )),
        };
    }
    let model_config = read_json_opt(&dir.join("config.json"))?;
    Ok(model_config
        .and_then(|c| c.get(format!("{which}_token_id"))?.as_u64())
        .map(|id| id as u32))
}

/// A text file's contents, `None` when it does not exist.
fn read_text_opt(path: &Path) -> Result<Option<String>> {
    match std::fs::read_to_string(path) {
        Ok(t) => Ok(Some(t)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(tok_err(path, format!("cannot read it: {e}"))),
    }
}

fn chat_template(config: &Value) -> Option<String> {
    match config.get("chat_template")? {
        Value::String(s) => Some(s.clone()),
        // A list of named templates: llama.cpp takes the default one.
        Value::Array(list) => list
            .iter()
            .find(|t| t.get("name").and_then(Value::as_str) == Some("default"))
            .and_then(|t| t.get("template")?.as_str().map(str::to_string)),
        _ => None,
    }
}
