//! A GGUF's `tokenizer.chat_template` (the Jinja template a fine-tune ships in its
//! `tokenizer_config.json`), rendered as transformers' `apply_chat_template` does:
//! Jinja with `trim_blocks` and `lstrip_blocks`, loop controls, `raise_exception`,
//! `strftime_now`, a `tojson` that writes what Python's `json.dumps` writes
//! (`ensure_ascii=False`), the special tokens as `bos_token`/`eos_token`, and
//! `messages` as a list of `{role, content}` maps.

use minijinja::value::{Kwargs, Value};
use minijinja::{Environment, Error, ErrorKind};

use super::Message;

/// The template could not be compiled or rendered; the text says where.
#[derive(Debug, thiserror::Error)]
#[error("tokenizer.chat_template: {0}")]
pub struct TemplateError(String);

impl TemplateError {
    pub(super) fn new(why: &str) -> TemplateError {
        TemplateError(why.to_string())
    }

    fn from_jinja(e: &Error) -> TemplateError {
        // The template's own `raise_exception` text is what the user must read.
        let mut text = e.detail().map_or_else(|| e.to_string(), str::to_string);
        if let Some(line) = e.line() {
            text.push_str(&format!(" (template line {line})"));
        }
        TemplateError(text)
    }
}

pub struct ChatTemplate {
    env: Environment<'static>,
    /// `bos_token`, `eos_token` as text.
    specials: Vec<(&'static str, String)>,
}

const NAME: &str = "chat_template";

impl ChatTemplate {
    /// Compiles `source`; `bos`/`eos` are the special tokens' texts (transformers
    /// passes its special tokens map to every render).
    pub fn new(source: &str, bos: Option<&str>, eos: Option<&str>) -> Result<Self, TemplateError> {
        let mut env = Environment::new();
        env.set_syntax(
            minijinja::syntax::SyntaxConfig::builder()
                .trim_blocks(true)
                .lstrip_blocks(true)
                .build()
                .map_err(|e| TemplateError::from_jinja(&e))?,
        );
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function("raise_exception", raise_exception);
        env.add_function("strftime_now", strftime_now);
        env.add_filter("tojson", tojson);
        env.add_template_owned(NAME, source.to_string())
            .map_err(|e| TemplateError::from_jinja(&e))?;
        let specials = [("bos_token", bos), ("eos_token", eos)]
            .into_iter()
            .filter_map(|(k, v)| Some((k, v?.to_string())))
            .collect();
        Ok(ChatTemplate { env, specials })
    }

    /// The prompt of `messages`, ending with the assistant's turn opened when
    /// `add_generation_prompt`.
    pub fn render(
        &self,
        messages: &[Message],
        add_generation_prompt: bool,
    ) -> Result<String, TemplateError> {
        // In insertion order, as Python's dicts (what `tojson` of a message shows).
        let messages: Vec<serde_json::Value> = messages
            .iter()
            .map(|m| serde_json::json!({"role": m.role.name(), "content": m.content}))
            .collect();
        let mut ctx = serde_json::json!({
            "messages": messages,
            "add_generation_prompt": add_generation_prompt,
            "tools": null,
            "documents": null,
        });
        for (k, v) in &self.specials {
            ctx[*k] = serde_json::Value::from(v.as_str());
        }
        let t = self
            .env
            .get_template(NAME)
            .map_err(|e| TemplateError::from_jinja(&e))?;
        t.render(Value::from(minijinja::value::Serde(&ctx)))
            .map_err(|e| TemplateError::from_jinja(&e))
    }
}

fn raise_exception(message: String) -> Result<Value, Error> {
    Err(Error::new(ErrorKind::InvalidOperation, message))
}

/// transformers' `strftime_now(format)`: the current time (UTC here: a board
/// often has no time zone set) with the C `strftime` fields templates use.
fn strftime_now(format: String) -> Result<Value, Error> {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    Ok(Value::from(strftime(&format, secs)))
}

const MONTHS: [&str; 12] = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
];

/// `%Y %m %d %B %b %H %M %S %%` of the UTC time `secs` after the epoch; other
/// fields are left as written.
fn strftime(format: &str, secs: u64) -> String {
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, m, d) = civil_from_days(days as i64);
    let mut out = String::new();
    let mut chars = format.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('Y') => out.push_str(&y.to_string()),
            Some('m') => out.push_str(&format!("{m:02}")),
            Some('d') => out.push_str(&format!("{d:02}")),
            Some('B') => out.push_str(MONTHS[m as usize - 1]),
            Some('b') => out.push_str(&MONTHS[m as usize - 1][..3]),
            Some('H') => out.push_str(&format!("{:02}", rem / 3600)),
            Some('M') => out.push_str(&format!("{:02}", rem / 60 % 60)),
            Some('S') => out.push_str(&format!("{:02}", rem % 60)),
            Some('%') => out.push('%'),
            Some(other) => {
                out.push('%');
                out.push(other);
            }
            None => out.push('%'),
        }
    }
    out
}

