//! `ckptdb replay`: the replay tables of one step, and the newest rows of
//! one table.
//!
//! Rows shown are the **newest** `N` transitions the table holds, oldest of
//! them first: that is reproducible without a seed, and it is what one
//! wants to look at while a run is going ("what did the environment just
//! produce?"). Each row is shown with its ring slot and its serial (the
//! transition's number since the table was created).

use serde_json::{json, Value};

use super::select::Selector;
use super::table::{shape, truncate, Table};
use super::Output;
use crate::replay::{ReplayView, Row};
use crate::{DType, Db, Error, Result};

/// Widest a field's value is printed in the text table.
const CELL: usize = 48;

/// A JSON number (or bool) for one element; non-finite floats are `null`.
trait JsonElement {
    fn json(&self) -> Value;
}

macro_rules! json_element {
    ($($t:ty),*) => {
        $(impl JsonElement for $t {
            fn json(&self) -> Value {
                Value::from(*self)
            }
        })*
    };
}

json_element!(bool, u8, i8, u16, i16, u32, i32, u64, i64, f64);

/// The shortest decimal that reads back as this f32 (`0.1` for the f32 0.1,
/// not the f64 digits of its widened value `0.10000000149011612`), written
/// as serde_json writes an f32 (`9.0`, not `9`) and kept as written
/// (`arbitrary_precision`). f16 and bf16 go through their exact f32 value.
fn narrow_float(x: f32) -> Value {
    if !x.is_finite() {
        return Value::Null;
    }
    serde_json::to_string(&x)
        .ok()
        .and_then(|s| serde_json::from_str(&s).ok())
        .unwrap_or(Value::Null)
}

impl JsonElement for f32 {
    fn json(&self) -> Value {
        narrow_float(*self)
    }
}

impl JsonElement for crate::f16 {
    fn json(&self) -> Value {
        narrow_float(self.to_f32())
    }
}

impl JsonElement for crate::bf16 {
    fn json(&self) -> Value {
        narrow_float(self.to_f32())
    }
}

/// Nests a row-major list of elements by `shape` (a scalar is the element
/// itself).
fn nest(items: &[Value], shape: &[u64]) -> Value {
    match shape.split_first() {
        None => items.first().cloned().unwrap_or(Value::Null),
        Some((&n, rest)) => {
            let inner: usize = rest.iter().map(|&d| d as usize).product();
            if n == 0 || inner == 0 {
                return Value::Array((0..n).map(|_| nest(&[], rest)).collect());
            }
            Value::Array(items.chunks(inner).map(|c| nest(c, rest)).collect())
        }
    }
}

/// The text form of a nested JSON value: `[1, 2.5, true]`.
fn compact(v: &Value) -> String {
    match v {
        Value::Array(a) => format!("[{}]", a.iter().map(compact).collect::<Vec<_>>().join(", ")),
        Value::Null => "nan".to_owned(),
        other => other.to_string(),
    }
}

/// Field `name` of `row` (dtype `dtype`, shape `shape`) as JSON.
fn field_json(row: &Row<'_>, name: &str, dtype: DType, shape: &[u64]) -> Result<Value> {
    let items: Vec<Value> = with_element!(dtype, T => {
        row.values::<T>(name)?.iter().map(JsonElement::json).collect()
    });
    Ok(nest(&items, shape))
}

/// The summary of one table, as JSON (without rows).
fn summary(step: u64, view: &ReplayView) -> Value {
    let schema: Vec<Value> = view
        .schema()
        .fields()
        .iter()
        .map(|f| json!({"name": f.name, "dtype": f.dtype.name(), "shape": f.shape}))
        .collect();
    let opts = view.options();
    json!({
        "step": step,
        "table": view.name(),
        "schema": schema,
        "capacity": view.capacity(),
        "page_size": opts.page_size,
        "len": view.len(),
        "total_inserted": view.total_inserted(),
        "prioritized": opts.alpha.is_some(),
        "alpha": opts.alpha,
    })
}

