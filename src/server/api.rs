//! Request fields and response shapes of the OpenAI API as llama-server speaks it.
//! Every field is checked by hand so an error names it; nothing here panics on
//! what a client sends.

use serde_json::{Map, Value, json};

use super::engine::Finish;
use crate::chat::{ChatFormat, Message, Role};
use crate::sample::SamplerConfig;

/// An error answer: `{"error": {"code", "message", "type"}}` with its status.
#[derive(Clone, Debug, PartialEq)]
pub struct ApiError {
    pub status: u16,
    pub kind: &'static str,
    pub message: String,
}

impl ApiError {
    pub fn new(status: u16, kind: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            kind,
            message: message.into(),
        }
    }

    pub fn invalid(message: impl Into<String>) -> ApiError {
        ApiError::new(400, "invalid_request_error", message)
    }

    pub fn server(message: impl Into<String>) -> ApiError {
        ApiError::new(500, "server_error", message)
    }

    pub fn unavailable(message: impl Into<String>) -> ApiError {
        ApiError::new(503, "unavailable_error", message)
    }

    pub fn body(&self) -> Value {
        json!({"error": {"code": self.status, "message": self.message, "type": self.kind}})
    }
}

/// Which API a generation request came through.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Completion,
    Chat,
}

/// A checked generation request, before tokenization.
#[derive(Debug)]
pub struct Request {
    pub prompt: String,
    pub max_tokens: Option<usize>,
    pub sampler: SamplerConfig,
    pub stops: Vec<String>,
    pub stream: bool,
    pub include_usage: bool,
}

/// Parses a JSON body into an object, or says why not.
pub fn object(body: &[u8]) -> Result<Map<String, Value>, ApiError> {
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(_) => Err(ApiError::invalid("the request body must be a JSON object")),
        Err(e) => Err(ApiError::invalid(format!(
            "the request body is not valid JSON: {e}"
        ))),
    }
}

/// A `/v1/completions` or `/v1/chat/completions` body.
/// Chat messages become a prompt in `format`.
pub fn parse(kind: Kind, o: &Map<String, Value>, format: &ChatFormat) -> Result<Request, ApiError> {
    let (prompt, mut stops) = match kind {
        Kind::Completion => (prompt_field(o)?, Vec::new()),
        Kind::Chat => {
            let messages = messages(o)?;
            let prompt = format
                .prompt(&messages)
                .map_err(|e| ApiError::invalid(format!("field `messages`: {e}")))?;
            (prompt, format.stops())
        }
    };
    if let Some(n) = opt_u64(o, "n")?
        && n != 1
    {
        return Err(ApiError::invalid(format!(
            "field `n`: only 1 choice per request is supported (got {n})"
        )));
    }
    let max_tokens = ["n_predict", "max_completion_tokens", "max_tokens"]
        .iter()
        .find_map(|f| opt_u64(o, f).transpose())
        .transpose()?
        .map(|n| n as usize);
    let d = SamplerConfig::default();
    let sampler = SamplerConfig {
        temperature: opt_f32(o, "temperature", 0.0, 100.0)?.unwrap_or(d.temperature),
        top_k: opt_u64(o, "top_k")?.map_or(d.top_k, |k| k as usize),
        top_p: opt_f32(o, "top_p", 0.0, 1.0)?.unwrap_or(d.top_p),
        min_p: opt_f32(o, "min_p", 0.0, 1.0)?.unwrap_or(d.min_p),
        repeat_penalty: opt_f32(o, "repeat_penalty", 1e-6, 100.0)?.unwrap_or(d.repeat_penalty),
        presence_penalty: opt_f32(o, "presence_penalty", -2.0, 2.0)?.unwrap_or(0.0),
        frequency_penalty: opt_f32(o, "frequency_penalty", -2.0, 2.0)?.unwrap_or(0.0),
        logit_bias: logit_bias(o)?,
        seed: seed(o)?,
        ..d
    };
    match o.get("stop") {
        None | Some(Value::Null) => {}
        Some(Value::String(s)) => stops.push(s.clone()),
        Some(Value::Array(a)) => {
            for (i, v) in a.iter().enumerate() {
                match v {
                    Value::String(s) => stops.push(s.clone()),
                    _ => {
                        return Err(ApiError::invalid(format!(
                            "field `stop[{i}]`: expected a string"
                        )));
                    }
                }
            }
        }
        Some(_) => {
            return Err(ApiError::invalid(
                "field `stop`: expected a string or a list of strings",
            ));
        }
    }
    stops.retain(|s| !s.is_empty());
    let stream = opt_bool(o, "stream")?.unwrap_or(false);
    let include_usage = match o.get("stream_options") {
        None | Some(Value::Null) => false,
        Some(Value::Object(so)) => opt_bool(so, "include_usage")?.unwrap_or(false),
        Some(_) => {
            return Err(ApiError::invalid(
                "field `stream_options`: expected an object",
            ));
        }
    };
    Ok(Request {
        prompt,
        max_tokens,
        sampler,
        stops,
        stream,
        include_usage,
    })
}

