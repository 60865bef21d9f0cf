//! llama.cpp's two importance-matrix files, read and written.
//!
//! GGUF (llama-imatrix's default since mid 2025): metadata `general.type = "imatrix"`,
//! `imatrix.datasets` (strings), `imatrix.chunk_count`, `imatrix.chunk_size` (u32);
//! per matrix, in name order, an F32 tensor `<name>.in_sum2` (Σ x² per column) and an
//! F32 tensor `<name>.counts` (tokens seen).
//!
//! Legacy `.dat` (little-endian): i32 entry count; per entry i32 name length, the name,
//! i32 `ncall` (chunks), i32 value count, the f32 values `(Σ x² / count) · ncall`; then,
//! optionally, i32 chunk count and i32 length + the dataset's name.

use std::path::Path;

use super::{Entry, Format, Imatrix, ImatrixError};
use crate::gguf::{GgufFile, GgufWriter, MetaValue, TensorSpec};
use crate::quant::GgmlType;

const SUMS: &str = ".in_sum2";
const COUNTS: &str = ".counts";

/// Whether `path` starts with GGUF's magic (the format a loader should read it in).
pub fn is_gguf(path: &Path) -> Result<bool, ImatrixError> {
    use std::io::Read;
    let mut magic = [0u8; 4];
    let mut f = std::fs::File::open(path).map_err(|error| io(path, error))?;
    let n = f.read(&mut magic).map_err(|error| io(path, error))?;
    Ok(n == 4 && &magic == b"GGUF")
}

/// Reads either format, checking every entry: sums and counts paired, F32, whole
/// rows per count, finite values (llama-quantize refuses non-finite ones too).
pub fn read(path: &Path) -> Result<Imatrix, ImatrixError> {
    let m = if is_gguf(path)? {
        read_gguf(path)?
    } else {
        read_dat(path)?
    };
    if m.entries.is_empty() {
        return Err(invalid(path, "no importance matrix entries".into()));
    }
    for (name, e) in &m.entries {
        let bad = |what: String| ImatrixError::BadEntry {
            path: path.to_path_buf(),
            entry: name.clone(),
            what,
        };
        if e.counts.is_empty() || e.sums.is_empty() || e.sums.len() % e.counts.len() != 0 {
            return Err(bad(format!(
                "{} sums do not split into {} count(s)",
                e.sums.len(),
                e.counts.len()
            )));
        }
        if let Some(i) = e.sums.iter().position(|v| !v.is_finite() || *v < 0.0) {
            return Err(bad(format!("value {} at column {i}", e.sums[i])));
        }
        if let Some(c) = e.counts.iter().find(|c| !c.is_finite() || **c < 0.0) {
            return Err(bad(format!("count {c}")));
        }
    }
    Ok(m)
}

fn read_gguf(path: &Path) -> Result<Imatrix, ImatrixError> {
    let g = GgufFile::open(path).map_err(|e| ImatrixError::Gguf {
        path: path.to_path_buf(),
        error: Box::new(e),
    })?;
    let h = g.header();
    let uint = |key: &str| h.get_uint(key).ok().map(|v| v as u32);
    let (Some(chunk_count), Some(chunk_size)) =
        (uint("imatrix.chunk_count"), uint("imatrix.chunk_size"))
    else {
        // llama-quantize refuses such a file ("missing imatrix metadata").
        return Err(invalid(
            path,
            "a GGUF file without imatrix.chunk_count and imatrix.chunk_size: not an importance matrix".into(),
        ));
    };
    let datasets = match h.get("imatrix.datasets") {
        Some(MetaValue::Array(a)) => a
            .values
            .iter()
            .filter_map(|v| match v {
                MetaValue::String(s) => Some(s.clone()),
                _ => None,
            })
            .collect(),
        _ => {
            return Err(invalid(
                path,
                "imatrix.datasets is missing or not an array of strings".into(),
            ));
        }
    };
    let mut entries = std::collections::BTreeMap::new();
    for t in &h.tensors {
        let (name, is_sums) = if let Some(n) = t.name.strip_suffix(SUMS) {
            (n, true)
        } else if let Some(n) = t.name.strip_suffix(COUNTS) {
            (n, false)
        } else {
            continue;
        };
        if t.ty != GgmlType::F32 {
            return Err(ImatrixError::BadEntry {
                path: path.to_path_buf(),
                entry: name.to_string(),
                what: format!("tensor {} is {}, must be F32", t.name, t.ty),
            });
        }
        let values: Vec<f32> = f32s(g.tensor_data(t));
        let e = entries.entry(name.to_string()).or_insert(Entry {
            sums: Vec::new(),
            counts: Vec::new(),
        });
        if is_sums {
            e.sums = values;
        } else {
            e.counts = values;
        }
    }
    if let Some((name, e)) = entries
        .iter()
        .find(|(_, e)| e.sums.is_empty() || e.counts.is_empty())
    {
        let missing = if e.sums.is_empty() { SUMS } else { COUNTS };
        return Err(ImatrixError::BadEntry {
            path: path.to_path_buf(),
            entry: name.clone(),
            what: format!("no {name}{missing} tensor beside the other"),
        });
    }
    Ok(Imatrix {
        format: Format::Gguf,
        entries,
        datasets,
        chunk_count,
        chunk_size,
    })
}

