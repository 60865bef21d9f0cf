//! The GGUF container, as llama.cpp reads and writes it (versions 2 and 3).
//!
//! [`GgufFile`] maps a file and validates all of it before handing out anything;
//! tensor data are zero-copy slices of the map. [`GgufWriter`] streams a file out,
//! one tensor at a time, into a temporary file that is renamed into place at the end.

mod error;
mod reader;
mod value;
mod writer;

pub use error::{GgufError, Result};
pub use reader::{GgufHeader, MAX_METADATA_VALUES, MAX_TENSORS, TensorInfo};
pub use value::{MetaArray, MetaType, MetaValue};
pub use writer::{GgufWriter, TensorSpec, file_size};

use std::fs::File;
use std::ops::Deref;
use std::path::{Path, PathBuf};

use memmap2::Mmap;

pub const GGUF_MAGIC: &[u8; 4] = b"GGUF";
/// The version phiq writes.
pub const GGUF_VERSION: u32 = 3;
pub const DEFAULT_ALIGNMENT: u64 = 32;
pub const KEY_ALIGNMENT: &str = "general.alignment";
/// ggml's `GGML_MAX_DIMS`.
pub const MAX_DIMS: usize = 4;
/// ggml's `GGML_MAX_NAME` is 64 including the terminating NUL.
pub const MAX_NAME_LEN: usize = 63;

/// A validated GGUF file held in a read-only memory map.
pub struct GgufFile {
    path: PathBuf,
    map: Mmap,
    header: GgufHeader,
    load: Load,
}

/// How a file's bytes come into memory.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Load {
    /// Memory-map the file: pages come in on demand and stay reclaimable.
    #[default]
    Map,
    /// Read the whole file into anonymous memory (`--no-mmap`): for file systems
    /// where mapping is slow or unavailable.
    Read,
}

impl GgufFile {
    /// Maps and validates `path`. Errors name the file and what is wrong where.
    pub fn open(path: impl AsRef<Path>) -> Result<GgufFile> {
        GgufFile::open_with(path, Load::Map)
    }

    /// Opens `path`, mapped or read into memory, and validates it.
    pub fn open_with(path: impl AsRef<Path>, load: Load) -> Result<GgufFile> {
        let path = path.as_ref().to_path_buf();
        let io = |error| GgufError::Io {
            path: path.clone(),
            error,
        };
        let file = File::open(&path).map_err(io)?;
        let map = match load {
            // SAFETY: the map is read-only and private to this process. Another process
            // truncating the file under us could still fault (SIGBUS): the same contract
            // llama.cpp and every mmap-based loader accept for model files.
            Load::Map => unsafe { Mmap::map(&file) }.map_err(io)?,
            Load::Read => read_into_anonymous_map(&file).map_err(io)?,
        };
        let header = GgufHeader::parse(&map).map_err(|e| GgufError::InFile {
            path: path.clone(),
            error: Box::new(e),
        })?;
        Ok(GgufFile {
            path,
            map,
            header,
            load,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether the file is mapped or was read into memory.
    pub fn load_mode(&self) -> Load {
        self.load
    }

    /// Locks the file's pages in memory (`--mlock`), so that the kernel never evicts
    /// weights under memory pressure. Fails when RLIMIT_MEMLOCK is too small.
    pub fn lock(&self) -> std::io::Result<()> {
        self.map.lock()
    }

    /// Tells the kernel this process is done with `info`'s bytes (a model that keeps
    /// a repacked copy of the tensor): a mapped file's pages leave the process's
    /// resident set and stay in the page cache. Nothing happens for a file read into
    /// memory (`Load::Read`), whose bytes exist nowhere else. Reading the tensor
    /// again still works: the pages come back from the file.
    pub fn release(&self, info: &TensorInfo) {
        if self.load != Load::Map || info.n_bytes == 0 {
            return;
        }
        #[cfg(unix)]
        // SAFETY: the map is private and read-only, so its pages never differ from the
        // file: MADV_DONTNEED only drops them, and a later read faults the same bytes
        // back in from the file. memmap2 widens the range to page bounds, which may
        // drop a neighbour's pages too, with the same harmless effect.
        let _ = unsafe {
            self.map.unchecked_advise_range(
                memmap2::UncheckedAdvice::DontNeed,
                info.file_offset as usize,
                info.n_bytes as usize,
            )
        };
    }

    /// Size of the file in bytes.
    pub fn file_len(&self) -> u64 {
        self.map.len() as u64
    }

    pub fn header(&self) -> &GgufHeader {
        &self.header
    }

    /// The bytes of a tensor of this file. In bounds by construction: `parse` checked
    /// every tensor's range against the map's length.
    pub fn tensor_data(&self, info: &TensorInfo) -> &[u8] {
        let start = info.file_offset as usize;
        &self.map[start..start + info.n_bytes as usize]
    }

    /// The tensor named `name` and its bytes, or an error naming it.
    pub fn tensor(&self, name: &str) -> Result<(&TensorInfo, &[u8])> {
        let info = self
            .header
            .tensor(name)
            .ok_or_else(|| GgufError::MissingTensor(name.to_string()))?;
        Ok((info, self.tensor_data(info)))
    }
}

/// The whole file in anonymous memory, sealed read-only like a map of it.
fn read_into_anonymous_map(file: &File) -> std::io::Result<Mmap> {
    use std::io::Read;
    // A file beyond the address space (on a 32-bit system) must not be read cut short.
    let len = usize::try_from(file.metadata()?.len()).map_err(|_| {
        std::io::Error::new(
            std::io::ErrorKind::FileTooLarge,
            "the file is larger than this system's address space",
        )
    })?;
    if len == 0 {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "the file is empty",
        ));
    }
    let mut buf = memmap2::MmapMut::map_anon(len)?;
    // Transparent huge pages, where the kernel offers them on request: weights are
    // streamed once per token, and 4 KiB pages cost a TLB miss every 4 KiB.
    #[cfg(target_os = "linux")]
    let _ = buf.advise(memmap2::Advice::HugePage);
    let mut reader = file;
    reader.read_exact(&mut buf)?;
    let map = buf.make_read_only()?;
    Ok(map)
}

impl Deref for GgufFile {
    type Target = GgufHeader;
    fn deref(&self) -> &GgufHeader {
        &self.header
    }
}
