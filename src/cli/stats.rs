//! `ckptdb stats`: count, min, max, mean, std, NaN/Inf counts and a
//! histogram of one tensor.
//!
//! min, max, mean and std are over the finite elements (NaN and ±Inf are
//! counted separately); std is the population standard deviation
//! (divisor n). Mean and variance use Welford's update in `f64`.

use serde_json::json;

use super::select::Selector;
use super::table::{num, shape, Table};
use super::Output;
use crate::{Db, Element, Result};

#[derive(Debug, Default, Clone, PartialEq)]
pub(crate) struct Summary {
    pub count: u64,
    pub finite: u64,
    pub nan: u64,
    pub inf: u64,
    pub min: f64,
    pub max: f64,
    pub mean: f64,
    m2: f64,
}

impl Summary {
    pub(crate) fn of<T: Element>(xs: &[T]) -> Summary {
        let mut s = Summary {
            min: f64::INFINITY,
            max: f64::NEG_INFINITY,
            ..Summary::default()
        };
        for &x in xs {
            let v = x.to_f64();
            s.count += 1;
            if v.is_nan() {
                s.nan += 1;
            } else if v.is_infinite() {
                s.inf += 1;
            } else {
                s.finite += 1;
                s.min = s.min.min(v);
                s.max = s.max.max(v);
                let d = v - s.mean;
                s.mean += d / s.finite as f64;
                s.m2 += d * (v - s.mean);
            }
        }
        s
    }

    pub(crate) fn std(&self) -> f64 {
        (self.m2 / self.finite as f64).sqrt()
    }
}

/// Counts of finite elements in `bins` equal-width bins over [min, max].
fn histogram<T: Element>(xs: &[T], s: &Summary, bins: usize) -> Vec<u64> {
    let mut h = vec![0u64; bins];
    if s.finite == 0 {
        return h;
    }
    let width = s.max - s.min;
    for &x in xs {
        let v = x.to_f64();
        if !v.is_finite() {
            continue;
        }
        let i = if width > 0.0 {
            (((v - s.min) / width) * bins as f64) as usize
        } else {
            0
        };
        h[i.min(bins - 1)] += 1;
    }
    h
}

fn opt(x: f64, have: bool) -> serde_json::Value {
    if have {
        json!(x)
    } else {
        serde_json::Value::Null
    }
}

pub(crate) fn run(db: &Db, sel: &Selector, key: &str, bins: usize) -> Result<Output> {
    let snap = sel.snapshot(db)?;
    let step = snap.step();
    let t = snap.tensor(key)?;
    let (s, hist) = with_element!(t.dtype(), T => {
        let xs = t.as_slice::<T>()?;
        let s = Summary::of(xs);
        let h = histogram(xs, &s, bins);
        (s, h)
    });
    let have = s.finite > 0;
    let width = if have {
        (s.max - s.min) / bins as f64
    } else {
        0.0
    };
    let edges: Vec<(f64, f64)> = (0..bins)
        .map(|i| {
            let lo = s.min + width * i as f64;
            let hi = if i + 1 == bins {
                s.max
            } else {
                s.min + width * (i + 1) as f64
            };
            (lo, hi)
        })
        .collect();
    let mut text = format!(
        "{key} @ step {step}: {} {}\n\n",
        t.dtype(),
        shape(t.shape())
    );
    let mut summary = Table::new(&["", ">"]);
    let show = |x: f64| if have { num(x) } else { "-".to_owned() };
    for (name, v) in [
        ("count", s.count.to_string()),
        ("min", show(s.min)),
        ("max", show(s.max)),
        ("mean", show(s.mean)),
        ("std", show(s.std())),
        ("nan", s.nan.to_string()),
        ("inf", s.inf.to_string()),
    ] {
        summary.row(vec![name.to_owned(), v]);
    }
    // Skip the empty header line of the two-column summary.
    text.extend(summary.render().lines().skip(1).map(|l| format!("{l}\n")));
    if have {
        text.push('\n');
        let peak = hist.iter().copied().max().unwrap_or(0).max(1);
        let mut h = Table::new(&[">FROM", ">TO", ">COUNT", "HISTOGRAM"]);
        for ((lo, hi), &c) in edges.iter().zip(&hist) {
            // Eighths of a block give a smooth bar 40 cells wide.
            let eighths = (c as f64 / peak as f64 * 320.0).round() as usize;
            let mut bar = "█".repeat(eighths / 8);
            if !eighths.is_multiple_of(8) {
                bar.push(['▏', '▎', '▍', '▌', '▋', '▊', '▉'][eighths % 8 - 1]);
            }
            h.row(vec![num(*lo), num(*hi), c.to_string(), bar]);
        }
        text.push_str(&h.render());
    }
    let json = json!({
        "step": step,
        "key": key,
        "dtype": t.dtype().name(),
        "shape": t.shape(),
        "count": s.count,
        "min": opt(s.min, have),
        "max": opt(s.max, have),
        "mean": opt(s.mean, have),
        "std": opt(s.std(), have),
        "nan": s.nan,
        "inf": s.inf,
        "histogram": edges.iter().zip(&hist).map(|((lo, hi), c)| json!({"from": lo, "to": hi, "count": c})).collect::<Vec<_>>(),
    });
    Ok(Output::ok(text, json))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_skips_non_finite() {
        let xs = [1.0f32, f32::NAN, 3.0, f32::INFINITY, -f32::INFINITY, 5.0];
        let s = Summary::of(&xs);
        assert_eq!((s.count, s.finite, s.nan, s.inf), (6, 3, 1, 2));
        assert_eq!((s.min, s.max, s.mean), (1.0, 5.0, 3.0));
        assert!((s.std() - (8.0f64 / 3.0).sqrt()).abs() < 1e-12);
        assert_eq!(histogram(&xs, &s, 2), vec![1, 2]);
    }

    #[test]
    fn constant_tensor_has_one_full_bin() {
        let xs = [7i32; 5];
        let s = Summary::of(&xs);
        assert_eq!(s.std(), 0.0);
        assert_eq!(histogram(&xs, &s, 3), vec![5, 0, 0]);
    }
}