/// A little-endian cursor that names what it was reading when the file ends.
struct Cursor<'a> {
    path: &'a Path,
    buf: &'a [u8],
    at: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8], ImatrixError> {
        if self.buf.len() - self.at < n {
            return Err(invalid(
                self.path,
                format!(
                    "truncated: {what} at byte {} needs {n} bytes, {} left",
                    self.at,
                    self.buf.len() - self.at
                ),
            ));
        }
        let s = &self.buf[self.at..self.at + n];
        self.at += n;
        Ok(s)
    }

    fn i32(&mut self, what: &str) -> Result<i32, ImatrixError> {
        Ok(i32::from_le_bytes(self.take(4, what)?.try_into().unwrap()))
    }

    /// A count that must be in `min..` and whose `elem`-byte items fit in the file.
    fn count(&mut self, what: &str, min: i32, elem: usize) -> Result<usize, ImatrixError> {
        let at = self.at;
        let n = self.i32(what)?;
        let left = self.buf.len() - self.at;
        if n < min || n as usize * elem > left {
            return Err(invalid(
                self.path,
                format!("{what} {n} at byte {at} is impossible here ({left} bytes follow)"),
            ));
        }
        Ok(n as usize)
    }
}

fn read_dat(path: &Path) -> Result<Imatrix, ImatrixError> {
    let buf = std::fs::read(path).map_err(|error| io(path, error))?;
    let mut c = Cursor {
        path,
        buf: &buf,
        at: 0,
    };
    let n = c.count("entry count", 1, 12)?;
    let mut entries = std::collections::BTreeMap::new();
    for i in 0..n {
        let len = c.count(&format!("entry {i}: name length"), 1, 1)?;
        let name = std::str::from_utf8(c.take(len, "name")?)
            .map_err(|_| invalid(path, format!("entry {i}: the name is not UTF-8")))?
            .to_string();
        let ncall = c.i32(&format!("{name}: ncall"))?;
        let nval = c.count(&format!("{name}: value count"), 1, 4)?;
        let sums = f32s(c.take(nval * 4, "values")?);
        let counts = vec![ncall as f32];
        if entries
            .insert(name.clone(), Entry { sums, counts })
            .is_some()
        {
            return Err(invalid(path, format!("entry {name:?} appears twice")));
        }
    }
    let (mut chunk_count, mut datasets) = (0, Vec::new());
    // The trailer (chunks, dataset name) is optional, as in llama.cpp's reader.
    if c.at < buf.len() {
        chunk_count = c.i32("chunk count")?.max(0) as u32;
        if c.at < buf.len() {
            let len = c.count("dataset name length", 0, 1)?;
            let s = c.take(len, "dataset name")?;
            datasets.push(String::from_utf8_lossy(s).into_owned());
        }
    }
    Ok(Imatrix {
        format: Format::Dat,
        entries,
        datasets,
        chunk_count,
        chunk_size: 0,
    })
}

