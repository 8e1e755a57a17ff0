//! Replay table schemas, the rows callers push, and the table options.
//!
//! A row is stored packed: the fields' little-endian bytes one after the
//! other in schema order, without padding. Rows are only ever copied byte by
//! byte (into a page, out into a batch), so a field needs no alignment
//! inside the row; typed access happens on the aligned batch buffers.

use std::fmt;

use ndarray::{ArrayBase, Data, Dimension};
use serde::{Deserialize, Serialize};

use crate::dtype::{DType, Element};
use crate::error::{Error, Result};
use crate::format::MAX_RANK;
use crate::key::validate_name;

/// Most fields a schema may have.
pub const MAX_FIELDS: usize = 64;
/// Largest row, in bytes.
pub const MAX_ROW_BYTES: usize = 64 << 20;
/// Largest page, in bytes (a page is one log entry and one map range).
pub const MAX_PAGE_BYTES: u64 = 1 << 30;
/// Largest capacity, in transitions.
pub const MAX_CAPACITY: u64 = 1 << 32;

/// One field of a replay table: a name, an element type and a shape
/// (`[]` for a scalar).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FieldSpec {
    /// The field's name, unique within the schema.
    pub name: String,
    /// Element type.
    pub dtype: DType,
    /// Shape of one transition's value.
    pub shape: Vec<u64>,
}

impl FieldSpec {
    /// A field named `name` holding `dtype` elements of shape `shape`.
    pub fn new(name: impl Into<String>, dtype: DType, shape: &[u64]) -> FieldSpec {
        FieldSpec {
            name: name.into(),
            dtype,
            shape: shape.to_vec(),
        }
    }

    fn elements(&self) -> Option<u64> {
        self.shape.iter().try_fold(1u64, |a, &d| a.checked_mul(d))
    }
}

impl fmt::Display for FieldSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}[", self.name, self.dtype)?;
        for (i, d) in self.shape.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{d}")?;
        }
        f.write_str("]")
    }
}

/// The typed schema of a replay table: its fields, in row order.
///
/// ```
/// use ckptdb::replay::Schema;
/// let s = Schema::parse("obs: f32[4], action: i64[], reward: f32[], done: bool[]").unwrap();
/// assert_eq!(s.row_size(), 16 + 8 + 4 + 1);
/// assert_eq!(s.to_string(), "obs: f32[4], action: i64[], reward: f32[], done: bool[]");
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Schema {
    fields: Vec<FieldSpec>,
    /// Byte offset of each field in a row.
    offsets: Vec<usize>,
    /// Byte size of each field in a row.
    sizes: Vec<usize>,
    row_size: usize,
}

impl Schema {
    /// A schema of `fields`, in row order. Names must be unique and valid
    /// (1 to 256 bytes, no control characters); a row must hold at least
    /// one byte and at most [`MAX_ROW_BYTES`].
    pub fn new(fields: impl IntoIterator<Item = FieldSpec>) -> Result<Schema> {
        let fields: Vec<FieldSpec> = fields.into_iter().collect();
        if fields.is_empty() || fields.len() > MAX_FIELDS {
            return Err(Error::invalid(format!(
                "a replay schema needs 1 to {MAX_FIELDS} fields, got {}",
                fields.len()
            )));
        }
        let mut offsets = Vec::with_capacity(fields.len());
        let mut sizes = Vec::with_capacity(fields.len());
        let mut row = 0usize;
        for (i, f) in fields.iter().enumerate() {
            validate_name("field", &f.name)?;
            if fields[..i].iter().any(|g| g.name == f.name) {
                return Err(Error::invalid(format!("field {:?} appears twice", f.name)));
            }
            if f.shape.len() > MAX_RANK {
                return Err(Error::invalid(format!(
                    "field {:?}: rank {} over the limit {MAX_RANK}",
                    f.name,
                    f.shape.len()
                )));
            }
            let size = f
                .elements()
                .and_then(|n| n.checked_mul(f.dtype.size() as u64))
                .and_then(|n| usize::try_from(n).ok())
                .filter(|&n| n <= MAX_ROW_BYTES)
                .ok_or_else(|| Error::invalid(format!("field {:?} is too large", f.name)))?;
            offsets.push(row);
            sizes.push(size);
            row += size;
        }
        if row == 0 || row > MAX_ROW_BYTES {
            return Err(Error::invalid(format!(
                "a replay row must hold 1 to {MAX_ROW_BYTES} bytes, this schema's holds {row}"
            )));
        }
        Ok(Schema {
            fields,
            offsets,
            sizes,
            row_size: row,
        })
    }

