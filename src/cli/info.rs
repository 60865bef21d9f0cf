//! `phiq info`: what is inside a GGUF file.

use std::collections::BTreeMap;
use std::io::{self, Write};
use std::path::PathBuf;

use anyhow::Result;
use clap::Args;
use phiq::gguf::{GgufFile, MetaValue, TensorInfo};
use phiq::quant::GgmlType;
use serde_json::{Value, json};

#[derive(Args)]
pub struct InfoArgs {
    /// The GGUF file to describe.
    #[arg(value_name = "FILE.gguf", required_unless_present = "cpu")]
    file: Option<PathBuf>,
    /// Print the CPU features found and the kernel path chosen.
    #[arg(long)]
    cpu: bool,
    /// Print one JSON object instead of tables.
    #[arg(long)]
    json: bool,
    /// Print long metadata arrays (the vocabulary, merges) whole instead of summarised.
    #[arg(long)]
    full: bool,
}

/// Widest column the text tables pad to.
const MAX_COLUMN: usize = 64;

/// Text from the file as printed in a table: control characters escaped, so that a
/// file cannot drive the terminal, and cut at 200 characters.
fn printable(s: &str) -> String {
    let escaped: String = s
        .chars()
        .flat_map(|c| {
            if c.is_control() {
                c.escape_default().collect::<Vec<_>>()
            } else {
                vec![c]
            }
        })
        .collect();
    if escaped.chars().count() > 200 {
        format!("{}...", escaped.chars().take(197).collect::<String>())
    } else {
        escaped
    }
}

/// Arrays longer than this are summarised unless `--full`.
const ARRAY_ITEMS_SHOWN: usize = 16;

pub fn run(args: &InfoArgs) -> Result<()> {
    if args.cpu {
        print_cpu(args.json)?;
    }
    let Some(path) = &args.file else {
        return Ok(());
    };
    let file = GgufFile::open(path)?;
    let totals = Totals::of(&file.tensors);
    let mut out = io::BufWriter::new(io::stdout().lock());
    if args.json {
        let max_items = (!args.full).then_some(ARRAY_ITEMS_SHOWN);
        let json = serde_json::to_string_pretty(&to_json(&file, &totals, max_items))?;
        writeln!(out, "{json}")?;
    } else {
        print_text(&mut out, &file, &totals, args.full)?;
    }
    out.flush()?;
    Ok(())
}

/// CPU features, the kernel paths they allow, and the one chosen (or forced with
/// `PHIQ_KERNEL`).
fn print_cpu(as_json: bool) -> Result<()> {
    use phiq::kernels::Kernels;
    let features = Kernels::cpu_features();
    let available: Vec<&str> = Kernels::available().iter().map(|i| i.name()).collect();
    let chosen = phiq::kernels::kernels().map(|k| k.isa.name());
    let threads = super::common::default_threads();
    if as_json {
        let f: serde_json::Map<String, Value> = features
            .iter()
            .map(|(n, on)| (n.to_string(), json!(on)))
            .collect();
        let (name, error) = match &chosen {
            Ok(c) => (Some(*c), None),
            Err(e) => (None, Some(e.to_string())),
        };
        println!(
            "{}",
            json!({ "arch": std::env::consts::ARCH, "features": f, "paths": available, "chosen": name, "error": error, "threads": threads })
        );
    } else {
        println!(
            "cpu           {} ({} threads by default)",
            std::env::consts::ARCH,
            threads
        );
        let shown: Vec<String> = features
            .iter()
            .map(|(n, on)| format!("{n}{}", if *on { "" } else { " (no)" }))
            .collect();
        println!("features      {}", shown.join(", "));
        println!("kernel paths  {}", available.join(", "));
        match chosen {
            Ok(c) => println!(
                "chosen        {c}{}",
                if std::env::var_os("PHIQ_KERNEL").is_some() {
                    " (PHIQ_KERNEL)"
                } else {
                    ""
                }
            ),
            Err(e) => println!("chosen        none: {e}"),
        }
    }
    Ok(())
}

#[derive(Default)]
struct TypeTotal {
    tensors: usize,
    parameters: u64,
    bytes: u64,
}

struct Totals {
    parameters: u64,
    bytes: u64,
    by_type: BTreeMap<GgmlType, TypeTotal>,
}

impl Totals {
    fn of(tensors: &[TensorInfo]) -> Totals {
        let mut by_type: BTreeMap<GgmlType, TypeTotal> = BTreeMap::new();
        for t in tensors {
            let e = by_type.entry(t.ty).or_default();
            e.tensors += 1;
            e.parameters += t.n_elements();
            e.bytes += t.n_bytes;
        }
        Totals {
            parameters: by_type.values().map(|t| t.parameters).sum(),
            bytes: by_type.values().map(|t| t.bytes).sum(),
            by_type,
        }
    }

    fn bits_per_weight(&self) -> f64 {
        if self.parameters == 0 {
            0.0
        } else {
            self.bytes as f64 * 8.0 / self.parameters as f64
        }
    }
}

/// The architecture's own keys (`phi2.*`), without the prefix.
fn hyperparameters(file: &GgufFile) -> Vec<(&str, &MetaValue)> {
    let Some(arch) = file.architecture() else {
        return Vec::new();
    };
    let prefix = format!("{arch}.");
    file.metadata
        .iter()
        .filter_map(|(k, v)| k.strip_prefix(&prefix).map(|k| (k, v)))
        .collect()
}

