//! `phiq chat`: an interactive assistant, in the model's chat template when its GGUF
//! has one, else in Phi-2's prompt formats; the KV cache is kept across turns.

use std::io::{self, BufRead, Write};
use std::sync::atomic::Ordering;

use anyhow::Result;
use clap::{Args, ValueEnum};
use phiq::chat::{ChatFormat, Message, Role};
use phiq::tokenizer::Tokenizer;

use super::common::{self, INTERRUPTED, ModelArgs, SampleArgs, Stop};

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Style {
    /// The GGUF's `tokenizer.chat_template` (the default when it has one).
    Template,
    /// `Instruct: ...\nOutput:` (Phi-2's QA format; the default otherwise).
    Instruct,
    /// `Alice: ...\nBob:` (Phi-2's chat format).
    Chat,
}

/// A conversation's prompt format.
enum Format {
    /// Phi-2's: each turn `{user}{msg}\n{bot}{answer}`, turns joined by newlines.
    Turns {
        user: &'static str,
        bot: &'static str,
    },
    Template(ChatFormat),
}

impl Format {
    fn new(style: Option<Style>, chat: ChatFormat) -> Result<Format> {
        let has_template = matches!(chat, ChatFormat::Template { .. });
        Ok(match style {
            Some(Style::Template) if !has_template => {
                anyhow::bail!("--style template: the model has no tokenizer.chat_template")
            }
            Some(Style::Template) => Format::Template(chat),
            None if has_template => Format::Template(chat),
            Some(Style::Instruct) | None => Format::Turns {
                user: "Instruct: ",
                bot: "Output:",
            },
            Some(Style::Chat) => Format::Turns {
                user: "Alice: ",
                bot: "Bob:",
            },
        })
    }

    /// The prompt of `messages` (ending with a user message), the answer's turn opened.
    fn prompt(&self, messages: &[Message]) -> Result<String> {
        match self {
            Format::Turns { user, bot } => {
                let mut out = String::new();
                for m in messages {
                    match m.role {
                        Role::User if out.is_empty() => out = format!("{user}{}\n{bot}", m.content),
                        Role::User => out.push_str(&format!("\n{user}{}\n{bot}", m.content)),
                        _ => out.push_str(&m.content),
                    }
                }
                Ok(out)
            }
            Format::Template(f) => Ok(f.prompt(messages)?),
        }
    }

    /// Phi-2 tends to go on with the next turn itself: stop there.
    fn stops(&self) -> Vec<String> {
        match self {
            Format::Turns { user, .. } => {
                vec![format!("\n{}", user.trim_end()), "<|endoftext|>".into()]
            }
            Format::Template(f) => f.stops(),
        }
    }

    fn describe(&self) -> String {
        match self {
            Format::Turns { user, bot } => format!("the `{}...\\n{bot}` format", user.trim_end()),
            Format::Template(f) => f.describe().into(),
        }
    }
}

#[derive(Args)]
pub struct ChatArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// Prompt format (default: the model's chat template if it has one, else instruct).
    #[arg(long, value_enum)]
    style: Option<Style>,
    /// Tokens per answer at most.
    #[arg(short = 'n', long = "n-predict", default_value_t = 256)]
    n_predict: usize,
    #[command(flatten)]
    sample: SampleArgs,
}

pub fn run(args: &ChatArgs) -> Result<()> {
    let mut sampler = args.sample.sampler()?;
    let (loaded, n_ctx) = args.model.load_fitting()?;
    let (model, tok) = (&loaded.model, &loaded.tokenizer);
    let mut session = args.model.session(model, n_ctx)?;
    let format = Format::new(args.style, ChatFormat::from_gguf(model.file(), tok)?)?;
    // Ctrl-C ends the current answer; at the prompt, /exit or Ctrl-D ends the program.
    ctrlc::set_handler(|| INTERRUPTED.store(true, Ordering::SeqCst))?;
    eprintln!(
        "phiq chat: {} ({} context, {}). Type a message; /reset forgets, /exit (or Ctrl-D) quits, Ctrl-C stops an answer.",
        model.file().path().display(),
        session.n_ctx(),
        format.describe()
    );
    let mut messages: Vec<Message> = Vec::new();
    // The tokens the session's cache holds.
    let mut history: Vec<u32> = Vec::new();
    let stdin = io::stdin();
    let mut line = String::new();
    loop {
        eprint!("> ");
        line.clear();
        INTERRUPTED.store(false, Ordering::SeqCst);
        if stdin.lock().read_line(&mut line)? == 0 {
            break;
        }
        let msg = line.trim();
        match msg {
            "" => continue,
            "/exit" | "/quit" => break,
            "/reset" => {
                session.truncate(0);
                messages.clear();
                history.clear();
                eprintln!("(conversation forgotten)");
                continue;
            }
            _ => {}
        }
        messages.push(Message {
            role: Role::User,
            content: msg.to_string(),
        });
        let Some(tokens) = fit(&format, &mut messages, tok, session.n_ctx(), args)? else {
            continue;
        };
        // Evaluate only what the cache does not hold already (at least the last
        // token: its logits choose the first of the answer).
        let keep = common_prefix(&history, &tokens).min(tokens.len() - 1);
        session.truncate(keep);
        history.truncate(keep);
        history.extend_from_slice(&tokens[keep..]);
        let logits = common::prefill(&mut session, &tokens[keep..], args.model.batch)?;
        let room = session.n_ctx() - session.len();
        let stops = format.stops();
        let stops: Vec<&str> = stops.iter().map(String::as_str).collect();
        let mut out = io::stdout().lock();
        let generated = common::generate(
            &mut session,
            tok,
            &mut sampler,
            logits,
            &mut history,
            args.n_predict.min(room),
            &stops,
            &mut out,
        )?;
        writeln!(out)?;
        // The last token chosen may not have been evaluated (a stop text, a full
        // context): the history is what the cache holds.
        history.truncate(session.len());
        if generated.stop == Stop::Interrupted {
            eprintln!("(stopped)");
        }
        messages.push(Message {
            role: Role::Assistant,
            content: generated.text.trim_end().to_string(),
        });
    }
    Ok(())
}

fn common_prefix(a: &[u32], b: &[u32]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}

/// The tokens of the conversation's prompt, after dropping its oldest exchanges
/// until it leaves room for an answer; `None` (the message dropped) when even the
/// last message alone does not.
fn fit(
    format: &Format,
    messages: &mut Vec<Message>,
    tok: &Tokenizer,
    n_ctx: usize,
    args: &ChatArgs,
) -> Result<Option<Vec<u32>>> {
    // Leave room for a useful answer as well as the question.
    let budget = n_ctx.saturating_sub(args.n_predict.min(n_ctx / 4));
    let mut dropped = 0;
    loop {
        let tokens = tok.encode(&format.prompt(messages)?)?;
        if tokens.len() < budget {
            if dropped > 0 {
                eprintln!("(context full: dropped the {dropped} oldest turn(s))");
            }
            return Ok(Some(tokens));
        }
        // The oldest exchange: everything up to the second user message.
        match messages.iter().skip(1).position(|m| m.role == Role::User) {
            Some(i) => {
                messages.drain(..=i);
                dropped += 1;
            }
            None => {
                eprintln!(
                    "(that message is {} tokens; the context holds {}: shorten it or raise --ctx)",
                    tokens.len(),
                    n_ctx
                );
                messages.clear();
                return Ok(None);
            }
        }
    }
}
