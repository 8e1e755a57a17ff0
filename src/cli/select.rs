//! `SEL`: naming a step by number, `latest`, `best:METRIC[:max|:min]` or
//! `tag:NAME`.

use std::str::FromStr;

use crate::{Db, Error, Result, Snapshot};

/// A way to name one live step on the command line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Selector {
    /// The newest live step.
    Latest,
    /// A step by number.
    Step(u64),
    /// The step with the highest (or, with `min`, lowest) value of a
    /// metric; among equal values the newest step wins.
    Best {
        /// The metric's name.
        metric: String,
        /// True for `best:METRIC:min`.
        min: bool,
    },
    /// The step a tag names.
    Tag(String),
}

impl FromStr for Selector {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Selector, String> {
        if s == "latest" {
            return Ok(Selector::Latest);
        }
        if let Ok(n) = s.parse::<u64>() {
            return Ok(Selector::Step(n));
        }
        if let Some(name) = s.strip_prefix("tag:") {
            if name.is_empty() {
                return Err("tag: needs a tag name (tag:NAME)".into());
            }
            return Ok(Selector::Tag(name.to_owned()));
        }
        if let Some(rest) = s.strip_prefix("best:") {
            // After the last `:` comes the mode; a metric whose name holds
            // a `:` is named with its mode (`best:eval:acc:max`), so a typo
            // in the mode is an error rather than another metric's name.
            let (metric, min) = match rest.rsplit_once(':') {
                Some((m, "min")) => (m, true),
                Some((m, "max")) => (m, false),
                Some((m, mode)) => {
                    return Err(format!(
                        "{mode:?} is not a mode of best:{m} (best:METRIC:max for the highest \
                         value, the default, or best:METRIC:min for the lowest; a metric whose \
                         name holds ':' needs the mode: best:{rest}:max)"
                    ))
                }
                None => (rest, false),
            };
            if metric.is_empty() {
                return Err("best: needs a metric name (best:METRIC or best:METRIC:min)".into());
            }
            return Ok(Selector::Best {
                metric: metric.to_owned(),
                min,
            });
        }
        Err(format!(
            "{s:?} is not a step selector (a step number, latest, best:METRIC[:max|:min], tag:NAME)"
        ))
    }
}

impl Selector {
    /// The live step this selector names in `db`.
    pub fn resolve(&self, db: &Db) -> Result<u64> {
        match self {
            Selector::Latest => db
                .latest_step()
                .ok_or_else(|| Error::invalid("the database holds no step")),
            Selector::Step(n) => {
                if db.steps().binary_search(n).is_ok() {
                    Ok(*n)
                } else {
                    Err(Error::StepNotFound { step: *n })
                }
            }
            Selector::Tag(name) => db.tags().get(name).copied().ok_or_else(|| Error::NotFound {
                what: format!("tag {name:?}"),
            }),
            Selector::Best { metric, min } => {
                let mut best: Option<(f64, u64)> = None;
                for info in db.step_infos() {
                    let Some(&v) = info.metrics.get(metric) else {
                        continue;
                    };
                    if v.is_nan() {
                        continue;
                    }
                    let better = match best {
                        None => true,
                        Some((b, _)) if *min => v <= b,
                        Some((b, _)) => v >= b,
                    };
                    if better {
                        best = Some((v, info.step));
                    }
                }
                best.map(|(_, s)| s).ok_or_else(|| Error::NotFound {
                    what: format!("a live step with metric {metric:?}"),
                })
            }
        }
    }

    /// A snapshot of the step this names. A writer's commit may drop the
    /// step between resolving and reading it (retention drops the oldest
    /// step whenever a new one is saved), which moves the handle to the
    /// newer root: `latest`, `best:` and `tag:` then name another step, so
    /// they are resolved again. A step named by number is not replaced.
    pub fn snapshot(&self, db: &Db) -> Result<Snapshot> {
        // Each retry means the root moved on; a writer cannot outrun a
        // reader forever, but a bound keeps a read-only command finite.
        for _ in 0..100 {
            let step = self.resolve(db)?;
            match db.snapshot(step) {
                Err(Error::StepNotFound { .. })
                    if !matches!(self, Selector::Step(_))
                        && self.resolve(db).ok() != Some(step) =>
                {
                    continue
                }
                r => return r,
            }
        }
        db.snapshot(self.resolve(db)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses() {
        assert_eq!("latest".parse(), Ok(Selector::Latest));
        assert_eq!("42".parse(), Ok(Selector::Step(42)));
        assert_eq!("tag:best".parse(), Ok(Selector::Tag("best".into())));
        assert_eq!(
            "best:loss:min".parse(),
            Ok(Selector::Best {
                metric: "loss".into(),
                min: true
            })
        );
        assert_eq!(
            "best:acc".parse(),
            Ok(Selector::Best {
                metric: "acc".into(),
                min: false
            })
        );
        assert_eq!(
            "best:eval:acc:max".parse(),
            Ok(Selector::Best {
                metric: "eval:acc".into(),
                min: false
            })
        );
        assert_eq!(
            "best:acc:max".parse(),
            Ok(Selector::Best {
                metric: "acc".into(),
                min: false
            })
        );
        assert!("best:eval_return:foo"
            .parse::<Selector>()
            .unwrap_err()
            .contains("\"foo\" is not a mode of best:eval_return"));
        for bad in [
            "",
            "-1",
            "tag:",
            "best:",
            "best::min",
            "newest",
            "best:eval:acc",
            "best:a:",
        ] {
            assert!(bad.parse::<Selector>().is_err(), "{bad:?}");
        }
    }
}