fn to_json(file: &GgufFile, totals: &Totals, max_items: Option<usize>) -> Value {
    let metadata: serde_json::Map<String, Value> = file
        .metadata
        .iter()
        .map(|(k, v)| {
            let entry = json!({ "type": type_name(v), "value": v.to_json(max_items) });
            (k.clone(), entry)
        })
        .collect();
    let hyper: serde_json::Map<String, Value> = hyperparameters(file)
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_json(max_items)))
        .collect();
    let tensors: Vec<Value> = file
        .tensors
        .iter()
        .map(|t| {
            json!({
                "name": t.name,
                "type": t.ty.name(),
                "shape": t.shape,
                "elements": t.n_elements(),
                "bytes": t.n_bytes,
                "offset": t.offset,
            })
        })
        .collect();
    let by_type: serde_json::Map<String, Value> = totals
        .by_type
        .iter()
        .map(|(ty, t)| {
            let v = json!({ "tensors": t.tensors, "parameters": t.parameters, "bytes": t.bytes });
            (ty.name().to_string(), v)
        })
        .collect();
    json!({
        "file": file.path().display().to_string(),
        "file_bytes": file.file_len(),
        "version": file.version,
        "alignment": file.alignment,
        "data_offset": file.data_offset,
        "architecture": file.architecture(),
        "hyperparameters": hyper,
        "metadata": metadata,
        "tensors": tensors,
        "totals": {
            "tensors": file.tensors.len(),
            "parameters": totals.parameters,
            "bytes": totals.bytes,
            "bits_per_weight": totals.bits_per_weight(),
            "by_type": by_type,
        },
    })
}

/// `array[string]` rather than just `array`: the element type is what a reader needs.
fn type_name(v: &MetaValue) -> String {
    match v {
        MetaValue::Array(a) => format!("array[{}]", a.elem_type),
        v => v.meta_type().to_string(),
    }
}

fn print_text(
    out: &mut impl Write,
    file: &GgufFile,
    totals: &Totals,
    full: bool,
) -> io::Result<()> {
    writeln!(
        out,
        "file          {} ({})",
        file.path().display(),
        human_bytes(file.file_len())
    )?;
    writeln!(
        out,
        "format        GGUF v{}, alignment {}, {} metadata keys, {} tensors",
        file.version,
        file.alignment,
        file.metadata.len(),
        file.tensors.len()
    )?;
    let arch = file.architecture().unwrap_or("(none)");
    writeln!(out, "architecture  {}", printable(arch))?;
    if let Some(name) = file.get("general.name").and_then(MetaValue::as_str) {
        writeln!(out, "name          {}", printable(name))?;
    }

    let hyper = hyperparameters(file);
    if !hyper.is_empty() {
        writeln!(out, "\nhyperparameters")?;
        for (k, v) in hyper {
            writeln!(out, "  {:<36} {v}", printable(k))?;
        }
    }

    writeln!(out, "\nmetadata")?;
    // Aligned to the longest key, but a hostile file's huge key must not make every
    // line that wide.
    let key_width = file
        .metadata
        .iter()
        .map(|(k, _)| k.len())
        .max()
        .unwrap_or(0)
        .min(MAX_COLUMN);
    for (k, v) in &file.metadata {
        let shown = if full { full_text(v) } else { v.to_string() };
        writeln!(
            out,
            "  {:<key_width$}  {:<14} {shown}",
            printable(k),
            type_name(v)
        )?;
    }

    print_tensors(out, &file.tensors)?;

    writeln!(out, "\ntotals")?;
    for (ty, t) in &totals.by_type {
        writeln!(
            out,
            "  {:<8} {:>5} tensors {:>16} parameters {:>12}",
            ty.name(),
            t.tensors,
            group_digits(t.parameters),
            human_bytes(t.bytes)
        )?;
    }
    writeln!(
        out,
        "  all      {:>5} tensors {:>16} parameters {:>12}, {:.2} bits per weight",
        file.tensors.len(),
        group_digits(totals.parameters),
        human_bytes(totals.bytes),
        totals.bits_per_weight()
    )?;
    Ok(())
}

fn full_text(v: &MetaValue) -> String {
    match v {
        MetaValue::Array(a) => {
            let items: Vec<String> = a.values.iter().map(full_text).collect();
            format!("[{}]", items.join(", "))
        }
        v => v.to_string(),
    }
}

fn print_tensors(out: &mut impl Write, tensors: &[TensorInfo]) -> io::Result<()> {
    writeln!(out, "\ntensors")?;
    let name_width = tensors
        .iter()
        .map(|t| t.name.len())
        .max()
        .unwrap_or(4)
        .clamp(4, MAX_COLUMN);
    writeln!(
        out,
        "  {:<name_width$}  {:<8} {:<22} {:>14}",
        "name", "type", "shape", "bytes"
    )?;
    for t in tensors {
        let shape: Vec<String> = t.shape.iter().map(u64::to_string).collect();
        writeln!(
            out,
            "  {:<name_width$}  {:<8} {:<22} {:>14}",
            printable(&t.name),
            t.ty.name(),
            shape.join(" x "),
            group_digits(t.n_bytes)
        )?;
    }
    Ok(())
}

fn group_digits(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::with_capacity(s.len() + s.len() / 3);
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KB", "MB", "GB", "TB"];
    let mut v = n as f64;
    let mut unit = 0;
    while v >= 1000.0 && unit + 1 < UNITS.len() {
        v /= 1000.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{v:.2} {}", UNITS[unit])
    }
}