fn prompt_field(o: &Map<String, Value>) -> Result<String, ApiError> {
    match o.get("prompt") {
        Some(Value::String(s)) => Ok(s.clone()),
        Some(Value::Array(a)) if a.len() == 1 && a[0].is_string() => {
            Ok(a[0].as_str().unwrap_or_default().to_string())
        }
        Some(Value::Array(_)) => Err(ApiError::invalid(
            "field `prompt`: only one prompt per request is supported (a string)",
        )),
        None => Err(ApiError::invalid("field `prompt` is required")),
        Some(_) => Err(ApiError::invalid("field `prompt`: expected a string")),
    }
}

fn messages(o: &Map<String, Value>) -> Result<Vec<Message>, ApiError> {
    let Some(Value::Array(list)) = o.get("messages") else {
        return Err(ApiError::invalid(
            "field `messages`: expected a list of messages",
        ));
    };
    if list.is_empty() {
        return Err(ApiError::invalid("field `messages`: the list is empty"));
    }
    list.iter()
        .enumerate()
        .map(|(i, m)| {
            let at = |what: &str| ApiError::invalid(format!("field `messages[{i}]`: {what}"));
            let m = m.as_object().ok_or_else(|| at("expected an object"))?;
            let role = m
                .get("role")
                .and_then(Value::as_str)
                .ok_or_else(|| at("`role` is required"))?;
            let role = Role::from_name(role)
                .ok_or_else(|| at(&format!("role {role:?} is not system, user or assistant")))?;
            let content = match m.get("content") {
                Some(Value::String(s)) => s.clone(),
                Some(Value::Null) | None if role == Role::Assistant => String::new(),
                // Content parts: the text ones, joined.
                Some(Value::Array(parts)) => {
                    let mut text = String::new();
                    for p in parts {
                        match (
                            p.get("type").and_then(Value::as_str),
                            p.get("text").and_then(Value::as_str),
                        ) {
                            (Some("text"), Some(t)) => text.push_str(t),
                            (kind, _) => {
                                return Err(at(&format!(
                                    "content part of type {:?} is not supported (text only)",
                                    kind.unwrap_or("?")
                                )));
                            }
                        }
                    }
                    text
                }
                _ => return Err(at("`content` must be a string")),
            };
            Ok(Message { role, content })
        })
        .collect()
}

fn opt_u64(o: &Map<String, Value>, f: &str) -> Result<Option<u64>, ApiError> {
    match o.get(f) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v.as_u64().map(Some).ok_or_else(|| {
            ApiError::invalid(format!(
                "field `{f}`: expected a non-negative integer, got {v}"
            ))
        }),
    }
}

fn opt_f32(o: &Map<String, Value>, f: &str, lo: f32, hi: f32) -> Result<Option<f32>, ApiError> {
    match o.get(f) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => match v.as_f64() {
            Some(x) if (lo as f64..=hi as f64).contains(&x) => Ok(Some(x as f32)),
            _ => Err(ApiError::invalid(format!(
                "field `{f}`: expected a number from {lo} to {hi}, got {v}"
            ))),
        },
    }
}

