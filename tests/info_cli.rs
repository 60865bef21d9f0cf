//! `phiq info` as a user meets it: on good files it describes them, on damaged ones it
//! fails with one line naming the file and the fault. It never panics (exit code 101)
//! and is never killed by a signal, whatever the bytes.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::{Rng, run_py};
use phiq::gguf::{GgufFile, GgufWriter, MetaArray, MetaType, MetaValue, TensorSpec};
use phiq::quant::GgmlType;
use serde_json::Value;

fn phiq(args: &[&dyn AsRef<std::ffi::OsStr>]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_phiq"))
        .args(args.iter().map(|a| a.as_ref()))
        .output()
        .expect("failed to start phiq")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// The run ended by itself (no signal), without a panic (Rust's exit code 101).
fn assert_no_crash(o: &Output, what: &str) {
    let code = o
        .status
        .code()
        .unwrap_or_else(|| panic!("{what}: killed by a signal ({:?})\n{}", o.status, stderr(o)));
    assert_ne!(code, 101, "{what}: panicked\n{}", stderr(o));
}

/// A failure reported the way every phiq error is: exit code 1 and one line on stderr,
/// `phiq: error: FILE: ...`. Returns the message after the path.
fn assert_clean_failure(o: &Output, path: &Path, what: &str) -> String {
    assert_no_crash(o, what);
    assert!(!o.status.success(), "{what}: succeeded\n{}", stdout(o));
    assert_eq!(o.status.code(), Some(1), "{what}");
    let err = stderr(o);
    let prefix = format!("phiq: error: {}: ", path.display());
    assert!(err.starts_with(&prefix), "{what}: stderr is {err:?}");
    assert!(err.ends_with('\n'), "{what}: stderr is {err:?}");
    assert_eq!(err.lines().count(), 1, "{what}: stderr is {err:?}");
    assert!(o.stdout.is_empty(), "{what}: stdout is {:?}", stdout(o));
    err[prefix.len()..].trim_end().to_string()
}

fn kv(key: &str, value: MetaValue) -> (String, MetaValue) {
    (key.to_string(), value)
}

fn array(elem_type: MetaType, values: Vec<MetaValue>) -> MetaValue {
    MetaValue::Array(MetaArray::new(elem_type, values))
}

/// A small valid file from phiq's writer: every metadata type, nested arrays, tensors
/// of several types, the last ending exactly at the end of the file (so that every
/// truncation loses data). Returns the file and where its header ends.
fn valid_file(dir: &Path) -> (PathBuf, Vec<u8>, usize) {
    use MetaValue as V;
    let metadata = vec![
        kv("general.architecture", V::String("phi2".into())),
        kv("general.name", V::String("tiny".into())),
        kv("general.alignment", V::U32(32)),
        kv("t.u8", V::U8(200)),
        kv("t.i8", V::I8(-100)),
        kv("t.u16", V::U16(60000)),
        kv("t.i16", V::I16(-30000)),
        kv("t.u32", V::U32(4_000_000_000)),
        kv("t.i32", V::I32(-2_000_000_000)),
        kv("t.f32", V::F32(1.5)),
        kv("t.bool", V::Bool(true)),
        kv("t.str", V::String("héllo".into())),
        kv("t.u64", V::U64(u64::MAX)),
        kv("t.i64", V::I64(i64::MIN)),
        kv("t.f64", V::F64(-0.25)),
        kv(
            "t.arr_i32",
            array(MetaType::I32, vec![V::I32(1), V::I32(-2)]),
        ),
        kv(
            "t.arr_bool",
            array(MetaType::Bool, vec![V::Bool(false), V::Bool(true)]),
        ),
        kv("t.arr_str", MetaValue::string_array(["a", "", "Ġb"])),
        kv(
            "t.nested",
            array(
                MetaType::Array,
                vec![
                    array(MetaType::U16, vec![V::U16(1)]),
                    array(MetaType::U16, vec![]),
                ],
            ),
        ),
        kv("phi2.context_length", V::U32(2048)),
        kv("phi2.attention.layer_norm_epsilon", V::F32(1e-5)),
    ];
    let tensors = vec![
        TensorSpec::new("token_embd.weight", GgmlType::Q8_0, &[32, 2]),
        TensorSpec::new("blk.0.attn_norm.weight", GgmlType::F16, &[8]),
        TensorSpec::new("blk.0.ffn_up.weight", GgmlType::Q4_0, &[64]),
        TensorSpec::new("output_norm.bias", GgmlType::F32, &[8]),
    ];
    let path = dir.join("valid.gguf");
    let mut w = GgufWriter::create(&path, &metadata, tensors.clone()).unwrap();
    let mut rng = Rng::new(1);
    for t in &tensors {
        let n =
            t.shape.iter().product::<u64>() / t.ty.block_size() as u64 * t.ty.type_size() as u64;
        w.write_tensor(&t.name, &rng.bytes(n as usize)).unwrap();
    }
    w.finish().unwrap();
    let bytes = std::fs::read(&path).unwrap();
    let f = GgufFile::open(&path).unwrap();
    let last = f.tensors.last().unwrap();
    assert_eq!(last.file_offset + last.n_bytes, bytes.len() as u64);
    assert!(bytes.len() < 4096);
    (path, bytes, f.data_offset as usize)
}

#[test]
fn info_describes_a_valid_file() {
    let dir = tempfile::tempdir().unwrap();
    let (path, _, _) = valid_file(dir.path());
    let o = phiq(&[&"info", &path]);
    assert!(o.status.success(), "{}", stderr(&o));
    let text = stdout(&o);
    assert!(text.contains("architecture  phi2"), "{text}");
    assert!(
        text.contains("GGUF v3, alignment 32, 21 metadata keys, 4 tensors"),
        "{text}"
    );
    for name in [
        "token_embd.weight",
        "blk.0.ffn_up.weight",
        "output_norm.bias",
        "t.nested",
    ] {
        assert!(text.contains(name), "{name} missing:\n{text}");
    }
    let o = phiq(&[&"info", &"--json", &"--full", &path]);
    assert!(o.status.success(), "{}", stderr(&o));
    let json: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(json["metadata"]["t.u64"]["value"], u64::MAX);
    assert_eq!(json["metadata"]["t.nested"]["type"], "array[array]");
    assert_eq!(json["tensors"].as_array().unwrap().len(), 4);
}

/// 500 damaged copies of a valid file: truncated ones must fail cleanly; ones with 1-8
/// bytes changed (mostly in the header) either still describe a file or fail cleanly.
#[test]
fn info_survives_500_corrupted_files() {
    let dir = tempfile::tempdir().unwrap();
    let (_, good, header_len) = valid_file(dir.path());
    let mut rng = Rng::new(0x1f0_5eed);
    let (mut ok, mut failed) = (0, 0);
    for i in 0..500 {
        let mut bytes = good.clone();
        let kind = if i % 4 == 0 {
            let len = rng.below(good.len());
            bytes.truncate(len);
            format!("truncated to {len} bytes")
        } else {
            let n = 1 + rng.below(8);
            let mut changes = Vec::new();
            for _ in 0..n {
                // Three in four in the header, where the structure is.
                let pos = if rng.below(4) == 0 {
                    rng.below(bytes.len())
                } else {
                    rng.below(header_len)
                };
                bytes[pos] = if i % 2 == 0 {
                    bytes[pos] ^ (1 << rng.below(8)) // a bit flip
                } else {
                    rng.next_u64() as u8 // an overwrite
                };
                changes.push(pos);
            }
            format!("bytes {changes:?} changed")
        };
        let path = dir.path().join(format!("bad-{i:03}.gguf"));
        std::fs::write(&path, &bytes).unwrap();
        let json = i % 3 == 0;
        let o = if json {
            phiq(&[&"info", &"--json", &path])
        } else {
            phiq(&[&"info", &path])
        };
        let what = format!("variant {i} ({kind})");
        assert_no_crash(&o, &what);
        if kind.starts_with("truncated") || !o.status.success() {
            assert_clean_failure(&o, &path, &what);
            failed += 1;
        } else {
            assert!(o.stderr.is_empty(), "{what}: {}", stderr(&o));
            if json {
                let v: Value = serde_json::from_slice(&o.stdout)
                    .unwrap_or_else(|e| panic!("{what}: --json output: {e}"));
                assert!(v["tensors"].is_array(), "{what}");
            } else {
                assert!(stdout(&o).contains("\ntensors\n"), "{what}: {}", stdout(&o));
            }
            ok += 1;
        }
        std::fs::remove_file(&path).unwrap();
    }
    eprintln!("{ok} damaged files described, {failed} refused");
    // Both outcomes must actually have been exercised.
    assert!(failed > 150 && ok >= 10, "{ok} described, {failed} refused");
}

/// A GGUF file built byte by byte, to be exactly as wrong as a test needs.
struct Raw(Vec<u8>);

impl Raw {
    /// Magic, `version`, tensor and key counts.
    fn new(version: u32, n_tensors: u64, n_kv: u64) -> Raw {
        let mut r = Raw(b"GGUF".to_vec());
        r.u32(version).u64(n_tensors).u64(n_kv);
        r
    }
    fn u8(&mut self, v: u8) -> &mut Raw {
        self.0.push(v);
        self
    }
    fn u32(&mut self, v: u32) -> &mut Raw {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    fn u64(&mut self, v: u64) -> &mut Raw {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    fn str(&mut self, s: impl AsRef<[u8]>) -> &mut Raw {
        let s = s.as_ref();
        self.u64(s.len() as u64);
        self.0.extend_from_slice(s);
        self
    }
    /// A key and its value type.
    fn key(&mut self, k: impl AsRef<[u8]>, ty: u32) -> &mut Raw {
        self.str(k).u32(ty)
    }
    fn kv_u32(&mut self, k: &str, v: u32) -> &mut Raw {
        self.key(k, MetaType::U32 as u32).u32(v)
    }
    /// A tensor info: name, dimensions, ggml type id, offset.
    fn tensor(&mut self, name: impl AsRef<[u8]>, shape: &[u64], ty: u32, offset: u64) -> &mut Raw {
        self.str(name).u32(shape.len() as u32);
        for &d in shape {
            self.u64(d);
        }
        self.u32(ty).u64(offset)
    }
    /// Zeros up to the next multiple of `alignment`, then `data` bytes of tensor data.
    fn data(&mut self, alignment: usize, data: usize) -> &mut Raw {
        let padded = self.0.len().div_ceil(alignment) * alignment;
        self.0.resize(padded + data, 0x3c);
        self
    }
}

const F32: u32 = GgmlType::F32 as u32;

/// Hand-made bad files, each refused with a message naming the fault.
#[test]
fn info_names_what_is_wrong() {
    let dir = tempfile::tempdir().unwrap();
    let arr = MetaType::Array as u32;
    let u8t = MetaType::U8 as u32;
    let cases: Vec<(&str, Raw, &str)> = vec![
        (
            "bad_magic",
            {
                let mut r = Raw::new(3, 0, 0);
                r.0[..4].copy_from_slice(b"GGML");
                r
            },
            "not a GGUF file: starts with [47, 47, 4d, 4c]",
        ),
        (
            "empty",
            Raw(Vec::new()),
            "truncated: magic at byte 0 needs 4 bytes, the file has 0 left",
        ),
        (
            "short_magic",
            Raw(b"GG".to_vec()),
            "truncated: magic at byte 0 needs 4 bytes, the file has 2 left",
        ),
        ("version_1", Raw::new(1, 0, 0), "GGUF version 1 is obsolete"),
        (
            "big_endian",
            Raw::new(3u32.swap_bytes(), 0, 0),
            "big-endian GGUF files are not supported",
        ),
        ("version_4", Raw::new(4, 0, 0), "unsupported GGUF version 4"),
        (
            "unknown_value_type",
            {
                let mut r = Raw::new(3, 0, 1);
                r.key("k.x", 13).u32(0);
                r
            },
            "metadata key \"k.x\" has unknown value type 13 at byte 35",
        ),
        (
            "unknown_array_type",
            {
                let mut r = Raw::new(3, 0, 1);
                r.key("k.arr", arr).u32(99).u64(0);
                r
            },
            "metadata key \"k.arr\" has unknown value type 99 at byte 41",
        ),
        (
            "duplicate_key",
            {
                let mut r = Raw::new(3, 0, 2);
                r.kv_u32("k.dup", 1).kv_u32("k.dup", 2);
                r
            },
            "duplicate metadata key \"k.dup\"",
        ),
        (
            "duplicate_tensor",
            {
                let mut r = Raw::new(3, 2, 0);
                r.tensor("t", &[4], F32, 0)
                    .tensor("t", &[4], F32, 32)
                    .data(32, 48);
                r
            },
            "duplicate tensor name \"t\"",
        ),
        (
            "five_dims",
            {
                let mut r = Raw::new(3, 1, 0);
                r.tensor("t5", &[1, 1, 1, 1, 1], F32, 0).data(32, 4);
                r
            },
            "tensor \"t5\": 5 dimensions (at most 4)",
        ),
        (
            "unknown_ggml_type",
            {
                let mut r = Raw::new(3, 1, 0);
                r.tensor("q", &[32], 4, 0).data(32, 64);
                r
            },
            "tensor \"q\": unknown ggml type id 4",
        ),
        (
            "not_whole_blocks",
            {
                let mut r = Raw::new(3, 1, 0);
                r.tensor("q4", &[31, 2], GgmlType::Q4_0 as u32, 0)
                    .data(32, 64);
                r
            },
            "tensor \"q4\": row length 31 is not a multiple of Q4_0's block size 32",
        ),
        (
            "wrong_offset",
            {
                let mut r = Raw::new(3, 2, 0);
                r.tensor("a", &[4], F32, 0)
                    .tensor("b", &[4], F32, 16)
                    .data(32, 64);
                r
            },
            "tensor \"b\": data offset 16, expected 32",
        ),
        (
            "data_beyond_eof",
            {
                let mut r = Raw::new(3, 1, 0);
                r.tensor("big", &[1024], F32, 0).data(32, 100);
                r
            },
            "tensor \"big\": data bytes 64..4160 lie beyond the end of the file (164 bytes)",
        ),
        (
            "huge_string_length",
            {
                let mut r = Raw::new(3, 0, 1);
                r.key("k.s", MetaType::String as u32).u64(1 << 60).u32(0);
                r
            },
            "truncated: metadata value of key \"k.s\" at byte 47 needs 1152921504606846976 bytes, the file has 4 left",
        ),
        (
            "huge_key_length",
            {
                let mut r = Raw::new(3, 0, 1);
                r.u64(u64::MAX).u64(0).u64(0);
                r
            },
            "truncated: metadata key #0 at byte 32 needs 18446744073709551615 bytes, the file has 16 left",
        ),
        (
            "huge_array_count",
            {
                let mut r = Raw::new(3, 0, 1);
                r.key("k.a", arr)
                    .u32(MetaType::U64 as u32)
                    .u64(1 << 61)
                    .u64(7);
                r
            },
            "key \"k.a\": array element count 2305843009213693952 at byte 43 cannot fit in the 8 bytes that follow",
        ),
        (
            "huge_key_count",
            Raw::new(3, 0, u64::MAX),
            "metadata key count 18446744073709551615 at byte 16 cannot fit in the 0 bytes that follow",
        ),
        (
            "huge_tensor_count",
            Raw::new(3, 1 << 40, 0),
            "tensor count 1099511627776 at byte 8 cannot fit in the 0 bytes that follow",
        ),
        (
            "alignment_0",
            {
                let mut r = Raw::new(3, 0, 1);
                r.kv_u32("general.alignment", 0);
                r
            },
            "general.alignment: 0 is not a power of two",
        ),
        (
            "alignment_3",
            {
                let mut r = Raw::new(3, 0, 1);
                r.kv_u32("general.alignment", 3);
                r
            },
            "general.alignment: 3 is not a power of two",
        ),
        (
            "alignment_wrong_type",
            {
                let mut r = Raw::new(3, 0, 1);
                r.key("general.alignment", MetaType::U64 as u32).u64(32);
                r
            },
            "general.alignment: type uint64, expected uint32",
        ),
        (
            "bool_2",
            {
                let mut r = Raw::new(3, 0, 1);
                r.key("k.b", MetaType::Bool as u32).u8(2);
                r
            },
            "metadata key \"k.b\": bool value 2 at byte 39 is neither 0 nor 1",
        ),
        (
            "bool_2_in_array",
            {
                let mut r = Raw::new(3, 0, 1);
                r.key("k.bs", arr)
                    .u32(MetaType::Bool as u32)
                    .u64(2)
                    .u8(1)
                    .u8(2);
                r
            },
            "metadata key \"k.bs\": bool value 2 at byte 53 is neither 0 nor 1",
        ),
        (
            "invalid_utf8_key",
            {
                let mut r = Raw::new(3, 0, 1);
                r.key(b"k.\xff\xfe", u8t).u8(0);
                r
            },
            "metadata key #0 at byte 24 is not valid UTF-8",
        ),
        (
            "invalid_utf8_value",
            {
                let mut r = Raw::new(3, 0, 1);
                r.key("k.s", MetaType::String as u32).str(b"\xc3(");
                r
            },
            "metadata value of key \"k.s\" at byte 39 is not valid UTF-8",
        ),
        (
            "invalid_utf8_tensor_name",
            {
                let mut r = Raw::new(3, 1, 0);
                r.tensor(b"\x80", &[1], F32, 0).data(32, 4);
                r
            },
            "name of tensor #0 at byte 24 is not valid UTF-8",
        ),
        (
            "long_tensor_name",
            {
                let mut r = Raw::new(3, 1, 0);
                r.tensor("n".repeat(64), &[1], F32, 0).data(32, 4);
                r
            },
            "tensor #0: name of 64 bytes is too long (ggml's limit is 63)",
        ),
        (
            "nested_too_deep",
            {
                let mut r = Raw::new(3, 0, 1);
                r.key("k.deep", arr);
                for _ in 0..8 {
                    r.u32(arr).u64(1);
                }
                r.u32(u8t).u64(1).u8(7);
                r
            },
            "metadata key \"k.deep\": arrays nested deeper than 8 levels",
        ),
        (
            "element_count_overflow",
            {
                let mut r = Raw::new(3, 1, 0);
                r.tensor("t", &[1 << 32, 1 << 32], F32, 0).data(32, 4);
                r
            },
            "tensor \"t\": bad shape [4294967296, 4294967296]: the element count overflows int64",
        ),
        (
            "dimension_overflow",
            {
                let mut r = Raw::new(3, 1, 0);
                r.tensor("t", &[1 << 63], GgmlType::I8 as u32, 0)
                    .data(32, 4);
                r
            },
            "tensor \"t\": bad shape [9223372036854775808]: a dimension exceeds int64",
        ),
        (
            "byte_size_overflow",
            {
                let mut r = Raw::new(3, 1, 0);
                r.tensor("t", &[1 << 62], F32, 0).data(32, 4);
                r
            },
            "tensor \"t\": bad shape [4611686018427387904]: the byte size overflows int64",
        ),
        (
            "truncated_tensor_info",
            {
                let mut r = Raw::new(3, 1, 0);
                r.str("t").u32(2).u64(4);
                r.0.extend_from_slice(&[0; 16]);
                r
            },
            "truncated: info of tensor \"t\" at byte 57 needs 8 bytes, the file has 4 left",
        ),
    ];
    for (name, raw, expected) in cases {
        let path = dir.path().join(format!("{name}.gguf"));
        std::fs::write(&path, &raw.0).unwrap();
        let o = phiq(&[&"info", &path]);
        let msg = assert_clean_failure(&o, &path, name);
        assert!(
            msg.contains(expected),
            "{name}: got {msg:?}, expected {expected:?}"
        );
        // The library says the same, naming the file.
        let lib = GgufFile::open(&path).err().unwrap().to_string();
        assert_eq!(lib, format!("{}: {msg}", path.display()), "{name}");
    }
}

#[test]
fn info_on_a_gguf_py_file_lists_every_tensor() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("py.gguf");
    let written: Value =
        serde_json::from_str(&run_py("gguf_interop.py", &[&"write", &path])).unwrap();
    let py_tensors = written["tensors"].as_array().unwrap();
    assert!(py_tensors.len() > 10);

    let o = phiq(&[&"info", &path]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(o.stderr.is_empty(), "{}", stderr(&o));
    let text = stdout(&o);
    assert!(text.contains("\narchitecture  phi2\n"), "{text}");
    for t in py_tensors {
        let name = t["name"].as_str().unwrap();
        let ty = t["type"].as_str().unwrap();
        let row = text
            .lines()
            .find(|l| l.split_whitespace().next() == Some(name))
            .unwrap_or_else(|| panic!("tensor {name} missing:\n{text}"));
        assert_eq!(row.split_whitespace().nth(1), Some(ty), "{row}");
    }

    let o = phiq(&[&"info", &"--json", &path]);
    assert!(o.status.success(), "{}", stderr(&o));
    let json: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(json["architecture"], "phi2");
    assert_eq!(json["file"], path.display().to_string());
    let tensors = json["tensors"].as_array().unwrap();
    assert_eq!(tensors.len(), py_tensors.len());
    for (ours, py) in tensors.iter().zip(py_tensors) {
        assert_eq!(ours["name"], py["name"]);
        assert_eq!(ours["type"], py["type"]);
        assert_eq!(ours["shape"], py["shape"], "{}", py["name"]);
    }
    assert_eq!(json["totals"]["tensors"], py_tensors.len());
    // Every key gguf-py wrote is listed with its value type.
    for key in written["metadata"].as_object().unwrap().keys() {
        assert!(json["metadata"][key]["type"].is_string(), "{key}");
    }
}

#[test]
fn info_on_a_missing_file_names_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("no such model.gguf");
    let o = phiq(&[&"info", &path]);
    let msg = assert_clean_failure(&o, &path, "missing file");
    assert!(msg.contains("No such file or directory"), "{msg}");
    // A directory is no GGUF file either.
    let o = phiq(&[&"info", &dir.path()]);
    assert_clean_failure(&o, dir.path(), "directory");
}

#[test]
fn help_succeeds() {
    let o = phiq(&[&"--help"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("info"), "{}", stdout(&o));
    let o = phiq(&[&"info", &"--help"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let text = stdout(&o);
    assert!(
        text.contains("FILE.gguf") && text.contains("--json"),
        "{text}"
    );
    // No file at all is a usage error, not a crash.
    let o = phiq(&[&"info"]);
    assert_no_crash(&o, "no argument");
    assert!(!o.status.success());
}