/// Writes `m` (collected sums and counts) as llama-imatrix's GGUF, through the
/// temporary-file-then-rename writer.
pub fn write_gguf(m: &Imatrix, path: &Path) -> Result<(), ImatrixError> {
    if m.format != Format::Gguf {
        return Err(invalid(
            path,
            "a legacy (.dat) matrix holds scaled means, not sums: write it as .dat".into(),
        ));
    }
    let gguf = |error| ImatrixError::Gguf {
        path: path.to_path_buf(),
        error: Box::new(error),
    };
    let metadata = vec![
        (
            "general.type".to_string(),
            MetaValue::String("imatrix".into()),
        ),
        (
            "imatrix.datasets".to_string(),
            MetaValue::string_array(m.datasets.iter().cloned()),
        ),
        (
            "imatrix.chunk_count".to_string(),
            MetaValue::U32(m.chunk_count),
        ),
        (
            "imatrix.chunk_size".to_string(),
            MetaValue::U32(m.chunk_size),
        ),
    ];
    let mut specs = Vec::new();
    for (name, e) in &m.entries {
        specs.push(TensorSpec::new(
            format!("{name}{SUMS}"),
            GgmlType::F32,
            &[e.sums.len() as u64],
        ));
        specs.push(TensorSpec::new(
            format!("{name}{COUNTS}"),
            GgmlType::F32,
            &[e.counts.len() as u64],
        ));
    }
    let mut w = GgufWriter::create(path, &metadata, specs).map_err(gguf)?;
    for (name, e) in &m.entries {
        w.write_tensor(&format!("{name}{SUMS}"), bytemuck::cast_slice(&e.sums))
            .map_err(gguf)?;
        w.write_tensor(&format!("{name}{COUNTS}"), bytemuck::cast_slice(&e.counts))
            .map_err(gguf)?;
    }
    w.finish().map_err(gguf)?;
    Ok(())
}

/// Writes `m` as llama-imatrix's legacy `.dat`: from collected sums (values
/// `(Σ x² / count) · ncall`, `ncall` the chunks rounded up, a column of no tokens
/// stored as 1) or a legacy matrix as read. Written beside `path`, then renamed.
pub fn write_dat(m: &Imatrix, path: &Path) -> Result<(), ImatrixError> {
    // llama-imatrix leaves out entries that saw no token at all.
    let stored: Vec<(&String, &Entry)> = m
        .entries
        .iter()
        .filter(|(_, e)| m.format == Format::Dat || e.counts.iter().any(|&c| c > 0.0))
        .collect();
    let mut b = Vec::new();
    b.extend_from_slice(&(stored.len() as i32).to_le_bytes());
    for (name, e) in stored {
        b.extend_from_slice(&(name.len() as i32).to_le_bytes());
        b.extend_from_slice(name.as_bytes());
        let (ncall, values) = match m.format {
            Format::Dat => (e.counts[0] as i32, e.sums.clone()),
            Format::Gguf => {
                let cs = m.chunk_size.max(1) as i64;
                let max = e.counts.iter().fold(0f32, |a, &c| a.max(c)) as i64;
                let ncall = ((max + cs - 1) / cs) as i32;
                let per = e.sums.len() / e.counts.len();
                let values = e
                    .sums
                    .iter()
                    .enumerate()
                    .map(|(i, &v)| {
                        let c = e.counts[i / per];
                        let (v, c) = if c == 0.0 { (1.0, 1.0) } else { (v, c) };
                        (v / c) * ncall as f32
                    })
                    .collect();
                (ncall, values)
            }
        };
        b.extend_from_slice(&ncall.to_le_bytes());
        b.extend_from_slice(&(values.len() as i32).to_le_bytes());
        b.extend_from_slice(bytemuck::cast_slice(&values));
    }
    b.extend_from_slice(&(m.chunk_count as i32).to_le_bytes());
    let dataset = m.datasets.last().map_or("", String::as_str);
    b.extend_from_slice(&(dataset.len() as i32).to_le_bytes());
    b.extend_from_slice(dataset.as_bytes());
    let tmp = path.with_extension("dat.partial");
    std::fs::write(&tmp, &b).map_err(|error| io(&tmp, error))?;
    std::fs::rename(&tmp, path).map_err(|error| io(path, error))
}

fn f32s(b: &[u8]) -> Vec<f32> {
    b.chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect()
}

fn io(path: &Path, error: std::io::Error) -> ImatrixError {
    ImatrixError::Io {
        path: path.to_path_buf(),
        error,
    }
}

fn invalid(path: &Path, what: String) -> ImatrixError {
    ImatrixError::Invalid {
        path: path.to_path_buf(),
        what,
    }
}
