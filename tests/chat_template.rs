//! Chat templates against transformers: `apply_chat_template`'s output, recorded in
//! `tests/fixtures/chat_templates/cases.json` (by `tests/py/record_chat_templates.py`),
//! for ChatML, Phi-2's Instruct/Output and Zephyr templates and one that uses
//! `tojson` and Python string methods; then the same through a GGUF that
//! `phiq-quantize` made from a checkpoint shipping the template.

#[path = "support/oracle.rs"]
mod oracle;

use phiq::chat::{ChatFormat, ChatTemplate, Message, Role};
use phiq::gguf::GgufFile;
use phiq::tokenizer::Tokenizer;
use serde_json::Value;

fn fixture() -> Value {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/chat_templates/cases.json"
    );
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn conversation(v: &Value) -> Vec<Message> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|m| Message {
            role: Role::from_name(m["role"].as_str().unwrap()).unwrap(),
            content: m["content"].as_str().unwrap().into(),
        })
        .collect()
}

#[test]
fn templates_render_as_transformers_apply_chat_template() {
    let f = fixture();
    let (bos, eos) = (f["bos_token"].as_str(), f["eos_token"].as_str());
    let cases = f["cases"].as_array().unwrap();
    assert_eq!(cases.len(), 24);
    for c in cases {
        let name = c["template"].as_str().unwrap();
        let t = ChatTemplate::new(f["templates"][name].as_str().unwrap(), bos, eos).unwrap();
        let conv = conversation(&f["conversations"][c["conversation"].as_u64().unwrap() as usize]);
        let open = c["add_generation_prompt"].as_bool().unwrap();
        let got = t.render(&conv, open).unwrap();
        assert_eq!(got, c["rendered"].as_str().unwrap(), "{name}, {c}");
    }
}

#[test]
fn phiq_quantize_copies_the_template_and_the_runtime_renders_it() {
    let f = fixture();
    for (name, jinja_file) in [("chatml", false), ("zephyr", true)] {
        let dir = tempfile::tempdir().unwrap();
        let template = f["templates"][name].as_str().unwrap();
        let ckpt = oracle::checkpoint_with_template(dir.path(), template, jinja_file);
        let gguf = oracle::gguf_from(&ckpt, "q8_0", &dir.path().join("m.gguf"));
        let file = GgufFile::open(&gguf).unwrap();
        assert_eq!(
            file.get(phiq::chat::KEY_TEMPLATE).and_then(|v| v.as_str()),
            Some(template)
        );
        let tok = Tokenizer::from_gguf(&file).unwrap();
        let format = ChatFormat::from_gguf(&file, &tok).unwrap();
        for c in f["cases"].as_array().unwrap() {
            if c["template"] != name || c["add_generation_prompt"] != true {
                continue;
            }
            let conv =
                conversation(&f["conversations"][c["conversation"].as_u64().unwrap() as usize]);
            assert_eq!(
                format.prompt(&conv).unwrap(),
                c["rendered"].as_str().unwrap()
            );
        }
        let stops = format.stops();
        let want: &[&str] = if name == "chatml" {
            &["<|im_end|>", "<|endoftext|>"]
        } else {
            &["<|endoftext|>"]
        };
        assert_eq!(stops, want, "{name}");
    }
    // Without a template: Phi-2's format.
    let dir = tempfile::tempdir().unwrap();
    let gguf = oracle::gguf_from(&oracle::checkpoint(), "q8_0", &dir.path().join("m.gguf"));
    let file = GgufFile::open(&gguf).unwrap();
    let tok = Tokenizer::from_gguf(&file).unwrap();
    assert!(matches!(
        ChatFormat::from_gguf(&file, &tok).unwrap(),
        ChatFormat::Phi2
    ));
}

#[test]
fn a_template_that_raises_names_its_message() {
    let f = fixture();
    let t = ChatTemplate::new(
        f["templates"]["zephyr"].as_str().unwrap(),
        None,
        Some("</s>"),
    )
    .unwrap();
    let sys = [Message {
        role: Role::System,
        content: "only a system message".into(),
    }];
    let e = t.render(&sys, true).unwrap_err().to_string();
    assert!(e.contains("no user or assistant message"), "{e}");
}