fn prioritized_text(view: &ReplayView) -> String {
    match view.options().alpha {
        Some(a) => format!("yes (alpha {a})"),
        None => "no".to_owned(),
    }
}

/// Every table of the step: one row each.
fn list(step: u64, views: &[ReplayView]) -> Output {
    let mut t = Table::new(&[
        "TABLE",
        ">CAPACITY",
        ">PAGE",
        ">LEN",
        ">TOTAL",
        "PRIORITIZED",
        "SCHEMA",
    ]);
    let mut tables = Vec::with_capacity(views.len());
    for v in views {
        t.row(vec![
            v.name().to_owned(),
            v.capacity().to_string(),
            v.options().page_size.to_string(),
            v.len().to_string(),
            v.total_inserted().to_string(),
            prioritized_text(v),
            v.schema().to_string(),
        ]);
        let mut s = summary(step, v);
        if let Some(o) = s.as_object_mut() {
            o.remove("step");
        }
        tables.push(s);
    }
    let text = if t.is_empty() {
        format!("step {step} holds no replay table\n")
    } else {
        format!("step {step}\n\n{}", t.render())
    };
    Output::ok(text, json!({"step": step, "tables": tables}))
}

/// One table: its summary and its newest `sample` rows.
fn one(step: u64, view: &ReplayView, sample: u64) -> Result<Output> {
    let fields = view.schema().fields();
    let mut headers = vec![">SLOT".to_owned(), ">SERIAL".to_owned()];
    headers.extend(fields.iter().map(|f| f.name.clone()));
    let header_refs: Vec<&str> = headers.iter().map(String::as_str).collect();
    let mut t = Table::new(&header_refs);
    let n = sample.min(view.len());
    let mut rows = Vec::with_capacity(n as usize);
    for i in view.len() - n..view.len() {
        let row = view.get(i)?;
        let index = row.index();
        let mut obj = serde_json::Map::new();
        obj.insert("slot".into(), json!(index.slot));
        obj.insert("serial".into(), json!(index.serial));
        let mut cells = vec![index.slot.to_string(), index.serial.to_string()];
        for f in fields {
            let v = field_json(&row, &f.name, f.dtype, &f.shape)?;
            cells.push(truncate(&compact(&v), CELL));
            obj.insert(f.name.clone(), v);
        }
        t.row(cells);
        rows.push(Value::Object(obj));
    }
    let mut json = summary(step, view);
    json["rows"] = Value::Array(rows);
    let mut text = format!(
        "table {}  step {step}\n\
         capacity        {}\n\
         page size       {}\n\
         len             {}\n\
         total inserted  {}\n\
         prioritized     {}\n\
         schema\n",
        view.name(),
        view.capacity(),
        view.options().page_size,
        view.len(),
        view.total_inserted(),
        prioritized_text(view),
    );
    for f in fields {
        text.push_str(&format!(
            "  {:<14}  {:<5}  {}\n",
            f.name,
            f.dtype.name(),
            shape(&f.shape)
        ));
    }
    if n > 0 {
        let rows = if n == 1 { "row" } else { "rows" };
        text.push_str(&format!("\nnewest {n} {rows}\n"));
        text.push_str(&t.render());
    }
    Ok(Output::ok(text, json))
}

pub(crate) fn run(db: &Db, sel: &Selector, table: Option<&str>, sample: u64) -> Result<Output> {
    let snap = sel.snapshot(db)?;
    let step = snap.step();
    match table {
        None => {
            let views = snap
                .replay_tables()
                .iter()
                .map(|name| snap.replay(name))
                .collect::<Result<Vec<_>>>()?;
            Ok(list(step, &views))
        }
        Some(name) => {
            if !snap.replay_tables().iter().any(|t| t == name) {
                return Err(Error::NotFound {
                    what: format!("replay table {name:?} in step {step}"),
                });
            }
            one(step, &snap.replay(name)?, sample)
        }
    }
}