    /// Parses `name: dtype[d0, d1, …]` fields separated by commas or
    /// newlines, e.g. `obs: f32[4], action: i64[]` (what `Display` prints).
    pub fn parse(text: &str) -> Result<Schema> {
        let bad = |why: String| Error::invalid(format!("replay schema {text:?}: {why}"));
        let mut fields = Vec::new();
        let mut rest = text.trim();
        while !rest.is_empty() {
            let colon = rest
                .find(':')
                .ok_or_else(|| bad("a field needs `name: dtype[shape]`".into()))?;
            let name = rest[..colon].trim();
            let after = rest[colon + 1..].trim_start();
            let open = after
                .find('[')
                .ok_or_else(|| bad(format!("field {name:?} has no `[shape]`")))?;
            let close = after
                .find(']')
                .filter(|&c| c > open)
                .ok_or_else(|| bad(format!("field {name:?} has no closing `]`")))?;
            let dtype_name = after[..open].trim();
            let dtype = DType::from_name(dtype_name)
                .ok_or_else(|| bad(format!("unknown dtype {dtype_name:?}")))?;
            let dims = after[open + 1..close].trim();
            let shape = if dims.is_empty() {
                Vec::new()
            } else {
                dims.split(',')
                    .map(|d| {
                        d.trim()
                            .parse::<u64>()
                            .map_err(|_| bad(format!("bad dimension {d:?} in field {name:?}")))
                    })
                    .collect::<Result<Vec<u64>>>()?
            };
            fields.push(FieldSpec::new(name, dtype, &shape));
            let tail = after[close + 1..].trim_start_matches([' ', '\t', '\r']);
            rest = match tail.strip_prefix([',', '\n']) {
                Some(r) => r.trim_start(),
                None if tail.is_empty() => tail,
                None => return Err(bad("fields must be separated by `,`".into())),
            };
        }
        Schema::new(fields)
    }

    /// The fields, in row order.
    pub fn fields(&self) -> &[FieldSpec] {
        &self.fields
    }

    /// Bytes of one stored row.
    pub fn row_size(&self) -> usize {
        self.row_size
    }

    /// Position of the field named `name`.
    pub fn index_of(&self, name: &str) -> Option<usize> {
        self.fields.iter().position(|f| f.name == name)
    }

    pub(crate) fn offset(&self, i: usize) -> usize {
        self.offsets[i]
    }

    pub(crate) fn size(&self, i: usize) -> usize {
        self.sizes[i]
    }
}

impl fmt::Display for Schema {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, field) in self.fields.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{field}")?;
        }
        Ok(())
    }
}

/// How a replay table is sized and sampled.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ReplayOptions {
    pub(crate) capacity: u64,
    pub(crate) page_size: u64,
    pub(crate) alpha: Option<f64>,
    /// See [`ReplayOptions::write_batch`]. Not stored: it is how this
    /// process writes, not what the table is.
    write_batch: usize,
}

/// The default of [`ReplayOptions::write_batch`].
pub const DEFAULT_WRITE_BATCH: usize = 2 << 20;

/// The largest [`ReplayOptions::write_batch`].
pub const MAX_WRITE_BATCH: usize = 256 << 20;

impl ReplayOptions {
    /// A uniform table of `capacity` transitions in pages of `page_size`.
    pub fn new(capacity: u64, page_size: u64) -> ReplayOptions {
        ReplayOptions {
            capacity,
            page_size,
            alpha: None,
            write_batch: DEFAULT_WRITE_BATCH,
        }
    }

