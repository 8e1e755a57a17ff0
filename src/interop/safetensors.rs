//! safetensors files: write a snapshot's tensors to one, and commit the
//! tensors of one as a step.
//!
//! The format (as specified by the `safetensors` project):
//!
//! ```text
//! 8 bytes   N, little-endian u64: length of the header
//! N bytes   UTF-8 JSON object:
//!             "__metadata__": {string: string}            (optional)
//!             NAME: {"dtype": "F32", "shape": [2, 3],
//!                    "data_offsets": [BEGIN, END]}        (one per tensor)
//! rest      the data; offsets are relative to its start
//! ```
//!
//! Tensors are row-major and little-endian, like ours, so every one of
//! ckptdb's dtypes has a safetensors twin and bytes are copied unchanged.
//!
//! **Reading** trusts nothing: the header length is bounded before anything
//! is allocated, duplicate names are refused (a JSON object may repeat a
//! key; most parsers keep the last silently), every dtype, shape and offset
//! pair is checked, and the data offsets must tile the data exactly — sorted,
//! without overlap, gap or trailing bytes — as the specification requires.
//! Names must be valid keys (no `..`, no empty segment) after the prefix is
//! applied. All of this happens before the database is touched, so a
//! malformed file leaves the database unchanged.
//!
//! **Writing** orders tensors by decreasing element size (then by name) and
//! pads the header with spaces to a multiple of 8 bytes, so every tensor
//! starts at an offset aligned to its element size, which lets readers view
//! the data in place.

use std::collections::{BTreeMap, HashSet};
use std::fs::File;
use std::io::{BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use serde::de::{Deserializer, MapAccess, Visitor};
use serde_json::Value;

use crate::db::Db;
use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::format::MAX_RANK;
use crate::key::validate_key;
use crate::snapshot::{Snapshot, StepInfo};

/// Longest header accepted (the reference implementation's limit).
pub const MAX_HEADER_LEN: u64 = 100_000_000;

/// Metadata key holding the step number in files ckptdb writes.
pub const META_STEP: &str = "step";
/// Metadata key holding the step's metrics, as a JSON object, in files
/// ckptdb writes. [`Db::import_safetensors`] restores them.
pub const META_METRICS: &str = "metrics";

/// The safetensors name of a dtype.
pub fn dtype_name(dtype: DType) -> &'static str {
    match dtype {
        DType::Bool => "BOOL",
        DType::U8 => "U8",
        DType::I8 => "I8",
        DType::U16 => "U16",
        DType::I16 => "I16",
        DType::U32 => "U32",
        DType::I32 => "I32",
        DType::U64 => "U64",
        DType::I64 => "I64",
        DType::F16 => "F16",
        DType::BF16 => "BF16",
        DType::F32 => "F32",
        DType::F64 => "F64",
    }
}

/// The dtype of a safetensors dtype name; `None` for names ckptdb has no
/// dtype for (the 8-, 6- and 4-bit floats, complex numbers).
pub fn dtype_from_name(name: &str) -> Option<DType> {
    DType::ALL.into_iter().find(|&d| dtype_name(d) == name)
}

/// One tensor as a safetensors header describes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TensorInfo {
    /// The tensor's name in the file.
    pub name: String,
    /// Element type.
    pub dtype: DType,
    /// Shape (empty for a scalar).
    pub shape: Vec<u64>,
    /// Start and end of the tensor's bytes, relative to the data section.
    pub data_offsets: (u64, u64),
}

/// A validated safetensors header.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Header {
    /// The tensors, in the order of their data.
    pub tensors: Vec<TensorInfo>,
    /// The `__metadata__` map (empty when the file has none).
    pub metadata: BTreeMap<String, String>,
    /// Offset of the data section in the file.
    pub data_start: u64,
}

impl Header {
    /// The keys the tensors get under `prefix`, each checked by
    /// [`validate_key`].
    pub fn keys(&self, prefix: &str) -> Result<Vec<String>> {
        self.tensors
            .iter()
            .map(|t| {
                let key = format!("{prefix}{}", t.name);
                validate_key(&key).map(|()| key)
            })
            .collect()
    }
}

