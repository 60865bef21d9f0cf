//! The `gguf_parse` fuzz target's property, on stable Rust so that it holds in CI
//! without nightly: `GgufHeader::parse` returns `Ok` or a clean `Err` on any input,
//! never panics, and an `Ok` only ever hands out in-bounds tensor ranges.
//!
//! Inputs: the fuzz seeds (`fuzz/seeds/`) and every truncation and single-byte
//! corruption of their headers, and every input the fuzzer ever crashed on
//! (`tests/fixtures/fuzz/`).

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};

use phiq::gguf::{
    GgufError, GgufFile, GgufHeader, Load, MAX_METADATA_VALUES, MAX_TENSORS, MetaType,
};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The files of `dir` but its README, sorted; the directory must exist.
fn files_in(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file() && p.extension().is_some_and(|x| x != "md"))
        .collect();
    files.sort();
    files
}

/// Parses `bytes`, turning a panic into a test failure that names the input.
fn parse(what: &str, bytes: &[u8]) -> Result<GgufHeader, GgufError> {
    let parsed = catch_unwind(AssertUnwindSafe(|| {
        let r = GgufHeader::parse(bytes);
        if let Ok(h) = &r {
            touch(h, bytes);
        }
        if let Err(e) = &r {
            let _ = e.to_string();
        }
        r
    }));
    parsed.unwrap_or_else(|_| panic!("parser panicked on {what} ({} bytes)", bytes.len()))
}

/// What the fuzz target does with a parsed header: every tensor range, every value.
fn touch(h: &GgufHeader, bytes: &[u8]) {
    assert!(h.alignment.is_power_of_two());
    for t in &h.tensors {
        let start = usize::try_from(t.file_offset).unwrap();
        let end = start + usize::try_from(t.n_bytes).unwrap();
        assert!(end <= bytes.len(), "tensor {:?} out of bounds", t.name);
        assert_eq!(t.file_offset, h.data_offset + t.offset);
        assert!(h.tensor(&t.name).is_some_and(|u| std::ptr::eq(u, t)));
        let _ = (t.n_elements(), t.n_rows(), t.row_len());
    }
    for (k, v) in &h.metadata {
        assert!(h.get(k).is_some_and(|u| std::ptr::eq(u, v)));
        let _ = v.to_string();
        let _ = v.to_json(None).to_string();
        let _ = v.to_json(Some(4)).to_string();
    }
}

#[test]
fn seeds_parse_and_every_truncation_is_clean() {
    let seeds = files_in(&root().join("fuzz/seeds"));
    assert!(seeds.len() >= 10, "expected the committed seeds");
    for path in seeds {
        let name = path.display().to_string();
        let bytes = std::fs::read(&path).unwrap();
        let full = parse(&name, &bytes).unwrap_or_else(|e| panic!("{name}: {e}"));
        let data_end = full
            .tensors
            .iter()
            .map(|t| t.file_offset + t.n_bytes)
            .max()
            .unwrap_or(0);
        for len in 0..bytes.len() {
            match parse(&format!("{name} cut to {len} bytes"), &bytes[..len]) {
                // A prefix can only parse if it holds the whole header and every tensor,
                // and then it must read exactly what the whole file holds.
                Ok(h) => {
                    assert!(len as u64 >= data_end, "{name} cut to {len} parsed");
                    assert_eq!(h.metadata.len(), full.metadata.len(), "{name} cut to {len}");
                    assert_eq!(h.tensors, full.tensors, "{name} cut to {len}");
                }
                Err(GgufError::InFile { .. } | GgufError::Io { .. }) => {
                    panic!("parse over a buffer gave a file error")
                }
                Err(_) => {}
            }
        }
    }
}

#[test]
fn seeds_with_any_header_byte_corrupted_are_clean() {
    for path in files_in(&root().join("fuzz/seeds")) {
        let name = path.display().to_string();
        let bytes = std::fs::read(&path).unwrap();
        let header_end = parse(&name, &bytes).unwrap().data_offset as usize;
        let mut copy = bytes.clone();
        for pos in 0..header_end.min(bytes.len()) {
            for new in [bytes[pos] ^ 0xff, bytes[pos] ^ 0x01, 0x00, 0x80, 0xff] {
                copy[pos] = new;
                let _ = parse(&format!("{name} with byte {pos} = {new:#04x}"), &copy);
            }
            copy[pos] = bytes[pos];
        }
    }
}

