//! The Hugging Face reference in tests/fixtures/oracle: GGUFs made from its checkpoint,
//! its JSON and its `.npy` arrays.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use phiq_quantize::convert::NoProgress;
use phiq_quantize::{FileType, Input, Plan, convert};
use serde_json::Value;

/// The dev reference, from either crate's tests (found above the manifest folder).
pub fn root() -> PathBuf {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let dir = manifest
        .ancestors()
        .find(|d| d.join("tests/fixtures/oracle").is_dir())
        .unwrap_or(&manifest);
    dir.join("tests/fixtures/oracle/dev")
}

pub fn checkpoint() -> PathBuf {
    root().join("checkpoint")
}

pub fn reference() -> Value {
    let text = std::fs::read_to_string(root().join("expected/reference.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

/// A copy of the dev checkpoint whose tokenizer ships `template`, in
/// `tokenizer_config.json` or (transformers >= 4.50) `chat_template.jinja`.
pub fn checkpoint_with_template(dir: &Path, template: &str, jinja_file: bool) -> PathBuf {
    let src = checkpoint();
    let dst = dir.join("checkpoint");
    std::fs::create_dir_all(&dst).unwrap();
    for e in std::fs::read_dir(&src).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), dst.join(e.file_name())).unwrap();
    }
    if jinja_file {
        std::fs::write(dst.join("chat_template.jinja"), template).unwrap();
    } else {
        let p = dst.join("tokenizer_config.json");
        let mut cfg: Value = serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
        cfg["chat_template"] = Value::from(template);
        std::fs::write(&p, serde_json::to_string(&cfg).unwrap()).unwrap();
    }
    dst
}

/// Converts the Hugging Face folder `input` to `out` with the real converter.
pub fn gguf_from(input: &Path, ty: &str, out: &Path) -> PathBuf {
    let input = Input::open(input).unwrap();
    let plan = Plan::new(
        &input,
        FileType::by_name(ty).unwrap(),
        Some("oracle"),
        false,
    )
    .unwrap();
    convert(
        &input,
        &plan,
        &phiq_quantize::lora::Lora::none(),
        &phiq_quantize::Importance::none(),
        out,
        &NoProgress,
    )
    .unwrap();
    out.to_path_buf()
}

/// A float32 `.npy` array: its shape and values.
pub fn npy_f32(path: &Path) -> (Vec<usize>, Vec<f32>) {
    let bytes = std::fs::read(path).unwrap();
    assert_eq!(&bytes[..6], b"\x93NUMPY", "{}", path.display());
    let (header_len, start) = match bytes[6] {
        1 => (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10),
        _ => (
            u32::from_le_bytes(bytes[8..12].try_into().unwrap()) as usize,
            12,
        ),
    };
    let header = std::str::from_utf8(&bytes[start..start + header_len]).unwrap();
    assert!(
        header.contains("'descr': '<f4'") && header.contains("'fortran_order': False"),
        "{header}"
    );
    let shape_text = header
        .split("'shape': (")
        .nth(1)
        .unwrap()
        .split(')')
        .next()
        .unwrap();
    let shape = shape_text
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    let data = bytes[start + header_len..]
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect();
    (shape, data)
}

pub fn ids(v: &Value) -> Vec<u32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect()
}
