//! `ckptdb report`: a run at a glance as one self-contained HTML page (or,
//! with `--json`, the same figures as one document).

mod html;

use std::path::{Path, PathBuf};

use super::location::DbArg;
use super::select::Selector;
use super::table::human_bytes;
use super::{progress, Output};
use crate::report::{ReportOptions, RunReport};
use crate::{Db, Error, Result};

/// `--steps A..B`: either end may be left out (the first or the last live
/// step).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct StepRange {
    from: Option<Selector>,
    to: Option<Selector>,
}

impl std::str::FromStr for StepRange {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<StepRange, String> {
        let (a, b) = s
            .split_once("..")
            .ok_or_else(|| format!("{s:?} is not a step range (SEL..SEL, either end optional)"))?;
        let end = |x: &str| -> std::result::Result<Option<Selector>, String> {
            if x.is_empty() {
                Ok(None)
            } else {
                x.parse().map(Some)
            }
        };
        Ok(StepRange {
            from: end(a)?,
            to: end(b)?,
        })
    }
}

impl StepRange {
    fn resolve(&self, db: &Db) -> Result<std::ops::RangeInclusive<u64>> {
        let from = match &self.from {
            Some(s) => s.resolve(db)?,
            None => 0,
        };
        let to = match &self.to {
            Some(s) => s.resolve(db)?,
            None => u64::MAX,
        };
        if from > to {
            return Err(Error::invalid(format!(
                "the step range starts at {from}, after its end {to}"
            )));
        }
        Ok(from..=to)
    }
}

pub(crate) struct Options {
    pub out: Option<PathBuf>,
    pub prefix: String,
    pub steps: Option<StepRange>,
    pub lower_is_better: Vec<String>,
    pub json: bool,
}

/// Where the page goes when `-o` is not given.
const DEFAULT_OUT: &str = "report.html";

pub(crate) fn run(location: &DbArg, cache: Option<&Path>, options: Options) -> Result<Output> {
    let db = super::open_read_only(location, cache)?;
    // With --json the document is the output; a page only when asked for.
    let out = match (&options.out, options.json) {
        (Some(o), _) => Some(o.clone()),
        (None, false) => Some(PathBuf::from(DEFAULT_OUT)),
        (None, true) => None,
    };
    if let Some(out) = &out {
        check_out_dir(out)?;
    }
    let steps = options.steps.as_ref().map(|r| r.resolve(&db)).transpose()?;
    let mut report_options = ReportOptions::new()
        .prefix(options.prefix)
        .lower_is_better(options.lower_is_better);
    if let Some(steps) = steps {
        report_options = report_options.steps(steps);
    }
    let report = progress::with_bytes("report", |progress| {
        db.run_report(&report_options, progress)
    })?;
    if let Some(out) = &out {
        let page = html::page(&report, &location.to_string());
        std::fs::write(out, page).map_err(|e| Error::io("write", out, e))?;
    }
    let mut json = serde_json::to_value(&report).unwrap_or(serde_json::Value::Null);
    if let Some(o) = json.as_object_mut() {
        o.insert(
            "out".into(),
            out.as_ref().map(|p| p.display().to_string()).into(),
        );
    }
    Ok(Output::ok(summary(&report, out.as_deref()), json))
}

/// Refuses an output path whose directory does not exist, before any work.
fn check_out_dir(out: &Path) -> Result<()> {
    let dir = out.parent().filter(|d| !d.as_os_str().is_empty());
    match dir {
        Some(d) if !d.is_dir() => Err(Error::invalid(format!(
            "cannot write {}: directory {} does not exist",
            out.display(),
            d.display()
        ))),
        _ if out.is_dir() => Err(Error::invalid(format!(
            "cannot write {}: it is a directory",
            out.display()
        ))),
        _ => Ok(()),
    }
}

fn summary(r: &RunReport, out: Option<&Path>) -> String {
    let mut s = match out {
        Some(o) => format!("wrote {}: ", o.display()),
        None => String::new(),
    };
    if r.steps.is_empty() {
        s.push_str("no step to show\n");
        return s;
    }
    s.push_str(&format!(
        "{} steps, {} tensor keys, {} read\n",
        r.steps.len(),
        r.keys.len(),
        human_bytes(r.bytes_read)
    ));
    match r.first_bad.first() {
        Some(b) => s.push_str(&format!(
            "first bad step: {} at step {} ({} NaN, {} Inf){}\n",
            b.key,
            b.step,
            b.nan,
            b.inf,
            match r.first_bad.len() - 1 {
                0 => String::new(),
                1 => ", and 1 more key".to_owned(),
                n => format!(", and {n} more keys"),
            }
        )),
        None => s.push_str("every tensor finite\n"),
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_step_ranges() {
        assert_eq!(
            "10..latest".parse(),
            Ok(StepRange {
                from: Some(Selector::Step(10)),
                to: Some(Selector::Latest)
            })
        );
        assert_eq!(
            "..20".parse(),
            Ok(StepRange {
                from: None,
                to: Some(Selector::Step(20))
            })
        );
        assert!("10".parse::<StepRange>().is_err());
        assert!("x..5".parse::<StepRange>().is_err());
    }
}
