//! Keys: UTF-8 paths like `policy/q/fc1.weight`.
//!
//! A key is used as a path by `export`, so the rules are those of a safe
//! relative path: no empty, `.` or `..` segment, no leading or trailing `/`,
//! no backslash, no NUL or other control character, at most
//! [`MAX_KEY_LEN`](crate::format::MAX_KEY_LEN) bytes.

use crate::error::{Error, Result};
use crate::format::MAX_KEY_LEN;

/// Checks that `key` is a valid entry key.
pub fn validate_key(key: &str) -> Result<()> {
    let bad = |why: &str| Err(Error::invalid(format!("key {key:?}: {why}")));
    if key.is_empty() {
        return bad("empty");
    }
    if key.len() > MAX_KEY_LEN {
        return bad("longer than the limit");
    }
    if key.chars().any(|c| c.is_control()) {
        return bad("contains a control character");
    }
    if key.contains('\\') {
        return bad("contains a backslash");
    }
    for seg in key.split('/') {
        match seg {
            "" => return bad("has an empty path segment"),
            "." | ".." => return bad("has a '.' or '..' path segment"),
            _ => {}
        }
    }
    Ok(())
}

/// Checks a metric, tag or table name: non-empty, short, printable.
pub(crate) fn validate_name(what: &str, name: &str) -> Result<()> {
    if name.is_empty() || name.len() > 256 || name.chars().any(|c| c.is_control()) {
        return Err(Error::invalid(format!(
            "{what} name {name:?} must be 1 to 256 bytes without control characters"
        )));
    }
    Ok(())
}

/// Checks a metric before it is recorded. Only finite values are metrics:
/// best-by-metric needs an order, and a NaN or an infinity would either be
/// skipped by it (so `ls` shows a metric `best:` cannot find) or always win.
/// A loop that can produce them (a diverged loss) should leave the metric
/// out of that step.
pub(crate) fn validate_metric(name: &str, value: f64) -> Result<()> {
    validate_name("metric", name)?;
    if !value.is_finite() {
        return Err(Error::invalid(format!(
            "metric {name:?} is {value}; metrics must be finite (leave the metric out of this step)"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_paths() {
        for k in ["a", "policy/q/fc1.weight", "x.y/z-1/_", "ünïcode/键"] {
            validate_key(k).unwrap();
        }
    }

    #[test]
    fn rejects_escapes() {
        for k in [
            "", "/a", "a/", "a//b", "..", "a/../b", "./a", "a\0b", "a\\b", "a\nb",
        ] {
            assert!(
                matches!(validate_key(k), Err(Error::InvalidArgument(_))),
                "{k:?}"
            );
        }
        assert!(validate_key(&"k".repeat(MAX_KEY_LEN + 1)).is_err());
    }
}
