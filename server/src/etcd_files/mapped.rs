//! A file mapped into memory for reading.

use std::path::Path;

use crate::error::EtcdFileError;

/// A snapshot file mapped into memory: multi-gigabyte files are read page by page, never
/// copied whole.
pub struct MappedFile {
    pub path: String,
    map: Option<memmap2::Mmap>,
}

impl MappedFile {
    pub fn open(path: &Path) -> Result<Self, EtcdFileError> {
        let name = path.display().to_string();
        let io = |source| EtcdFileError::Io { path: name.clone(), source };
        let file = std::fs::File::open(path).map_err(io)?;
        let meta = file.metadata().map_err(io)?;
        if meta.is_dir() {
            return Err(io(std::io::ErrorKind::IsADirectory.into()));
        }
        let len = meta.len();
        // An empty file cannot be mapped; it is simply an invalid snapshot.
        let map = if len == 0 {
            None
        } else {
            // SAFETY: the map is read-only and private to this process; the restore reads a
            // file nobody writes to while it runs (as etcdutl's bbolt does with its own mmap).
            Some(unsafe { memmap2::Mmap::map(&file) }.map_err(io)?)
        };
        Ok(Self { path: name, map })
    }

    pub fn bytes(&self) -> &[u8] {
        self.map.as_deref().unwrap_or(&[])
    }
}