#[test]
fn fuzz_regressions_are_clean() {
    for path in files_in(&root().join("tests/fixtures/fuzz")) {
        let name = path.display().to_string();
        let bytes = std::fs::read(&path).unwrap();
        let in_memory = parse(&name, &bytes).map(|h| h.tensors.len());
        // The same through the memory map, as `phiq info` reads it, and read in whole.
        for load in [Load::Map, Load::Read] {
            let opened = catch_unwind(|| GgufFile::open_with(&path, load).map(|f| f.tensors.len()))
                .unwrap_or_else(|_| panic!("GgufFile::open_with({load:?}) panicked on {name}"));
            assert_eq!(in_memory.is_ok(), opened.is_ok(), "{name} {load:?}");
            if let Err(e) = opened {
                let msg = e.to_string();
                assert!(msg.starts_with(&name), "{msg}");
                assert!(!msg.contains('\n'), "{msg}");
            }
        }
    }
}

/// A header with no tensors and `n_kv` keys, followed by `body`.
fn header(n_tensors: u64, n_kv: u64, body: &[u8]) -> Vec<u8> {
    let mut b = b"GGUF".to_vec();
    b.extend_from_slice(&3u32.to_le_bytes());
    b.extend_from_slice(&n_tensors.to_le_bytes());
    b.extend_from_slice(&n_kv.to_le_bytes());
    b.extend_from_slice(body);
    b
}

fn key(b: &mut Vec<u8>, k: &str, ty: MetaType) {
    b.extend_from_slice(&(k.len() as u64).to_le_bytes());
    b.extend_from_slice(k.as_bytes());
    b.extend_from_slice(&(ty as u32).to_le_bytes());
}

/// A `uint8` array takes one byte per value but a `MetaValue` per value once parsed:
/// the value budget refuses what the file's length alone would allow.
#[test]
fn metadata_value_budget_is_enforced() {
    let n = MAX_METADATA_VALUES; // plus the key itself: one over
    let mut body = Vec::new();
    key(&mut body, "big", MetaType::Array);
    body.extend_from_slice(&(MetaType::U8 as u32).to_le_bytes());
    body.extend_from_slice(&n.to_le_bytes());
    body.resize(body.len() + n as usize, 1);
    let err = GgufHeader::parse(&header(0, 1, &body)).unwrap_err();
    assert!(
        matches!(err, GgufError::LimitExceeded { max, .. } if max == MAX_METADATA_VALUES),
        "{err}"
    );
    assert!(err.to_string().contains("\"big\""), "{err}");
}

#[test]
fn tensor_count_limit_is_enforced() {
    let n = MAX_TENSORS + 1;
    let body = vec![0u8; n as usize * 24];
    let err = GgufHeader::parse(&header(n, 0, &body)).unwrap_err();
    assert!(matches!(err, GgufError::LimitExceeded { .. }), "{err}");
}

/// The writer refuses arrays nested deeper than the reader accepts (8 levels), rather
/// than write a file that phiq itself would refuse.
#[test]
fn writer_refuses_arrays_nested_too_deep() {
    use phiq::gguf::{GgufWriter, MetaArray, MetaValue};
    let nested = |levels: usize| {
        let mut v = MetaValue::Array(MetaArray::new(MetaType::U8, vec![MetaValue::U8(1)]));
        for _ in 1..levels {
            v = MetaValue::Array(MetaArray::new(MetaType::Array, vec![v]));
        }
        vec![("k.deep".to_string(), v)]
    };
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("deep.gguf");
    let err = GgufWriter::create(&path, &nested(9), vec![]).err().unwrap();
    assert!(
        matches!(err, GgufError::NestingTooDeep { max: 8, .. }),
        "{err}"
    );
    assert!(!path.exists());
    GgufWriter::create(&path, &nested(8), vec![])
        .unwrap()
        .finish()
        .unwrap();
    let f = GgufFile::open(&path).unwrap();
    assert!(f.get_array("k.deep").is_ok());
}