    /// Bytes of full pages a writable table gathers before it hands them
    /// to the log together, default [`DEFAULT_WRITE_BATCH`] (2 MiB).
    ///
    /// Full pages wait in memory until a batch of this many bytes is
    /// complete; a background thread then writes the batch to the log while
    /// the table fills the next one (see [`ReplayTable`]). Each hand-over
    /// costs two thread wake-ups, so larger batches push faster, up to a
    /// few MiB; the table holds up to about three batches of page buffers
    /// on the heap. A commit that records the table writes the pages still
    /// waiting, so the batch size never changes what a snapshot holds.
    /// Not stored in the database.
    ///
    /// [`ReplayTable`]: crate::replay::ReplayTable
    pub fn write_batch(mut self, bytes: usize) -> ReplayOptions {
        self.write_batch = bytes;
        self
    }

    /// The bytes set by [`ReplayOptions::write_batch`].
    pub fn write_batch_bytes(&self) -> usize {
        self.write_batch
    }

    /// Keeps priorities, sampled with probability `p^alpha / Σ p^alpha`.
    pub fn prioritized(mut self, alpha: f64) -> ReplayOptions {
        self.alpha = Some(alpha);
        self
    }

    /// Transitions the ring holds; the oldest is overwritten beyond it.
    pub fn capacity(&self) -> u64 {
        self.capacity
    }

    /// Transitions per page (one log entry). The page being filled is the
    /// only part of the table held in memory.
    pub fn page_size(&self) -> u64 {
        self.page_size
    }

    /// `Some(α)` for a prioritized table.
    pub fn alpha(&self) -> Option<f64> {
        self.alpha
    }

    pub(crate) fn validate(&self, schema: &Schema) -> Result<()> {
        if self.capacity == 0 || self.capacity > MAX_CAPACITY {
            return Err(Error::invalid(format!(
                "replay capacity must be 1 to {MAX_CAPACITY}, got {}",
                self.capacity
            )));
        }
        if self.page_size == 0 || self.page_size > self.capacity {
            return Err(Error::invalid(format!(
                "replay page size must be 1 to the capacity {}, got {}",
                self.capacity, self.page_size
            )));
        }
        if self.write_batch > MAX_WRITE_BATCH {
            return Err(Error::invalid(format!(
                "a replay write batch must be at most {MAX_WRITE_BATCH} bytes, got {}",
                self.write_batch
            )));
        }
        let page_bytes = self.page_size.saturating_mul(schema.row_size() as u64);
        if page_bytes > MAX_PAGE_BYTES {
            return Err(Error::invalid(format!(
                "a replay page of {} rows of {} bytes is over the {MAX_PAGE_BYTES}-byte limit",
                self.page_size,
                schema.row_size()
            )));
        }
        if let Some(a) = self.alpha {
            if !(a.is_finite() && a >= 0.0) {
                return Err(Error::invalid(format!(
                    "priority exponent alpha must be finite and >= 0, got {a}"
                )));
            }
        }
        Ok(())
    }
}

/// The shape of a value a caller pushes, without allocating.
#[derive(Clone, Copy, Debug)]
pub(super) enum Dims<'a> {
    Scalar,
    Vector(usize),
    Of(&'a [usize]),
    /// A batch of `n` values whose own shape follows.
    Batch(usize, &'a [usize]),
}

impl Dims<'_> {
    fn to_vec(self) -> Vec<u64> {
        match self {
            Dims::Scalar => Vec::new(),
            Dims::Vector(n) => vec![n as u64],
            Dims::Of(d) => d.iter().map(|&x| x as u64).collect(),
            Dims::Batch(n, d) => std::iter::once(n as u64)
                .chain(d.iter().map(|&x| x as u64))
                .collect(),
        }
    }

    fn elements(self) -> Option<usize> {
        match self {
            Dims::Scalar => Some(1),
            Dims::Vector(n) => Some(n),
            Dims::Of(d) => d.iter().try_fold(1usize, |a, &x| a.checked_mul(x)),
            Dims::Batch(n, d) => d.iter().try_fold(n, |a, &x| a.checked_mul(x)),
        }
    }

    #[inline]
    /// True when this shape equals `spec`, optionally after a leading batch
    /// dimension (returned).
    fn matches(self, spec: &[u64], batched: bool) -> Option<usize> {
        let eq =
            |d: &[usize]| d.len() == spec.len() && d.iter().zip(spec).all(|(&a, &b)| a as u64 == b);
        match (self, batched) {
            (Dims::Scalar, false) => spec.is_empty().then_some(1),
            (Dims::Vector(n), false) => (spec.len() == 1 && spec[0] == n as u64).then_some(1),
            (Dims::Vector(n), true) => spec.is_empty().then_some(n),
            (Dims::Of(d), false) => eq(d).then_some(1),
            (Dims::Of(d), true) => d.split_first().and_then(|(&n, r)| eq(r).then_some(n)),
            (Dims::Batch(n, d), true) => eq(d).then_some(n),
            (Dims::Batch(n, d), false) => (n == 1 && eq(d)).then_some(1),
            (Dims::Scalar, true) => None,
        }
    }
}