fn bad(path: &Path, offset: u64, why: impl std::fmt::Display) -> Error {
    Error::InvalidFile {
        path: path.to_owned(),
        format: "safetensors",
        offset,
        reason: why.to_string(),
    }
}

/// The header's JSON object as a list, refusing repeated names.
struct Entries(Vec<(String, Value)>);

impl<'de> serde::Deserialize<'de> for Entries {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Entries, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Entries;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(
                self,
                mut map: A,
            ) -> std::result::Result<Entries, A::Error> {
                let mut seen = HashSet::new();
                let mut out = Vec::new();
                while let Some((k, v)) = map.next_entry::<String, Value>()? {
                    if !seen.insert(k.clone()) {
                        return Err(serde::de::Error::custom(format!(
                            "the name {k:?} appears twice"
                        )));
                    }
                    out.push((k, v));
                }
                Ok(Entries(out))
            }
        }
        d.deserialize_map(V)
    }
}

fn as_u64_list(v: &Value) -> Option<Vec<u64>> {
    v.as_array()?.iter().map(Value::as_u64).collect()
}

/// Parses and validates the header JSON `json` of a file whose data
/// section is `data_len` bytes long. `path` names the file in errors.
pub fn parse_header(json: &[u8], data_len: u64, path: &Path) -> Result<Header> {
    let at = 8u64;
    let text = std::str::from_utf8(json).map_err(|_| bad(path, at, "header is not UTF-8"))?;
    let Entries(entries) =
        serde_json::from_str(text).map_err(|e| bad(path, at, format!("header JSON: {e}")))?;
    let mut metadata = BTreeMap::new();
    let mut tensors = Vec::with_capacity(entries.len());
    for (name, v) in entries {
        if name == "__metadata__" {
            let obj = v
                .as_object()
                .ok_or_else(|| bad(path, at, "__metadata__ is not an object"))?;
            for (k, val) in obj {
                let s = val.as_str().ok_or_else(|| {
                    bad(
                        path,
                        at,
                        format!("__metadata__ value of {k:?} is not a string"),
                    )
                })?;
                metadata.insert(k.clone(), s.to_owned());
            }
            continue;
        }
        let what = |why: &str| bad(path, at, format!("tensor {name:?}: {why}"));
        let obj = v
            .as_object()
            .ok_or_else(|| what("entry is not an object"))?;
        let dtype_str = obj
            .get("dtype")
            .and_then(Value::as_str)
            .ok_or_else(|| what("no dtype string"))?;
        let dtype = dtype_from_name(dtype_str)
            .ok_or_else(|| what(&format!("dtype {dtype_str} is not supported")))?;
        let shape = obj
            .get("shape")
            .and_then(as_u64_list)
            .ok_or_else(|| what("shape is not a list of non-negative integers"))?;
        if shape.len() > MAX_RANK {
            return Err(what(&format!(
                "rank {} over the limit {MAX_RANK}",
                shape.len()
            )));
        }
        let offsets = obj
            .get("data_offsets")
            .and_then(as_u64_list)
            .filter(|o| o.len() == 2)
            .ok_or_else(|| what("data_offsets is not a pair of non-negative integers"))?;
        let (begin, end) = (offsets[0], offsets[1]);
        if begin > end || end > data_len {
            return Err(what(&format!(
                "data_offsets [{begin}, {end}] outside the {data_len}-byte data section"
            )));
        }
        let need = super::tensor_bytes(dtype, &shape)
            .ok_or_else(|| what("shape has too many elements"))?;
        if end - begin != need {
            return Err(what(&format!(
                "shape {shape:?} of {dtype_str} needs {need} bytes, data_offsets give {}",
                end - begin
            )));
        }
        tensors.push(TensorInfo {
            name,
            dtype,
            shape,
            data_offsets: (begin, end),
        });
    }
    tensors.sort_by_key(|t| t.data_offsets);
    let mut pos = 0;
    for t in &tensors {
        let (begin, end) = t.data_offsets;
        if begin < pos {
            return Err(bad(
                path,
                at,
                format!("tensor {:?} overlaps another", t.name),
            ));
        }
        if begin > pos {
            return Err(bad(
                path,
                at,
                format!("a gap in the data before tensor {:?}", t.name),
            ));
        }
        pos = end;
    }
    if pos != data_len {
        return Err(bad(
            path,
            at,
            format!("the data section holds {data_len} bytes, tensors cover {pos}"),
        ));
    }
    Ok(Header {
        tensors,
        metadata,
        data_start: 8 + json.len() as u64,
    })
}

