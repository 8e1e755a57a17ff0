//! NumPy `.npy` files (format version 1.0) and directory trees of them.
//!
//! ```text
//! 6 bytes  magic "\x93NUMPY"
//! 2 bytes  version 1, 0
//! 2 bytes  header length H, little-endian u16
//! H bytes  ASCII Python dict literal, e.g.
//!          {'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }
//!          padded with spaces and ended by '\n' so that the data starts at
//!          a multiple of 64 bytes
//! rest     the elements, row-major (C order)
//! ```
//!
//! **bf16** has no NumPy type. Its tensors are written with descr `<u2`:
//! the raw 16-bit patterns, unchanged. `np.load(...).view(ml_dtypes.bfloat16)`
//! (or shifting into the high half of a `uint32` and viewing as `float32`)
//! recovers the values; [`export_npy_dir`] reports which tensors were
//! written this way.

use std::collections::HashSet;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Component, Path, PathBuf};

use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::snapshot::Snapshot;

const MAGIC: &[u8; 6] = b"\x93NUMPY";

/// The NumPy type string of a dtype; `None` for bf16, which NumPy lacks.
pub fn descr(dtype: DType) -> Option<&'static str> {
    Some(match dtype {
        DType::Bool => "|b1",
        DType::U8 => "|u1",
        DType::I8 => "|i1",
        DType::U16 => "<u2",
        DType::I16 => "<i2",
        DType::U32 => "<u4",
        DType::I32 => "<i4",
        DType::U64 => "<u8",
        DType::I64 => "<i8",
        DType::F16 => "<f2",
        DType::F32 => "<f4",
        DType::F64 => "<f8",
        DType::BF16 => return None,
    })
}

/// The complete `.npy` header (magic to newline) for an array of `dtype`
/// and `shape`; bf16 is described as `<u2` (see the module docs).
pub fn header(dtype: DType, shape: &[u64]) -> Vec<u8> {
    let shape_str = match shape {
        [] => "()".to_owned(),
        [d] => format!("({d},)"),
        dims => format!(
            "({})",
            dims.iter()
                .map(u64::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        ),
    };
    let dict = format!(
        "{{'descr': '{}', 'fortran_order': False, 'shape': {shape_str}, }}",
        descr(dtype).unwrap_or("<u2")
    );
    // magic(6) + version(2) + length(2) + dict + padding + '\n'
    let unpadded = 10 + dict.len() + 1;
    let total = unpadded.next_multiple_of(64);
    let hlen = total - 10;
    let mut out = Vec::with_capacity(total);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&[1, 0]);
    // A rank-16 shape of 20-digit dimensions stays far below u16::MAX.
    out.extend_from_slice(&(hlen as u16).to_le_bytes());
    out.extend_from_slice(dict.as_bytes());
    out.resize(total - 1, b' ');
    out.push(b'\n');
    out
}

/// Writes one `.npy` file: header, then `bytes` (row-major, little-endian).
pub fn write_npy<W: Write>(
    mut out: W,
    dtype: DType,
    shape: &[u64],
    bytes: &[u8],
) -> std::io::Result<()> {
    out.write_all(&header(dtype, shape))?;
    out.write_all(bytes)?;
    out.flush()
}

/// The relative path (`a/b/c.npy`) an entry named `name` is written to.
///
/// Every `/`-separated component is checked on its own, whatever validated
/// the name before: no empty, `.` or `..` component, no backslash, no
/// control character, no leading `/`. The result is made only of normal
/// components, so joining it to a directory can never leave that directory.
pub fn relative_path(name: &str) -> Result<PathBuf> {
    let refuse = |why: &str| {
        Err(Error::invalid(format!(
            "refusing to write {name:?} as a path: {why}"
        )))
    };
    if name.is_empty() {
        return refuse("empty name");
    }
    let mut path = PathBuf::new();
    for comp in name.split('/') {
        match comp {
            "" => return refuse("empty path component (leading, trailing or double '/')"),
            "." | ".." => return refuse("'.' or '..' path component"),
            _ if comp.contains('\\') => return refuse("backslash"),
            _ if comp.chars().any(char::is_control) => return refuse("control character"),
            _ => path.push(comp),
        }
    }
    let mut file = path.into_os_string();
    file.push(".npy");
    let path = PathBuf::from(file);
    if !path.components().all(|c| matches!(c, Component::Normal(_))) {
        return refuse("not a plain relative path");
    }
    Ok(path)
}

/// What [`export_npy_dir`] wrote.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NpyExport {
    /// Files written, relative to the output directory.
    pub files: Vec<PathBuf>,
    /// Payload bytes written (headers excluded).
    pub bytes: u64,
    /// Tensors of dtype bf16, written as raw `<u2` patterns.
    pub bf16_as_u16: Vec<String>,
}

