//! `ckptdb ls`: one row per live step, a footer saying where the bytes go,
//! and optionally a metric as a sparkline.

use serde_json::json;

use super::table::{human_bytes, iso_time, metrics, num, Table};
use super::Output;
use crate::{Db, Error, Result};

pub(crate) fn run(db: &Db, plot: Option<&str>) -> Result<Output> {
    let infos = db.step_infos();
    let storage = db.storage_usage()?;
    let mut t = Table::new(&["STEP", "TIME (UTC)", ">BYTES", ">NEW", "METRICS", "TAGS"]);
    let mut rows = Vec::with_capacity(infos.len());
    for i in &infos {
        let time = iso_time(i.time);
        t.row(vec![
            i.step.to_string(),
            time.clone(),
            human_bytes(i.logical_bytes),
            human_bytes(i.new_bytes),
            metrics(&i.metrics),
            i.tags.join(","),
        ]);
        let time_ms = i
            .time
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        rows.push(json!({
            "step": i.step,
            "time": time,
            "time_ms": time_ms,
            "bytes": i.logical_bytes,
            "new_bytes": i.new_bytes,
            "metrics": i.metrics,
            "tags": i.tags,
        }));
    }
    let text = if t.is_empty() {
        "no steps\n".to_owned()
    } else {
        format!(
            "{}{} steps: {} live (replay pages included), {} on disk, compact would reclaim {}\n",
            t.render(),
            infos.len(),
            human_bytes(storage.live_bytes),
            human_bytes(storage.disk_bytes),
            human_bytes(storage.reclaimable_bytes),
        )
    };
    let text = match plot {
        Some(metric) => format!("{text}{}\n", sparkline_row(&infos, metric)?),
        None => text,
    };
    Ok(Output::ok(
        text,
        json!({ "steps": rows, "storage": storage }),
    ))
}

/// Eight heights of a terminal sparkline, lowest first.
const BARS: [char; 8] = ['▁', '▂', '▃', '▄', '▅', '▆', '▇', '█'];

/// `METRIC ▁▃█▅ min V (step S) max V (step S)`: one character per live step
/// (a space where the step lacks the metric, `?` for NaN).
fn sparkline_row(infos: &[crate::StepInfo], metric: &str) -> Result<String> {
    let values: Vec<Option<f64>> = infos
        .iter()
        .map(|i| i.metrics.get(metric).copied())
        .collect();
    let finite = || {
        infos
            .iter()
            .zip(&values)
            .filter_map(|(i, v)| v.filter(|v| v.is_finite()).map(|v| (i.step, v)))
    };
    if values.iter().all(Option::is_none) {
        return Err(Error::NotFound {
            what: format!("a live step with metric {metric:?}"),
        });
    }
    let lo = finite().fold(None, |m: Option<(u64, f64)>, p| match m {
        Some(m) if m.1 <= p.1 => Some(m),
        _ => Some(p),
    });
    let hi = finite().fold(None, |m: Option<(u64, f64)>, p| match m {
        Some(m) if m.1 > p.1 => Some(m),
        _ => Some(p),
    });
    Ok(format!(
        "{metric} {}{}",
        sparkline(&values),
        match (lo, hi) {
            (Some(lo), Some(hi)) => format!(
                "  min {} (step {})  max {} (step {})",
                num(lo.1),
                lo.0,
                num(hi.1),
                hi.0
            ),
            _ => String::new(),
        }
    ))
}

fn sparkline(values: &[Option<f64>]) -> String {
    let (lo, hi) = values
        .iter()
        .flatten()
        .filter(|v| v.is_finite())
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), &v| {
            (lo.min(v), hi.max(v))
        });
    values
        .iter()
        .map(|v| match v {
            None => ' ',
            Some(v) if v.is_nan() => '?',
            Some(v) if *v == f64::INFINITY => BARS[7],
            Some(v) if *v == f64::NEG_INFINITY => BARS[0],
            Some(v) if hi > lo => {
                BARS[(((v - lo) / (hi - lo)) * (BARS.len() - 1) as f64).round() as usize]
            }
            Some(_) => BARS[3],
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sparkline_spans_the_range() {
        let v = [
            Some(0.0),
            Some(7.0),
            None,
            Some(3.5),
            Some(f64::NAN),
            Some(1.0),
        ];
        assert_eq!(sparkline(&v), "▁█ ▅?▂");
        assert_eq!(sparkline(&[Some(2.0), Some(2.0)]), "▄▄");
    }
}