fn read_exact_at(file: &mut File, path: &Path, buf: &mut [u8], what: &str) -> Result<()> {
    file.read_exact(buf).map_err(|e| {
        if e.kind() == std::io::ErrorKind::UnexpectedEof {
            bad(path, 0, format!("file ends inside the {what}"))
        } else {
            Error::io("read", path, e)
        }
    })
}

/// Opens a safetensors file and reads and validates its header. The file is
/// left positioned at the start of the data.
pub fn read_header(path: &Path) -> Result<(File, Header)> {
    let mut file = File::open(path).map_err(|e| Error::io("open", path, e))?;
    let file_len = file
        .metadata()
        .map_err(|e| Error::io("stat", path, e))?
        .len();
    let mut len = [0u8; 8];
    read_exact_at(&mut file, path, &mut len, "header length")?;
    let n = u64::from_le_bytes(len);
    if n > MAX_HEADER_LEN {
        return Err(bad(path, 0, format!("header length {n} over the limit")));
    }
    if n > file_len.saturating_sub(8) {
        return Err(bad(
            path,
            0,
            format!("header length {n} runs past the end of the {file_len}-byte file"),
        ));
    }
    let mut json = vec![0u8; n as usize];
    read_exact_at(&mut file, path, &mut json, "header")?;
    let header = parse_header(&json, file_len.saturating_sub(8 + n), path)?;
    Ok((file, header))
}

/// Validates a whole safetensors file held in memory and returns its
/// header; tensor `t`'s bytes are
/// `bytes[h.data_start + t.data_offsets.0 .. h.data_start + t.data_offsets.1]`.
pub fn parse_bytes(bytes: &[u8]) -> Result<Header> {
    let path = Path::new("<memory>");
    let len = bytes
        .get(..8)
        .ok_or_else(|| bad(path, 0, "file ends inside the header length"))?;
    let n = u64::from_le_bytes(len.try_into().unwrap_or([0; 8]));
    let rest = bytes.len() as u64 - 8;
    if n > MAX_HEADER_LEN || n > rest {
        return Err(bad(
            path,
            0,
            format!(
                "header length {n} runs past the end of the {}-byte file",
                bytes.len()
            ),
        ));
    }
    parse_header(&bytes[8..8 + n as usize], rest - n, path)
}

/// How [`Db::import_safetensors`] names and builds the step.
#[derive(Clone, Debug, Default)]
pub struct ImportOptions {
    prefix: String,
    from_latest: bool,
}

impl ImportOptions {
    /// Tensor names as keys, into an empty step.
    pub fn new() -> ImportOptions {
        ImportOptions::default()
    }

    /// Prepends `prefix` to every tensor name to make its key (e.g.
    /// `"policy/"`).
    pub fn prefix(mut self, prefix: impl Into<String>) -> ImportOptions {
        self.prefix = prefix.into();
        self
    }

    /// Starts the step from the newest live step's entries instead of
    /// empty, so the import replaces only the keys the file holds.
    pub fn from_latest(mut self, yes: bool) -> ImportOptions {
        self.from_latest = yes;
        self
    }
}

