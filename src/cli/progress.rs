//! Progress bars for long work, drawn on stderr only when it is a terminal
//! (indicatif's stderr target hides itself otherwise, so pipes and logs get
//! no control characters).

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// A bar counting `total` bytes, labelled `what`.
pub(crate) fn bytes(what: &'static str, total: u64) -> ProgressBar {
    let pb = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
    if let Ok(style) = ProgressStyle::with_template(
        "{msg:>9} [{bar:32}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
    ) {
        pb.set_style(style.progress_chars("=> "));
    }
    pb.set_message(what);
    pb
}

/// Runs `work`, handing it a progress callback `(done, total)` that draws
/// a byte bar labelled `what` from its first call; the bar is cleared when
/// `work` returns, whatever it returned.
pub(crate) fn with_bytes<T>(
    what: &'static str,
    work: impl FnOnce(&mut dyn FnMut(u64, u64)) -> T,
) -> T {
    let mut bar: Option<ProgressBar> = None;
    let out = work(&mut |done, total| {
        bar.get_or_insert_with(|| bytes(what, total))
            .set_position(done);
    });
    if let Some(pb) = bar {
        pb.finish_and_clear();
    }
    out
}