fn opt_bool(o: &Map<String, Value>, f: &str) -> Result<Option<bool>, ApiError> {
    match o.get(f) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(v) => Err(ApiError::invalid(format!(
            "field `{f}`: expected true or false, got {v}"
        ))),
    }
}

/// `logit_bias`: OpenAI's `{"token id": bias}` or llama.cpp's `[[id, bias], ...]`,
/// biases from -100 to 100 added to the logits; -100 (or llama.cpp's `false`) bans
/// the token. Ids are checked against the vocabulary by the caller.
fn logit_bias(o: &Map<String, Value>) -> Result<Vec<(u32, f32)>, ApiError> {
    let bad = |what: String| ApiError::invalid(format!("field `logit_bias`: {what}"));
    let entry = |id: Option<u64>, b: &Value, at: &str| -> Result<(u32, f32), ApiError> {
        let id = id
            .and_then(|i| u32::try_from(i).ok())
            .ok_or_else(|| bad(format!("{at}: the key must be a token id")))?;
        let bias = match b {
            Value::Bool(false) => f32::NEG_INFINITY,
            v => match v.as_f64() {
                Some(-100.0) => f32::NEG_INFINITY,
                Some(x) if (-100.0..=100.0).contains(&x) => x as f32,
                _ => {
                    return Err(bad(format!(
                        "{at}: expected a number from -100 to 100, got {v}"
                    )));
                }
            },
        };
        Ok((id, bias))
    };
    match o.get("logit_bias") {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Object(m)) => m
            .iter()
            .map(|(k, v)| entry(k.parse().ok(), v, &format!("{k:?}")))
            .collect(),
        Some(Value::Array(a)) => a
            .iter()
            .enumerate()
            .map(|(i, p)| match p.as_array().map(Vec::as_slice) {
                Some([id, b]) => entry(id.as_u64(), b, &format!("[{i}]")),
                _ => Err(bad(format!("[{i}]: expected [token id, bias]"))),
            })
            .collect(),
        Some(_) => Err(bad("expected an object of token id: bias".into())),
    }
}

/// `seed`: a non-negative integer, or -1 / absent for a random one.
fn seed(o: &Map<String, Value>) -> Result<u64, ApiError> {
    match o.get("seed") {
        None | Some(Value::Null) => Ok(random_seed()),
        Some(v) if v.as_i64() == Some(-1) => Ok(random_seed()),
        Some(v) => v.as_u64().ok_or_else(|| {
            ApiError::invalid(format!("field `seed`: expected an integer, got {v}"))
        }),
    }
}

fn random_seed() -> u64 {
    use std::hash::{BuildHasher, RandomState};
    RandomState::new().hash_one(std::time::SystemTime::now())
}

/// `usage` of a finished request.
pub fn usage(f: &Finish) -> Value {
    json!({
        "prompt_tokens": f.prompt_tokens,
        "completion_tokens": f.completion_tokens,
        "total_tokens": f.prompt_tokens + f.completion_tokens,
        "prompt_tokens_details": {"cached_tokens": f.cached_tokens},
    })
}