impl Db {
    /// Commits every tensor of the safetensors file at `path` as step
    /// `step`, in one transaction. The file is validated completely (see
    /// the module documentation) before the transaction starts, so a
    /// malformed file leaves the database unchanged. Metrics stored by
    /// [`write_safetensors`] in `__metadata__` are restored.
    ///
    /// `progress` is called with the number of data bytes read so far.
    pub fn import_safetensors(
        &self,
        path: &Path,
        step: u64,
        options: &ImportOptions,
        progress: &mut dyn FnMut(u64),
    ) -> Result<StepInfo> {
        let (mut file, header) = read_header(path)?;
        let keys = header.keys(&options.prefix)?;
        // Metrics as `write_safetensors` writes them. A `metrics` entry that
        // is not that shape is refused rather than skipped: importing a
        // step without the metrics its file claims would silently change
        // what best-by-metric retention keeps.
        let metrics: BTreeMap<String, f64> = match header.metadata.get(META_METRICS) {
            None => BTreeMap::new(),
            Some(m) => serde_json::from_str(m).map_err(|e| {
                bad(
                    path,
                    8,
                    format!(
                        "its __metadata__ \"{META_METRICS}\" is not a JSON object of \
                         metric names to finite numbers ({e})"
                    ),
                )
            })?,
        };
        for (name, &value) in &metrics {
            crate::key::validate_metric(name, value)?;
        }
        let mut tx = if options.from_latest {
            self.begin_step_from_latest(step)?
        } else {
            self.begin_step(step)?
        };
        let mut buf = Vec::new();
        let mut done = 0;
        for (t, key) in header.tensors.iter().zip(&keys) {
            let len = t.data_offsets.1 - t.data_offsets.0;
            buf.clear();
            buf.try_reserve_exact(len as usize).map_err(|_| {
                Error::invalid(format!("tensor {:?} does not fit in memory", t.name))
            })?;
            let got = (&mut file)
                .take(len)
                .read_to_end(&mut buf)
                .map_err(|e| Error::io("read", path, e))?;
            if got as u64 != len {
                return Err(bad(
                    path,
                    header.data_start + t.data_offsets.0,
                    "file shrank while being read",
                ));
            }
            tx.put_tensor_raw(key, t.dtype, &t.shape, &buf)
                .map_err(|e| match e {
                    Error::InvalidArgument(why) => {
                        bad(path, header.data_start + t.data_offsets.0, why)
                    }
                    e => e,
                })?;
            done += len;
            progress(done);
        }
        for (name, value) in &metrics {
            tx.put_metric(name, *value)?;
        }
        tx.commit()
    }
}

/// Writes tensors of `snap` as a safetensors file to `out`.
///
/// `tensors` lists `(name in the file, key in the snapshot)`; every key must
/// be a tensor. `metadata` becomes `__metadata__` (omitted when empty).
/// Payloads are read with their crc32 checked. `progress` is called with the
/// number of data bytes written so far. Returns the file's size.
pub fn write_safetensors<W: Write>(
    snap: &Snapshot,
    tensors: &[(String, String)],
    metadata: &BTreeMap<String, String>,
    mut out: W,
    progress: &mut dyn FnMut(u64),
) -> Result<u64> {
    let mut items = Vec::with_capacity(tensors.len());
    let mut names = HashSet::new();
    for (name, key) in tensors {
        if !names.insert(name.as_str()) || name == "__metadata__" || name.is_empty() {
            return Err(Error::invalid(format!(
                "tensor name {name:?} is empty, reserved or used twice"
            )));
        }
        items.push((name, snap.tensor(key)?));
    }
    // Larger elements first keeps every tensor aligned to its element size.
    items.sort_by(|a, b| {
        b.1.dtype()
            .size()
            .cmp(&a.1.dtype().size())
            .then_with(|| a.0.cmp(b.0))
    });
    let mut header = serde_json::Map::new();
    if !metadata.is_empty() {
        let meta = metadata
            .iter()
            .map(|(k, v)| (k.clone(), Value::String(v.clone())))
            .collect();
        header.insert("__metadata__".into(), Value::Object(meta));
    }
    let mut pos = 0u64;
    for (name, t) in &items {
        let end = pos + t.byte_len();
        header.insert(
            (*name).clone(),
            serde_json::json!({
                "dtype": dtype_name(t.dtype()),
                "shape": t.shape(),
                "data_offsets": [pos, end],
            }),
        );
        pos = end;
    }
    let mut json = serde_json::to_vec(&Value::Object(header))
        .map_err(|e| Error::invalid(format!("safetensors header: {e}")))?;
    json.resize(json.len().next_multiple_of(8), b' ');
    let io = |e| Error::io("write", PathBuf::from("<safetensors output>"), e);
    out.write_all(&(json.len() as u64).to_le_bytes())
        .map_err(io)?;
    out.write_all(&json).map_err(io)?;
    let mut done = 0;
    for (_, t) in &items {
        out.write_all(t.bytes()?).map_err(io)?;
        done += t.byte_len();
        progress(done);
    }
    out.flush().map_err(io)?;
    Ok(8 + json.len() as u64 + pos)
}