/// Year, month, day of `days` after 1970-01-01 (Howard Hinnant's algorithm).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// transformers' `tojson`: Python's `json.dumps(x, ensure_ascii=False,
/// indent=indent)`, so `", "` and `": "` between items unless indented.
fn tojson(v: Value, kwargs: Kwargs) -> Result<Value, Error> {
    let indent: Option<usize> = kwargs.get("indent")?;
    kwargs.assert_all_used()?;
    let json = serde_json::to_value(&v)
        .map_err(|e| Error::new(ErrorKind::InvalidOperation, format!("tojson: {e}")))?;
    let mut out = String::new();
    py_dumps(&json, indent, 0, &mut out);
    Ok(Value::from_safe_string(out))
}

fn py_dumps(v: &serde_json::Value, indent: Option<usize>, level: usize, out: &mut String) {
    use serde_json::Value as J;
    let (open, close, items): (char, char, Vec<(Option<&str>, &J)>) = match v {
        J::Array(a) => ('[', ']', a.iter().map(|x| (None, x)).collect()),
        J::Object(o) => (
            '{',
            '}',
            o.iter().map(|(k, x)| (Some(k.as_str()), x)).collect(),
        ),
        // Strings and numbers print as Python prints them (same escapes, `1.0`).
        other => {
            out.push_str(&other.to_string());
            return;
        }
    };
    out.push(open);
    if items.is_empty() {
        out.push(close);
        return;
    }
    let newline = |out: &mut String, level: usize| {
        if let Some(n) = indent {
            out.push('\n');
            out.push_str(&" ".repeat(n * level));
        }
    };
    for (i, (key, x)) in items.iter().enumerate() {
        if i > 0 {
            out.push_str(if indent.is_some() { "," } else { ", " });
        }
        newline(out, level + 1);
        if let Some(k) = key {
            out.push_str(&serde_json::Value::from(*k).to_string());
            out.push_str(": ");
        }
        py_dumps(x, indent, level + 1, out);
    }
    newline(out, level);
    out.push(close);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chat::Role;

    fn msgs(list: &[(Role, &str)]) -> Vec<Message> {
        list.iter()
            .map(|&(role, c)| Message {
                role,
                content: c.into(),
            })
            .collect()
    }

    #[test]
    fn tojson_writes_what_python_json_dumps_writes() {
        let t = ChatTemplate::new(
            "{{ x | tojson }}|{{ x | tojson(indent=2) }}|{{ [] | tojson }}",
            None,
            None,
        )
        .unwrap();
        let mut env_out = String::new();
        let x = serde_json::json!({"b": [1, 2.5, "é\n\"q\""], "a": {}, "c": null, "d": true});
        py_dumps(&x, None, 0, &mut env_out);
        assert_eq!(
            env_out,
            r#"{"b": [1, 2.5, "é\n\"q\""], "a": {}, "c": null, "d": true}"#
        );
        let mut indented = String::new();
        py_dumps(&serde_json::json!({"k": [1, 2]}), Some(2), 0, &mut indented);
        assert_eq!(indented, "{\n  \"k\": [\n    1,\n    2\n  ]\n}");
        // Through the filter, with keyword arguments.
        let env = &t.env;
        let out = env
            .render_str(
                "{{ v | tojson }} {{ v | tojson(indent=1) }}",
                minijinja::context! { v => vec![1, 2] },
            )
            .unwrap();
        assert_eq!(out, "[1, 2] [\n 1,\n 2\n]");
    }

    #[test]
    fn raise_exception_is_an_error_with_the_templates_text() {
        let t = ChatTemplate::new(
            "{% if messages[0]['role'] != 'user' %}{{ raise_exception('roles must start with user') }}{% endif %}ok",
            None,
            None,
        )
        .unwrap();
        assert_eq!(t.render(&msgs(&[(Role::User, "hi")]), true).unwrap(), "ok");
        let e = t
            .render(&msgs(&[(Role::Assistant, "hi")]), true)
            .unwrap_err();
        assert!(e.to_string().contains("roles must start with user"), "{e}");
    }

    #[test]
    fn a_syntax_error_names_the_key() {
        let Err(e) = ChatTemplate::new("{% for m in messages %}", None, None) else {
            panic!("an unclosed for loop compiled");
        };
        assert!(
            e.to_string().starts_with("tokenizer.chat_template: "),
            "{e}"
        );
    }

    #[test]
    fn strftime_fields() {
        // 2024-02-29 13:05:09 UTC.
        assert_eq!(
            strftime("%d %B %Y (%b) %H:%M:%S %% %j", 1_709_211_909),
            "29 February 2024 (Feb) 13:05:09 % %j"
        );
        assert_eq!(civil_from_days(0), (1970, 1, 1));
    }
}
