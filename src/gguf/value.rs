//! GGUF metadata values, kept with their exact on-disk type so that a file read and
//! written again is the same file.

use std::fmt;

/// On-disk metadata value type ids (`enum gguf_type`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u32)]
pub enum MetaType {
    U8 = 0,
    I8 = 1,
    U16 = 2,
    I16 = 3,
    U32 = 4,
    I32 = 5,
    F32 = 6,
    Bool = 7,
    String = 8,
    Array = 9,
    U64 = 10,
    I64 = 11,
    F64 = 12,
}

impl MetaType {
    pub fn from_id(id: u32) -> Option<MetaType> {
        use MetaType::*;
        Some(match id {
            0 => U8,
            1 => I8,
            2 => U16,
            3 => I16,
            4 => U32,
            5 => I32,
            6 => F32,
            7 => Bool,
            8 => String,
            9 => Array,
            10 => U64,
            11 => I64,
            12 => F64,
            _ => return None,
        })
    }

    /// Bytes of a value of this type; `None` for the variable-length string and array.
    pub fn fixed_size(self) -> Option<usize> {
        use MetaType::*;
        match self {
            U8 | I8 | Bool => Some(1),
            U16 | I16 => Some(2),
            U32 | I32 | F32 => Some(4),
            U64 | I64 | F64 => Some(8),
            String | Array => None,
        }
    }

    /// The smallest encoding of one value: what a count must be checked against
    /// before anything is allocated for it.
    pub fn min_size(self) -> usize {
        match self {
            MetaType::String => 8,
            MetaType::Array => 12,
            t => t.fixed_size().unwrap_or(1),
        }
    }

    /// gguf-py's lower-case name of the type.
    pub fn name(self) -> &'static str {
        use MetaType::*;
        match self {
            U8 => "uint8",
            I8 => "int8",
            U16 => "uint16",
            I16 => "int16",
            U32 => "uint32",
            I32 => "int32",
            F32 => "float32",
            Bool => "bool",
            String => "string",
            Array => "array",
            U64 => "uint64",
            I64 => "int64",
            F64 => "float64",
        }
    }
}

impl fmt::Display for MetaType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A metadata value.
#[derive(Clone, Debug, PartialEq)]
pub enum MetaValue {
    U8(u8),
    I8(i8),
    U16(u16),
    I16(i16),
    U32(u32),
    I32(i32),
    F32(f32),
    Bool(bool),
    String(String),
    Array(MetaArray),
    U64(u64),
    I64(i64),
    F64(f64),
}

/// An array keeps its element type even when empty, so an empty array round-trips.
#[derive(Clone, Debug, PartialEq)]
pub struct MetaArray {
    pub elem_type: MetaType,
    pub values: Vec<MetaValue>,
}

impl MetaArray {
    /// An array of `elem_type`; every value must have that type (the writer checks).
    pub fn new(elem_type: MetaType, values: Vec<MetaValue>) -> MetaArray {
        MetaArray { elem_type, values }
    }

    pub fn len(&self) -> usize {
        self.values.len()
    }

    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }
}

impl MetaValue {
    pub fn meta_type(&self) -> MetaType {
        use MetaValue as V;
        match self {
            V::U8(_) => MetaType::U8,
            V::I8(_) => MetaType::I8,
            V::U16(_) => MetaType::U16,
            V::I16(_) => MetaType::I16,
            V::U32(_) => MetaType::U32,
            V::I32(_) => MetaType::I32,
            V::F32(_) => MetaType::F32,
            V::Bool(_) => MetaType::Bool,
            V::String(_) => MetaType::String,
            V::Array(_) => MetaType::Array,
            V::U64(_) => MetaType::U64,
            V::I64(_) => MetaType::I64,
            V::F64(_) => MetaType::F64,
        }
    }

    /// Any integer type holding a non-negative value, widened. Hyperparameters are
    /// u32 in llama.cpp's files but other writers use other integer widths.
    pub fn as_u64(&self) -> Option<u64> {
        use MetaValue as V;
        match *self {
            V::U8(v) => Some(v.into()),
            V::U16(v) => Some(v.into()),
            V::U32(v) => Some(v.into()),
            V::U64(v) => Some(v),
            V::I8(v) => u64::try_from(v).ok(),
            V::I16(v) => u64::try_from(v).ok(),
            V::I32(v) => u64::try_from(v).ok(),
            V::I64(v) => u64::try_from(v).ok(),
            _ => None,
        }
    }