/// One field of a row (or, for [`ReplayTable::push_batch`], a column of
/// rows) that a caller pushes: a name, a dtype, a shape and the elements'
/// bytes, borrowed.
///
/// [`ReplayTable::push_batch`]: crate::replay::ReplayTable::push_batch
#[derive(Clone, Copy, Debug)]
pub struct Field<'a> {
    pub(super) name: &'a str,
    pub(super) dtype: DType,
    pub(super) dims: Dims<'a>,
    pub(super) bytes: &'a [u8],
}

impl<'a> Field<'a> {
    /// A scalar (shape `[]`).
    pub fn scalar<T: Element>(name: &'a str, value: &'a T) -> Field<'a> {
        Field {
            name,
            dtype: T::DTYPE,
            dims: Dims::Scalar,
            bytes: bytemuck::bytes_of(value),
        }
    }

    /// A vector (shape `[values.len()]`); for a batch, one scalar per row.
    pub fn vector<T: Element>(name: &'a str, values: &'a [T]) -> Field<'a> {
        Field {
            name,
            dtype: T::DTYPE,
            dims: Dims::Vector(values.len()),
            bytes: bytemuck::cast_slice(values),
        }
    }

    /// Row-major `values` of shape `shape`.
    pub fn tensor<T: Element>(name: &'a str, values: &'a [T], shape: &'a [usize]) -> Field<'a> {
        Field {
            name,
            dtype: T::DTYPE,
            dims: Dims::Of(shape),
            bytes: bytemuck::cast_slice(values),
        }
    }

    /// A batch of `rows` values of shape `shape` each (for
    /// [`push_batch`](crate::replay::ReplayTable::push_batch)).
    pub fn rows<T: Element>(
        name: &'a str,
        rows: usize,
        values: &'a [T],
        shape: &'a [usize],
    ) -> Field<'a> {
        Field {
            name,
            dtype: T::DTYPE,
            dims: Dims::Batch(rows, shape),
            bytes: bytemuck::cast_slice(values),
        }
    }

    /// An `ndarray` array in standard (row-major, contiguous) layout.
    pub fn array<T, S, D>(name: &'a str, array: &'a ArrayBase<S, D>) -> Result<Field<'a>>
    where
        T: Element,
        S: Data<Elem = T>,
        D: Dimension,
    {
        let values = array.as_slice().ok_or_else(|| {
            Error::invalid(format!(
                "field {name:?}: the array is not in standard layout"
            ))
        })?;
        Ok(Field::tensor(name, values, array.shape()))
    }

    /// Little-endian bytes of `dtype` elements of shape `shape`.
    pub fn raw(name: &'a str, dtype: DType, shape: &'a [usize], bytes: &'a [u8]) -> Field<'a> {
        Field {
            name,
            dtype,
            dims: Dims::Of(shape),
            bytes,
        }
    }

    /// The field's name.
    pub fn name(&self) -> &'a str {
        self.name
    }
}

