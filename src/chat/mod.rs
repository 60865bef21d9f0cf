//! Chat messages to a prompt: Phi-2's own format by default, or the model's own
//! Jinja chat template when its GGUF carries one (`tokenizer.chat_template`, copied
//! by `phiq-quantize` from a fine-tune's `tokenizer_config.json`).

pub mod phi2;
mod template;

pub use template::{ChatTemplate, TemplateError};

use crate::gguf::GgufHeader;
use crate::tokenizer::Tokenizer;

/// The GGUF key of a model's chat template.
pub const KEY_TEMPLATE: &str = "tokenizer.chat_template";

/// One message of a conversation.
#[derive(Clone, Debug, PartialEq)]
pub struct Message {
    pub role: Role,
    pub content: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    System,
    User,
    Assistant,
}

impl Role {
    pub fn from_name(s: &str) -> Option<Role> {
        match s {
            "system" | "developer" => Some(Role::System),
            "user" => Some(Role::User),
            "assistant" => Some(Role::Assistant),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Role::System => "system",
            Role::User => "user",
            Role::Assistant => "assistant",
        }
    }
}

/// How a conversation becomes a prompt.
pub enum ChatFormat {
    /// `Instruct: ...\nOutput:` ([`phi2::prompt`]).
    Phi2,
    /// The model's template, with the texts that end an assistant's turn in it.
    Template {
        template: Box<ChatTemplate>,
        stops: Vec<String>,
    },
}

/// End-of-turn markers of common templates (ChatML, Phi-3, Llama 3, Zephyr): those
/// a template writes end the answer, whether or not the tokenizer knows them as
/// one token.
const TURN_ENDS: [&str; 5] = [
    "<|im_end|>",
    "<|end|>",
    "<|eot_id|>",
    "</s>",
    "<|endoftext|>",
];

impl ChatFormat {
    /// The model's template if its GGUF has one, else Phi-2's format.
    pub fn from_gguf(header: &GgufHeader, tok: &Tokenizer) -> Result<ChatFormat, TemplateError> {
        let Some(v) = header.get(KEY_TEMPLATE) else {
            return Ok(ChatFormat::Phi2);
        };
        let source = v
            .as_str()
            .ok_or_else(|| TemplateError::new("is not a string"))?;
        let piece = |id: Option<u32>| id.map(|i| tok.token_piece(i).to_string());
        let (bos, eos) = (piece(tok.bos_id()), piece(tok.eos_id()));
        let template = Box::new(ChatTemplate::new(source, bos.as_deref(), eos.as_deref())?);
        let mut stops: Vec<String> = TURN_ENDS
            .iter()
            .filter(|s| source.contains(*s))
            .map(|s| s.to_string())
            .collect();
        if let Some(e) = eos.filter(|e| !e.is_empty() && !stops.contains(e)) {
            stops.push(e);
        }
        Ok(ChatFormat::Template { template, stops })
    }

    /// The prompt of `messages`, the assistant's turn opened.
    pub fn prompt(&self, messages: &[Message]) -> Result<String, TemplateError> {
        match self {
            ChatFormat::Phi2 => Ok(phi2::prompt(messages)),
            ChatFormat::Template { template, .. } => template.render(messages, true),
        }
    }

    /// Texts that end an answer (the model would go on to write the next turn).
    pub fn stops(&self) -> Vec<String> {
        match self {
            ChatFormat::Phi2 => phi2::STOPS.iter().map(|s| s.to_string()).collect(),
            ChatFormat::Template { stops, .. } => stops.clone(),
        }
    }

    /// What `phiq chat` and `phiq serve` say they use.
    pub fn describe(&self) -> &'static str {
        match self {
            ChatFormat::Phi2 => "Phi-2's Instruct/Output format",
            ChatFormat::Template { .. } => "the model's chat template (tokenizer.chat_template)",
        }
    }
}