/// Writes each of `tensors` — `(name, key)` pairs, `name` giving the path —
/// as `out/<name>.npy`.
///
/// Every path is checked by [`relative_path`] and for clashes (a file where
/// another entry needs a directory) before anything is written. `out` must
/// not exist or be an empty directory: everything below it is then created
/// by this call (`create_new`), so no pre-existing symlink can redirect a
/// write. `progress` is called with the payload bytes written so far.
pub fn export_npy_dir(
    snap: &Snapshot,
    tensors: &[(String, String)],
    out: &Path,
    progress: &mut dyn FnMut(u64),
) -> Result<NpyExport> {
    let mut plan = Vec::with_capacity(tensors.len());
    let mut files = HashSet::new();
    let mut dirs = HashSet::new();
    for (name, key) in tensors {
        let rel = relative_path(name)?;
        let t = snap.tensor(key)?;
        let mut parent = rel.parent();
        while let Some(p) = parent.filter(|p| !p.as_os_str().is_empty()) {
            dirs.insert(p.to_owned());
            parent = p.parent();
        }
        if !files.insert(rel.clone()) {
            return Err(Error::invalid(format!(
                "two entries would both be written to {}",
                rel.display()
            )));
        }
        plan.push((rel, t));
    }
    if let Some(clash) = files.iter().find(|f| dirs.contains(*f)) {
        return Err(Error::invalid(format!(
            "{} would have to be both a file and a directory",
            clash.display()
        )));
    }
    crate::db::refuse_inside_database(out)?;
    match std::fs::symlink_metadata(out) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::create_dir_all(out).map_err(|e| Error::io("mkdir", out, e))?;
        }
        Err(e) => return Err(Error::io("stat", out, e)),
        Ok(m) if m.is_dir() => {
            let mut rd = std::fs::read_dir(out).map_err(|e| Error::io("read_dir", out, e))?;
            if rd.next().is_some() {
                return Err(Error::invalid(format!(
                    "{} is not empty; export into a new or empty directory",
                    out.display()
                )));
            }
        }
        Ok(_) => {
            return Err(Error::invalid(format!(
                "{} exists and is not a directory",
                out.display()
            )))
        }
    }
    let mut dirs: Vec<_> = dirs.into_iter().collect();
    dirs.sort(); // parents before children
    for d in &dirs {
        let p = out.join(d);
        std::fs::create_dir(&p).map_err(|e| Error::io("mkdir", &p, e))?;
    }
    let mut report = NpyExport::default();
    for (rel, t) in plan {
        let p = out.join(&rel);
        let f = File::create_new(&p).map_err(|e| Error::io("create", &p, e))?;
        let bytes = t.bytes()?;
        write_npy(
            BufWriter::with_capacity(1 << 20, f),
            t.dtype(),
            t.shape(),
            bytes,
        )
        .map_err(|e| Error::io("write", &p, e))?;
        if t.dtype() == DType::BF16 {
            report.bf16_as_u16.push(t.key().to_owned());
        }
        report.bytes += bytes.len() as u64;
        report.files.push(rel);
        progress(report.bytes);
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_is_padded_and_parsable() {
        for shape in [vec![], vec![3], vec![2, 3], vec![u64::MAX; 16]] {
            let h = header(DType::F32, &shape);
            assert_eq!(h.len() % 64, 0);
            assert_eq!(&h[..8], b"\x93NUMPY\x01\x00");
            assert_eq!(u16::from_le_bytes([h[8], h[9]]) as usize, h.len() - 10);
            assert_eq!(*h.last().unwrap(), b'\n');
        }
        let h = String::from_utf8(header(DType::I64, &[2, 3])[10..].to_vec()).unwrap();
        assert_eq!(
            h.trim_end(),
            "{'descr': '<i8', 'fortran_order': False, 'shape': (2, 3), }"
        );
        let h = String::from_utf8(header(DType::U8, &[5])[10..].to_vec()).unwrap();
        assert!(h.contains("'shape': (5,)"), "{h}");
        let h = String::from_utf8(header(DType::Bool, &[])[10..].to_vec()).unwrap();
        assert!(
            h.contains("'descr': '|b1'") && h.contains("'shape': ()"),
            "{h}"
        );
    }

    #[test]
    fn paths_that_escape_are_refused() {
        for name in [
            "a/../../x",
            "../x",
            "..",
            ".",
            "a/./b",
            "/etc/passwd",
            "a//b",
            "a/",
            "",
            "a\\..\\b",
            "a/\0/b",
            "a/\n",
        ] {
            assert!(relative_path(name).is_err(), "{name:?} accepted");
        }
        assert_eq!(
            relative_path("policy/fc1.weight").unwrap(),
            PathBuf::from("policy/fc1.weight.npy")
        );
        assert_eq!(
            relative_path("..a/b..").unwrap(),
            PathBuf::from("..a/b...npy")
        );
    }
}