/// Checks `fields` against `schema` and returns, for each schema field, the
/// given field's bytes, plus the number of rows (1 unless `batched`).
/// Nothing is changed on error.
pub(crate) fn match_fields<'a>(
    table: &str,
    schema: &Schema,
    fields: &[Field<'a>],
    batched: bool,
) -> Result<(Vec<&'a [u8]>, usize)> {
    let n = schema.fields().len();
    let mut out: Vec<&'a [u8]> = vec![&[]; n];
    let mut seen = 0u64;
    let mut rows: Option<usize> = None;
    for f in fields {
        let i = schema.index_of(f.name).ok_or_else(|| Error::NotFound {
            what: format!("field {:?} in replay table {table:?}", f.name),
        })?;
        if seen & (1 << i) != 0 {
            return Err(Error::invalid(format!(
                "field {:?} given twice for replay table {table:?}",
                f.name
            )));
        }
        seen |= 1 << i;
        let spec = &schema.fields()[i];
        if f.dtype != spec.dtype {
            return Err(Error::DtypeMismatch {
                key: format!("{table}/{}", f.name),
                stored: spec.dtype,
                requested: f.dtype,
            });
        }
        let mut expected = spec.shape.clone();
        let count = f.dims.matches(&spec.shape, batched);
        let Some(count) = count else {
            if batched {
                expected.insert(0, rows.unwrap_or(0) as u64);
            }
            return Err(Error::ShapeMismatch {
                what: format!("field {:?} of replay table {table:?}", f.name),
                expected,
                actual: f.dims.to_vec(),
            });
        };
        let elems = f.dims.elements().unwrap_or(usize::MAX);
        if elems.checked_mul(f.dtype.size()) != Some(f.bytes.len()) {
            return Err(Error::ShapeMismatch {
                what: format!("values of field {:?} of replay table {table:?}", f.name),
                expected: f.dims.to_vec(),
                actual: vec![(f.bytes.len() / f.dtype.size()) as u64],
            });
        }
        if let Some(r) = rows {
            if r != count {
                expected.insert(0, r as u64);
                return Err(Error::ShapeMismatch {
                    what: format!(
                        "field {:?} of replay table {table:?} (rows differ between fields)",
                        f.name
                    ),
                    expected,
                    actual: f.dims.to_vec(),
                });
            }
        }
        rows = Some(count);
        if f.dtype == DType::Bool && f.bytes.iter().any(|&b| b > 1) {
            return Err(Error::invalid(format!(
                "field {:?}: a bool holds a byte other than 0 or 1",
                f.name
            )));
        }
        out[i] = f.bytes;
    }
    if seen.count_ones() as usize != n {
        let missing: Vec<&str> = (0..n)
            .filter(|i| seen & (1 << i) == 0)
            .map(|i| schema.fields()[i].name.as_str())
            .collect();
        return Err(Error::invalid(format!(
            "replay table {table:?}: row lacks field(s) {missing:?}"
        )));
    }
    Ok((out, rows.unwrap_or(1)))
}

/// The table-level facts stored in a snapshot, encoded with postcard.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub(crate) struct StoredMeta {
    pub version: u8,
    pub fields: Vec<FieldSpec>,
    pub capacity: u64,
    pub page_size: u64,
    pub alpha: Option<f64>,
}

impl StoredMeta {
    pub(crate) const VERSION: u8 = 1;

    pub(crate) fn of(schema: &Schema, opts: &ReplayOptions) -> StoredMeta {
        StoredMeta {
            version: StoredMeta::VERSION,
            fields: schema.fields().to_vec(),
            capacity: opts.capacity,
            page_size: opts.page_size,
            alpha: opts.alpha,
        }
    }

    pub(crate) fn encode(&self) -> Vec<u8> {
        postcard::to_stdvec(self).unwrap_or_default()
    }

    pub(crate) fn decode(bytes: &[u8]) -> std::result::Result<StoredMeta, String> {
        let m: StoredMeta = postcard::from_bytes(bytes).map_err(|e| e.to_string())?;
        if m.version != StoredMeta::VERSION {
            return Err(format!("replay table format version {}", m.version));
        }
        Ok(m)
    }
}