    /// Any integer type, widened to i64 (u64 values beyond i64 give `None`).
    pub fn as_i64(&self) -> Option<i64> {
        use MetaValue as V;
        match *self {
            V::I8(v) => Some(v.into()),
            V::I16(v) => Some(v.into()),
            V::I32(v) => Some(v.into()),
            V::I64(v) => Some(v),
            _ => self.as_u64().and_then(|v| i64::try_from(v).ok()),
        }
    }

    /// A float of either width.
    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            MetaValue::F32(v) => Some(v.into()),
            MetaValue::F64(v) => Some(v),
            _ => None,
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            MetaValue::String(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_bool(&self) -> Option<bool> {
        match *self {
            MetaValue::Bool(b) => Some(b),
            _ => None,
        }
    }

    pub fn as_array(&self) -> Option<&MetaArray> {
        match self {
            MetaValue::Array(a) => Some(a),
            _ => None,
        }
    }

    /// The whole value as JSON; arrays longer than `max_items` are cut to their first
    /// items and their length (`None`: never cut).
    pub fn to_json(&self, max_items: Option<usize>) -> serde_json::Value {
        use MetaValue as V;
        use serde_json::{Value, json};
        match self {
            V::U8(v) => json!(v),
            V::I8(v) => json!(v),
            V::U16(v) => json!(v),
            V::I16(v) => json!(v),
            V::U32(v) => json!(v),
            V::I32(v) => json!(v),
            V::U64(v) => json!(v),
            V::I64(v) => json!(v),
            V::F32(v) => float_json(f64::from(*v)),
            V::F64(v) => float_json(*v),
            V::Bool(v) => json!(v),
            V::String(s) => json!(s),
            V::Array(a) => {
                let keep = max_items.map_or(a.len(), |m| m.min(a.len()));
                let items: Vec<Value> = a.values[..keep]
                    .iter()
                    .map(|v| v.to_json(max_items))
                    .collect();
                if keep == a.len() {
                    Value::Array(items)
                } else {
                    json!({ "elem_type": a.elem_type.name(), "len": a.len(), "head": items })
                }
            }
        }
    }
}

/// JSON has no NaN or infinity: those become strings rather than a silent `null`.
fn float_json(v: f64) -> serde_json::Value {
    serde_json::Number::from_f64(v)
        .map(serde_json::Value::Number)
        .unwrap_or_else(|| serde_json::Value::String(v.to_string()))
}

/// A short human rendering: scalars in full, strings quoted, long arrays summarised.
impl fmt::Display for MetaValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use MetaValue as V;
        const SHOWN: usize = 8;
        match self {
            V::U8(v) => write!(f, "{v}"),
            V::I8(v) => write!(f, "{v}"),
            V::U16(v) => write!(f, "{v}"),
            V::I16(v) => write!(f, "{v}"),
            V::U32(v) => write!(f, "{v}"),
            V::I32(v) => write!(f, "{v}"),
            V::U64(v) => write!(f, "{v}"),
            V::I64(v) => write!(f, "{v}"),
            V::F32(v) => write!(f, "{v}"),
            V::F64(v) => write!(f, "{v}"),
            V::Bool(v) => write!(f, "{v}"),
            V::String(s) if s.chars().count() > 120 => {
                let head: String = s.chars().take(117).collect();
                write!(f, "{head:?}... ({} bytes)", s.len())
            }
            V::String(s) => write!(f, "{s:?}"),
            V::Array(a) => {
                write!(f, "[{} x {}]", a.len(), a.elem_type)?;
                if !a.is_empty() {
                    f.write_str(" ")?;
                    for (i, v) in a.values.iter().take(SHOWN).enumerate() {
                        if i > 0 {
                            f.write_str(", ")?;
                        }
                        write!(f, "{v}")?;
                    }
                    if a.len() > SHOWN {
                        f.write_str(", ...")?;
                    }
                }
                Ok(())
            }
        }
    }
}