/// llama.cpp's `timings` of a finished request.
pub fn timings(f: &Finish) -> Value {
    let ms = |d: std::time::Duration| d.as_secs_f64() * 1e3;
    let rate = |n: usize, d: std::time::Duration| {
        if d.is_zero() {
            0.0
        } else {
            n as f64 / d.as_secs_f64()
        }
    };
    let evaluated = f.prompt_tokens - f.cached_tokens;
    json!({
        "cache_n": f.cached_tokens,
        "prompt_n": evaluated,
        "prompt_ms": ms(f.prompt_time),
        "prompt_per_second": rate(evaluated, f.prompt_time),
        "predicted_n": f.completion_tokens,
        "predicted_ms": ms(f.predicted_time),
        "predicted_per_second": rate(f.completion_tokens, f.predicted_time),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(kind: Kind, body: &str) -> Result<Request, ApiError> {
        parse(kind, &object(body.as_bytes())?, &ChatFormat::Phi2)
    }

    #[test]
    fn bad_fields_are_400s_naming_the_field() {
        let cases = [
            (Kind::Completion, "[1]", "JSON object"),
            (Kind::Completion, "{", "not valid JSON"),
            (Kind::Completion, "{}", "`prompt` is required"),
            (Kind::Completion, r#"{"prompt": 3}"#, "`prompt`"),
            (Kind::Completion, r#"{"prompt": "a", "n": 2}"#, "`n`"),
            (
                Kind::Completion,
                r#"{"prompt": "a", "max_tokens": -1}"#,
                "`max_tokens`",
            ),
            (
                Kind::Completion,
                r#"{"prompt": "a", "temperature": "hot"}"#,
                "`temperature`",
            ),
            (
                Kind::Completion,
                r#"{"prompt": "a", "top_p": 2}"#,
                "`top_p`",
            ),
            (
                Kind::Completion,
                r#"{"prompt": "a", "stop": [1]}"#,
                "`stop[0]`",
            ),
            (
                Kind::Completion,
                r#"{"prompt": "a", "logit_bias": {"x": 1}}"#,
                "`logit_bias`: \"x\"",
            ),
            (
                Kind::Completion,
                r#"{"prompt": "a", "logit_bias": {"5": 101}}"#,
                "from -100 to 100",
            ),
            (
                Kind::Completion,
                r#"{"prompt": "a", "logit_bias": [[5]]}"#,
                "`logit_bias`: [0]",
            ),
            (
                Kind::Completion,
                r#"{"prompt": "a", "stream": "yes"}"#,
                "`stream`",
            ),
            (
                Kind::Completion,
                r#"{"prompt": "a", "seed": 1.5}"#,
                "`seed`",
            ),
            (Kind::Chat, r#"{"messages": []}"#, "empty"),
            (
                Kind::Chat,
                r#"{"messages": [{"role": "robot", "content": "x"}]}"#,
                "messages[0]",
            ),
            (
                Kind::Chat,
                r#"{"messages": [{"role": "user"}]}"#,
                "`content`",
            ),
            (
                Kind::Chat,
                r#"{"messages": [{"role": "user", "content": [{"type": "image_url"}]}]}"#,
                "image_url",
            ),
        ];
        for (kind, body, want) in cases {
            let e = req(kind, body).expect_err(body);
            assert_eq!((e.status, e.kind), (400, "invalid_request_error"), "{body}");
            assert!(e.message.contains(want), "{body}: {}", e.message);
        }
    }

    #[test]
    fn fields_reach_the_request() {
        let r = req(
            Kind::Chat,
            r#"{"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": [{"type": "text", "text": "Hi"}]}],
                "max_completion_tokens": 7, "temperature": 0, "top_k": 3, "seed": 42, "stop": "END",
                "stream": true, "stream_options": {"include_usage": true}, "presence_penalty": 0.5}"#,
        )
        .unwrap();
        assert_eq!(r.prompt, "Be brief.\nInstruct: Hi\nOutput:");
        assert_eq!(r.max_tokens, Some(7));
        assert_eq!(
            (r.sampler.temperature, r.sampler.top_k, r.sampler.seed),
            (0.0, 3, 42)
        );
        assert_eq!(r.sampler.presence_penalty, 0.5);
        assert!(r.stream && r.include_usage);
        assert!(
            r.stops.contains(&"END".to_string()) && r.stops.contains(&"\nInstruct:".to_string())
        );
        let c = req(
            Kind::Completion,
            r#"{"prompt": ["x"], "max_tokens": 3, "n_predict": 5}"#,
        )
        .unwrap();
        assert_eq!((c.prompt.as_str(), c.max_tokens), ("x", Some(5)));
        assert!(c.stops.is_empty());
        let b = req(
            Kind::Completion,
            r#"{"prompt": "x", "logit_bias": {"13": -100, "7": 2.5}}"#,
        )
        .unwrap();
        assert_eq!(b.sampler.logit_bias, [(13, f32::NEG_INFINITY), (7, 2.5)]);
        let l = req(
            Kind::Completion,
            r#"{"prompt": "x", "logit_bias": [[13, false], [7, -1]]}"#,
        )
        .unwrap();
        assert_eq!(l.sampler.logit_bias, [(13, f32::NEG_INFINITY), (7, -1.0)]);
    }
}
