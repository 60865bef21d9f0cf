//! `phiq chat`: an interactive assistant in Phi-2's prompt formats, reusing the KV
//! cache across turns.

use std::io::{self, BufRead, Write};
use std::sync::atomic::Ordering;

use anyhow::Result;
use clap::{Args, ValueEnum};
use phiq::model::Session;
use phiq::tokenizer::Tokenizer;

use super::common::{self, INTERRUPTED, ModelArgs, SampleArgs, Stop};

#[derive(Clone, Copy, Debug, ValueEnum)]
enum Style {
    /// `Instruct: ...\nOutput:` (Phi-2's QA format).
    Instruct,
    /// `Alice: ...\nBob:` (Phi-2's chat format).
    Chat,
}

impl Style {
    fn turn(self, msg: &str) -> String {
        match self {
            Style::Instruct => format!("Instruct: {msg}\nOutput:"),
            Style::Chat => format!("Alice: {msg}\nBob:"),
        }
    }

    /// Phi-2 tends to go on with the next turn itself: stop there.
    fn stops(self) -> &'static [&'static str] {
        match self {
            Style::Instruct => &["\nInstruct:", "<|endoftext|>"],
            Style::Chat => &["\nAlice:", "<|endoftext|>"],
        }
    }
}

#[derive(Args)]
pub struct ChatArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// Prompt format.
    #[arg(long, value_enum, default_value = "instruct")]
    style: Style,
    /// Tokens per answer at most.
    #[arg(short = 'n', long = "n-predict", default_value_t = 256)]
    n_predict: usize,
    #[command(flatten)]
    sample: SampleArgs,
}

/// The conversation: each turn's text with its answer, kept to rebuild the cache
/// when old turns must be dropped.
struct Conversation {
    turns: Vec<String>,
}

impl Conversation {
    fn text(&self) -> String {
        self.turns.join("\n")
    }
}

pub fn run(args: &ChatArgs) -> Result<()> {
    let mut sampler = args.sample.sampler()?;
    let loaded = args.model.load()?;
    let (model, tok) = (&loaded.model, &loaded.tokenizer);
    let mut session = args.model.session(model)?;
    // Ctrl-C ends the current answer; at the prompt, /exit or Ctrl-D ends the program.
    ctrlc::set_handler(|| INTERRUPTED.store(true, Ordering::SeqCst))?;
    eprintln!(
        "phiq chat: {} ({} context). Type a message; /reset forgets, /exit (or Ctrl-D) quits, Ctrl-C stops an answer.",
        model.file().path().display(),
        session.n_ctx()
    );
    let mut conv = Conversation { turns: Vec::new() };
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
                conv.turns.clear();
                history.clear();
                eprintln!("(conversation forgotten)");
                continue;
            }
            _ => {}
        }
        let turn = args.style.turn(msg);
        let text = if conv.turns.is_empty() {
            turn.clone()
        } else {
            format!("\n{turn}")
        };
        let mut new = tok.encode(&text)?;
        if session.len() + new.len() + 1 > session.n_ctx() {
            new = make_room(&mut session, &mut conv, &mut history, tok, &turn, args)?;
            if new.is_empty() {
                continue;
            }
        }
        history.extend(&new);
        let logits = common::prefill(&mut session, &new, args.model.batch)?;
        let room = session.n_ctx() - session.len();
        let mut out = io::stdout().lock();
        let generated = common::generate(
            &mut session,
            tok,
            &mut sampler,
            logits,
            &mut history,
            args.n_predict.min(room),
            args.style.stops(),
            &mut out,
        )?;
        writeln!(out)?;
        if generated.stop == Stop::Interrupted {
            eprintln!("(stopped)");
        }
        // Keep the cache in step with the text we keep: the answer as shown.
        let answer = generated.text.trim_end().to_string();
        conv.turns.push(format!("{turn}{answer}"));
        let kept = tok.encode(&conv.text())?;
        if !history.starts_with(&kept) || history.len() != kept.len() {
            session.truncate(0);
            history = kept;
            common::prefill(&mut session, &history, args.model.batch)?;
        }
    }
    Ok(())
}

/// Drops the oldest turns until the new one fits, re-evaluates what is kept, and
/// returns the new turn's tokens (empty if even alone it does not fit).
fn make_room(
    session: &mut Session,
    conv: &mut Conversation,
    history: &mut Vec<u32>,
    tok: &Tokenizer,
    turn: &str,
    args: &ChatArgs,
) -> Result<Vec<u32>> {
    let alone = tok.encode(turn)?;
    // Leave room for a useful answer as well as the question.
    let budget = session
        .n_ctx()
        .saturating_sub(args.n_predict.min(session.n_ctx() / 4));
    if alone.len() >= budget {
        eprintln!(
            "(that message is {} tokens; the context holds {}: shorten it or raise --ctx)",
            alone.len(),
            session.n_ctx()
        );
        return Ok(Vec::new());
    }
    let mut dropped = 0;
    loop {
        let mut all = conv.turns.clone();
        all.push(turn.to_string());
        let tokens = tok.encode(&all.join("\n"))?;
        if tokens.len() < budget || conv.turns.is_empty() {
            eprintln!("(context full: dropped the {dropped} oldest turn(s))");
            session.truncate(0);
            let prefix_len = if conv.turns.is_empty() {
                0
            } else {
                tok.encode(&conv.text())?.len()
            };
            *history = tokens[..prefix_len].to_vec();
            common::prefill(session, history, args.model.batch)?;
            return Ok(tokens[prefix_len..].to_vec());
        }
        conv.turns.remove(0);
        dropped += 1;
    }
}
