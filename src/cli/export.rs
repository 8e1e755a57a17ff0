//! `ckptdb export`: a step's tensors as a safetensors file or a directory
//! tree of `.npy` files.
//!
//! Only tensors have a form in either format; blobs and values are listed
//! as skipped. Names are keys (optionally filtered by `--prefix` and, with
//! `--strip-prefix`, shortened by it); in `npy-dir` each name becomes a path
//! under OUT and is checked component by component, so a key like
//! `a/../../x` is refused before anything is written.

use std::path::Path;

use serde_json::json;

use super::select::Selector;
use super::table::human_bytes;
use super::{progress, Output};
use crate::interop::{npy, safetensors};
use crate::{Db, Error, Kind, Result};

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Format {
    /// One safetensors file.
    Safetensors,
    /// One `.npy` file per tensor under a directory.
    NpyDir,
}

pub(crate) struct Options {
    pub format: Format,
    pub prefix: String,
    pub strip_prefix: bool,
    pub force: bool,
}

pub(crate) fn run(db: &Db, sel: &Selector, out: &Path, opts: Options) -> Result<Output> {
    let snap = sel.snapshot(db)?;
    let step = snap.step();
    let mut items = Vec::new();
    let mut skipped = Vec::new();
    let mut total = 0;
    for e in snap.entries().filter(|e| e.key.starts_with(&opts.prefix)) {
        if e.kind != Kind::Tensor {
            skipped.push(
                json!({"key": e.key, "reason": format!("a {} has no tensor form", e.kind.name())}),
            );
            continue;
        }
        let name = if opts.strip_prefix {
            // `--prefix online` strips the separator too: `online/l0.weight`
            // is exported as `l0.weight` in both formats, as with
            // `--prefix online/`.
            let rest = &e.key[opts.prefix.len()..];
            rest.strip_prefix('/').unwrap_or(rest).to_owned()
        } else {
            e.key.clone()
        };
        if name.is_empty() {
            return Err(Error::invalid(format!(
                "{:?} is the whole prefix; nothing would be left of its name",
                e.key
            )));
        }
        total += e.bytes;
        items.push((name, e.key));
    }
    if items.is_empty() {
        return Err(Error::NotFound {
            what: format!("a tensor under prefix {:?} in step {step}", opts.prefix),
        });
    }
    let pb = progress::bytes("export", total);
    let mut tick = |n| pb.set_position(n);
    let (format, size, bf16) = match opts.format {
        Format::Safetensors => {
            let size = safetensors::export_safetensors(&snap, &items, out, opts.force, &mut tick)?;
            ("safetensors", size, Vec::new())
        }
        Format::NpyDir => {
            let r = npy::export_npy_dir(&snap, &items, out, &mut tick)?;
            ("npy-dir", r.bytes, r.bf16_as_u16)
        }
    };
    pb.finish_and_clear();
    let mut text = format!(
        "exported {} tensors of step {step} ({}) to {} as {format}\n",
        items.len(),
        human_bytes(size),
        out.display()
    );
    if !bf16.is_empty() {
        text.push_str(&format!(
            "note: {} bf16 tensors written as raw 16-bit patterns (descr '<u2'); view them as bfloat16\n",
            bf16.len()
        ));
    }
    if !skipped.is_empty() {
        text.push_str(&format!(
            "skipped {} entries that are not tensors\n",
            skipped.len()
        ));
    }
    let json = json!({
        "step": step,
        "format": format,
        "out": out.display().to_string(),
        "tensors": items.iter().map(|(name, key)| json!({"name": name, "key": key})).collect::<Vec<_>>(),
        "bytes": size,
        "bf16_as_u16": bf16,
        "skipped": skipped,
    });
    Ok(Output::ok(text, json))
}