/// The `__metadata__` ckptdb writes for a snapshot: the step and its
/// metrics (as a JSON object), plus `"format": "pt"`, which some loaders of
/// PyTorch weights require.
pub fn snapshot_metadata(snap: &Snapshot) -> BTreeMap<String, String> {
    let mut m = BTreeMap::new();
    m.insert("format".to_owned(), "pt".to_owned());
    m.insert(META_STEP.to_owned(), snap.step().to_string());
    m.insert(
        META_METRICS.to_owned(),
        serde_json::to_string(snap.metrics()).unwrap_or_else(|_| "{}".into()),
    );
    m
}

/// Writes `tensors` of `snap` (see [`write_safetensors`]) to the file
/// `path`, through a temporary file renamed into place, so a failed export
/// leaves no partial file under the final name. Refuses to replace an
/// existing file unless `overwrite`.
pub fn export_safetensors(
    snap: &Snapshot,
    tensors: &[(String, String)],
    path: &Path,
    overwrite: bool,
    progress: &mut dyn FnMut(u64),
) -> Result<u64> {
    if !overwrite && std::fs::symlink_metadata(path).is_ok() {
        return Err(Error::invalid(format!(
            "{} already exists (use --force to replace it)",
            path.display()
        )));
    }
    let name = path
        .file_name()
        .ok_or_else(|| Error::invalid(format!("{} is not a file name", path.display())))?;
    crate::db::refuse_inside_database(path)?;
    // Like the npy-dir export, create the directories leading to OUT.
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(|e| Error::io("mkdir", parent, e))?;
    }
    let mut tmp_name = name.to_owned();
    tmp_name.push(format!(".partial-{}", std::process::id()));
    let tmp = path.with_file_name(tmp_name);
    // Name the file the caller gave in errors, not the temporary one.
    let file = File::create_new(&tmp).map_err(|e| Error::io("create", path, e))?;
    let result = (|| {
        let mut w = BufWriter::with_capacity(1 << 20, file);
        let n = write_safetensors(snap, tensors, &snapshot_metadata(snap), &mut w, progress)
            .map_err(|e| match e {
                Error::Io { op, source, .. } => Error::Io {
                    op,
                    path: tmp.clone(),
                    source,
                },
                e => e,
            })?;
        let file = w
            .into_inner()
            .map_err(|e| Error::io("write", &tmp, e.into_error()))?;
        file.sync_all().map_err(|e| Error::io("fsync", &tmp, e))?;
        std::fs::rename(&tmp, path).map_err(|e| Error::io("rename", path, e))?;
        Ok(n)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(json: &str, data_len: u64) -> Result<Header> {
        parse_header(json.as_bytes(), data_len, Path::new("t.safetensors"))
    }

    #[test]
    fn accepts_a_valid_header() {
        let h = header(
            r#"{"__metadata__":{"step":"7"},
                "b":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},
                "a":{"dtype":"BOOL","shape":[],"data_offsets":[8,9]}}"#,
            9,
        )
        .unwrap();
        assert_eq!(h.tensors.len(), 2);
        assert_eq!(h.tensors[0].name, "b");
        assert_eq!(h.tensors[1].dtype, DType::Bool);
        assert_eq!(h.metadata["step"], "7");
    }

    #[test]
    fn rejects_malformed_headers() {
        let cases = [
            (
                r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"a":{"dtype":"F32","shape":[2],"data_offsets":[8,16]}}"#,
                16,
                "twice",
            ),
            (
                r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}}"#,
                12,
                "overlaps",
            ),
            (
                r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}"#,
                16,
                "cover",
            ),
            (
                r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[8,16]}}"#,
                16,
                "gap",
            ),
            (
                r#"{"a":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}}"#,
                8,
                "needs 12",
            ),
            (
                r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,80]}}"#,
                8,
                "outside",
            ),
            (
                r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[8,0]}}"#,
                8,
                "outside",
            ),
            (
                r#"{"a":{"dtype":"F8_E4M3","shape":[2],"data_offsets":[0,2]}}"#,
                2,
                "not supported",
            ),
            (
                r#"{"a":{"dtype":"F32","shape":[-1],"data_offsets":[0,4]}}"#,
                4,
                "shape",
            ),
            (
                r#"{"a":{"dtype":"U8","shape":[4294967296,4294967296,4294967296],"data_offsets":[0,1]}}"#,
                1,
                "too many",
            ),
            (r#"{"__metadata__":{"step":7}}"#, 0, "not a string"),
            (r#"[1,2]"#, 0, "JSON"),
            (r#"{"a":"#, 0, "JSON"),
        ];
        for (json, len, want) in cases {
            let err = header(json, len).unwrap_err().to_string();
            assert!(err.contains(want), "{json}: {err}");
        }
    }

    fn valid_file() -> Vec<u8> {
        let json = br#"{"__metadata__":{"k":"v"},"a":{"dtype":"F32","shape":[2,2],"data_offsets":[0,16]},"b":{"dtype":"I8","shape":[3],"data_offsets":[16,19]}}"#;
        let mut f = (json.len() as u64).to_le_bytes().to_vec();
        f.extend_from_slice(json);
        f.extend((0..19).map(|i| i as u8));
        f
    }

    proptest::proptest! {
        /// Damaged files are refused or parse into headers whose tensors
        /// tile the data exactly; nothing panics.
        #[test]
        fn damaged_files_never_panic(flips in proptest::collection::vec((0usize..200, 0u8..=255), 1..4), cut in 0usize..220) {
            let mut f = valid_file();
            for (at, x) in flips {
                let i = at % f.len();
                f[i] ^= x;
            }
            f.truncate(cut.max(1).min(f.len()));
            if let Ok(h) = parse_bytes(&f) {
                let mut pos = 0;
                for t in &h.tensors {
                    proptest::prop_assert_eq!(t.data_offsets.0, pos);
                    pos = t.data_offsets.1;
                    proptest::prop_assert_eq!(pos - t.data_offsets.0, super::super::tensor_bytes(t.dtype, &t.shape).unwrap());
                }
                proptest::prop_assert_eq!(h.data_start + pos, f.len() as u64);
            }
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..300)) {
            let _ = parse_bytes(&bytes);
        }
    }

    #[test]
    fn the_valid_file_parses() {
        let h = parse_bytes(&valid_file()).unwrap();
        assert_eq!(
            h.tensors
                .iter()
                .map(|t| t.name.as_str())
                .collect::<Vec<_>>(),
            ["a", "b"]
        );
        assert_eq!(h.metadata["k"], "v");
    }

    #[test]
    fn dtype_names_roundtrip() {
        for d in DType::ALL {
            assert_eq!(dtype_from_name(dtype_name(d)), Some(d));
        }
        assert_eq!(dtype_from_name("C64"), None);
    }
}
