//! The report as one self-contained HTML page: inline CSS and SVG, no
//! script, nothing fetched. Every chart is an `<svg>` whose marks carry a
//! `<title>` with the exact figures (the browser shows it on hover) and
//! `data-*` attributes naming what they show, so the page can be checked
//! by reading its DOM.

use std::fmt::Write;

use super::super::table::{human_bytes, iso_time, num, shape};
use crate::report::{Cell, KeyRow, MetricCurve, ReplayCurve, RunReport};
use crate::snapshot::time_of;

/// Distinct colour of a cell holding NaN or Inf (no ramp colour is near it).
const BAD: &str = "#e6007e";
/// A cell whose entry is the previous step's: no change at all.
const UNCHANGED: &str = "#dde3ea";

const STYLE: &str = r#"
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; color: #1f2933;
  background: #ffffff; margin: 0 auto; padding: 24px 32px 48px; max-width: 1280px; }
h1 { font-size: 22px; margin: 0 0 4px; }
h2 { font-size: 17px; margin: 32px 0 10px; border-bottom: 1px solid #d9e2ec; padding-bottom: 4px; }
h3 { font-size: 14px; margin: 14px 0 6px; color: #486581; }
.sub { color: #627d98; margin: 0 0 8px; }
.empty { background: #f0f4f8; border-radius: 6px; padding: 14px 18px; color: #334e68; }
table { border-collapse: collapse; font-variant-numeric: tabular-nums; }
th, td { padding: 3px 12px 3px 0; text-align: left; }
th { color: #627d98; font-weight: 600; border-bottom: 1px solid #d9e2ec; }
td.n, th.n { text-align: right; }
#first-bad { background: #fff0f7; border: 1px solid #f5a3c7; border-radius: 8px; padding: 6px 18px 14px; }
#first-bad h2 { color: #a30057; border: 0; margin-top: 8px; }
.charts { display: flex; flex-wrap: wrap; gap: 18px; }
figure { margin: 0; background: #f8fafc; border: 1px solid #e4e7eb; border-radius: 8px; padding: 8px 10px 4px; }
figcaption { font-weight: 600; margin-bottom: 2px; }
figcaption span { font-weight: 400; color: #627d98; }
svg text { font: 11px system-ui, sans-serif; fill: #52606d; }
svg .axis { stroke: #9aa5b1; stroke-width: 1; }
svg .grid { stroke: #e4e7eb; stroke-width: 1; }
svg .line { fill: none; stroke: #2f80ed; stroke-width: 2; }
svg .pt { fill: #2f80ed; }
svg .best { fill: #f2994a; stroke: #ffffff; stroke-width: 1.5; }
svg .tag { stroke: #9b51e0; stroke-dasharray: 3 3; }
svg text.taglabel { fill: #7b2cbf; }
svg text.group { font-weight: 600; fill: #1f2933; }
svg .cap { stroke: #eb5757; stroke-dasharray: 4 3; }
.legend { display: flex; gap: 16px; align-items: center; color: #52606d; font-size: 12px; margin: 4px 0 10px; }
.swatch { display: inline-block; width: 12px; height: 12px; border-radius: 2px; vertical-align: -2px; margin-right: 4px; }
.ramp { display: inline-block; width: 120px; height: 12px; vertical-align: -2px; margin: 0 4px;
  background: linear-gradient(90deg, #440154, #3b528b, #21918c, #5ec962, #fde725); }
.kv td:first-child { color: #627d98; padding-right: 18px; }
.scroll { overflow-x: auto; }
"#;

/// Writes the page for `report` of the database at `db`.
pub(crate) fn page(report: &RunReport, db: &str) -> String {
    let mut h = String::with_capacity(64 << 10);
    let _ = write!(
        h,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>ckptdb report: {}</title><style>{STYLE}</style></head><body>\n",
        esc(db)
    );
    let _ = writeln!(h, "<h1>ckptdb report: {}</h1>", esc(db));
    if report.steps.is_empty() {
        let _ = writeln!(
            h,
            "<p class=\"empty\" id=\"no-steps\">{}</p>",
            if report.storage.steps == 0 {
                "This database holds no step yet: nothing to show.".to_owned()
            } else {
                format!(
                    "None of the database's {} live steps is in the selected range.",
                    report.storage.steps
                )
            }
        );
        storage(&mut h, report);
        h.push_str("</body></html>\n");
        return h;
    }
    let (first, last) = (&report.steps[0], &report.steps[report.steps.len() - 1]);
    let _ = writeln!(
        h,
        "<p class=\"sub\">{} live step{} ({} … {}), {} to {} · {} tensor key{}{} · {} of tensors read</p>",
        report.steps.len(),
        plural(report.steps.len()),
        first.step,
        last.step,
        iso_time(time_of(first.time_ms)),
        iso_time(time_of(last.time_ms)),
        report.keys.len(),
        plural(report.keys.len()),
        if report.prefix.is_empty() {
            String::new()
        } else {
            format!(" under <code>{}</code>", esc(&report.prefix))
        },
        human_bytes(report.bytes_read),
    );
    first_bad(&mut h, report);
    metrics(&mut h, report);
    heatmaps(&mut h, report);
    storage(&mut h, report);
    replay(&mut h, report);
    h.push_str("</body></html>\n");
    h
}

fn plural(n: usize) -> &'static str {
    if n == 1 {
        ""
    } else {
        "s"
    }
}

/// Escapes text for HTML content and attribute values.
fn esc(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&#39;"),
            c => o.push(c),
        }
    }
    o
}

fn first_bad(h: &mut String, report: &RunReport) {
    if report.first_bad.is_empty() {
        h.push_str("<p class=\"sub\" id=\"all-finite\">Every tensor is finite at every step shown (no NaN, no Inf).</p>\n");
        return;
    }
    let _ = writeln!(
        h,
        "<section id=\"first-bad\"><h2>First bad step: {} key{} went non-finite</h2>\
         <table><tr><th>key</th><th class=\"n\">first bad step</th><th class=\"n\">NaN</th><th class=\"n\">Inf</th></tr>",
        report.first_bad.len(),
        plural(report.first_bad.len())
    );
    for b in &report.first_bad {
        let _ = writeln!(
            h,
            "<tr class=\"bad-row\" data-key=\"{k}\" data-step=\"{s}\"><td><code>{k}</code></td>\
             <td class=\"n\">{s}</td><td class=\"n\">{}</td><td class=\"n\">{}</td></tr>",
            b.nan,
            b.inf,
            k = esc(&b.key),
            s = b.step,
        );
    }
    h.push_str("</table></section>\n");
}

/// Plot geometry shared by the line charts.
struct Frame {
    w: f64,
    h: f64,
    left: f64,
    right: f64,
    top: f64,
    bottom: f64,
    x0: f64,
    x1: f64,
    y0: f64,
    y1: f64,
}

impl Frame {
    fn new(xs: impl Iterator<Item = f64> + Clone, ys: impl Iterator<Item = f64> + Clone) -> Frame {
        let (x0, x1) = range(xs);
        let (mut y0, mut y1) = range(ys);
        // Counts and sizes never go below 0; neither does their axis.
        let non_negative = y0 >= 0.0;
        if y0 == y1 {
            y0 -= 0.5_f64.max(y0.abs() * 0.1);
            y1 += 0.5_f64.max(y1.abs() * 0.1);
        } else {
            let pad = (y1 - y0) * 0.08;
            y0 -= pad;
            y1 += pad;
        }
        if non_negative {
            y0 = y0.max(0.0);
        }
        Frame {
            w: 380.0,
            h: 190.0,
            left: 58.0,
            right: 16.0,
            top: 22.0,
            bottom: 28.0,
            x0,
            x1,
            y0,
            y1,
        }
    }

    fn x(&self, v: f64) -> f64 {
        let span = self.w - self.left - self.right;
        if self.x1 > self.x0 {
            self.left + (v - self.x0) / (self.x1 - self.x0) * span
        } else {
            self.left + span / 2.0
        }
    }

    fn y(&self, v: f64) -> f64 {
        let span = self.h - self.top - self.bottom;
        self.h - self.bottom - (v - self.y0) / (self.y1 - self.y0) * span
    }

    /// The svg element's opening tag, axes, and min/max labels.
    fn open(&self, h: &mut String, attrs: &str) {
        let (l, b, r, t) = (
            self.left,
            self.h - self.bottom,
            self.w - self.right,
            self.top,
        );
        let _ = write!(
            h,
            "<svg {attrs} width=\"{w}\" height=\"{hh}\" viewBox=\"0 0 {w} {hh}\" role=\"img\">\
             <line class=\"grid\" x1=\"{l}\" y1=\"{t}\" x2=\"{r}\" y2=\"{t}\"/>\
             <line class=\"grid\" x1=\"{l}\" y1=\"{m:.1}\" x2=\"{r}\" y2=\"{m:.1}\"/>\
             <line class=\"axis\" x1=\"{l}\" y1=\"{b}\" x2=\"{r}\" y2=\"{b}\"/>\
             <line class=\"axis\" x1=\"{l}\" y1=\"{t}\" x2=\"{l}\" y2=\"{b}\"/>\
             <text x=\"{tl}\" y=\"{ty}\" text-anchor=\"end\">{ymax}</text>\
             <text x=\"{tl}\" y=\"{by}\" text-anchor=\"end\">{ymin}</text>\
             <text x=\"{l}\" y=\"{xy}\" text-anchor=\"start\">{xmin}</text>\
             <text x=\"{r}\" y=\"{xy}\" text-anchor=\"end\">{xmax}</text>",
            w = self.w,
            hh = self.h,
            m = (t + b) / 2.0,
            tl = l - 6.0,
            ty = t + 4.0,
            by = b,
            xy = b + 16.0,
            ymax = short(self.y1),
            ymin = short(self.y0),
            xmin = self.x0,
            xmax = self.x1,
        );
    }
}

fn range(xs: impl Iterator<Item = f64>) -> (f64, f64) {
    let (lo, hi) = xs
        .filter(|v| v.is_finite())
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
            (lo.min(v), hi.max(v))
        });
    if lo > hi {
        (0.0, 1.0)
    } else {
        (lo, hi)
    }
}

/// An axis label: a few significant digits.
fn short(v: f64) -> String {
    let a = v.abs();
    if a != 0.0 && !(1e-3..1e6).contains(&a) {
        format!("{v:.2e}")
    } else if a >= 100.0 {
        format!("{v:.0}")
    } else {
        let s = format!("{v:.3}");
        s.trim_end_matches('0').trim_end_matches('.').to_owned()
    }
}

fn metrics(h: &mut String, report: &RunReport) {
    h.push_str("<section id=\"metrics\"><h2>Metrics</h2>\n");
    if report.metrics.is_empty() {
        h.push_str("<p class=\"empty\">No step has a metric.</p></section>\n");
        return;
    }
    h.push_str("<div class=\"charts\">\n");
    let tags: Vec<(u64, &str)> = report
        .steps
        .iter()
        .flat_map(|s| s.tags.iter().map(move |t| (s.step, t.as_str())))
        .collect();
    for m in &report.metrics {
        metric_chart(h, m, &tags);
    }
    h.push_str("</div></section>\n");
}

fn metric_chart(h: &mut String, m: &MetricCurve, tags: &[(u64, &str)]) {
    let best = m
        .best_step
        .and_then(|s| m.points.iter().find(|p| p.0 == s).copied());
    let _ = write!(
        h,
        "<figure class=\"chart metric\" data-metric=\"{}\"><figcaption>{}<span>{}</span></figcaption>",
        esc(&m.name),
        esc(&m.name),
        best.map(|(s, v)| format!(
            " · best ({}) {} at step {s}",
            if m.lower_is_better { "lowest" } else { "highest" },
            num(v)
        ))
            .unwrap_or_default()
    );
    let f = Frame::new(
        m.points.iter().map(|p| p.0 as f64),
        m.points.iter().map(|p| p.1),
    );
    f.open(
        h,
        &format!("class=\"plot\" data-points=\"{}\"", m.points.len()),
    );
    for (i, &(step, tag)) in tags.iter().enumerate() {
        let x = f.x(step as f64);
        let _ = write!(
            h,
            "<line class=\"tag\" x1=\"{x:.1}\" y1=\"{}\" x2=\"{x:.1}\" y2=\"{}\"/>\
             <text class=\"taglabel\" data-tag=\"{t}\" x=\"{x:.1}\" y=\"{}\" text-anchor=\"middle\">{t}</text>",
            f.top,
            f.h - f.bottom,
            f.top - 6.0 - (i % 2) as f64 * 0.0,
            t = esc(tag),
        );
    }
    let finite: Vec<(f64, f64)> = m
        .points
        .iter()
        .filter(|p| p.1.is_finite())
        .map(|&(s, v)| (f.x(s as f64), f.y(v)))
        .collect();
    if finite.len() > 1 {
        h.push_str("<polyline class=\"line\" points=\"");
        for (x, y) in &finite {
            let _ = write!(h, "{x:.1},{y:.1} ");
        }
        h.push_str("\"/>");
    }
    for &(s, v) in &m.points {
        if !v.is_finite() {
            continue;
        }
        let is_best = best.is_some_and(|b| b.0 == s);
        let _ = write!(
            h,
            "<circle class=\"{}\" data-step=\"{s}\" data-value=\"{}\" cx=\"{:.1}\" cy=\"{:.1}\" r=\"{}\"><title>{} = {} at step {s}{}</title></circle>",
            if is_best { "best" } else { "pt" },
            num(v),
            f.x(s as f64),
            f.y(v),
            if is_best { 6 } else { 3 },
            esc(&m.name),
            num(v),
            if is_best { " (best)" } else { "" },
        );
    }
    h.push_str("</svg></figure>\n");
}

/// Viridis, sampled at five stops, interpolated: dark for low, yellow for
/// high; readable by most colour-blind viewers and in grey.
fn ramp(t: f64) -> String {
    const STOPS: [(f64, f64, f64); 5] = [
        (68.0, 1.0, 84.0),
        (59.0, 82.0, 139.0),
        (33.0, 145.0, 140.0),
        (94.0, 201.0, 98.0),
        (253.0, 231.0, 37.0),
    ];
    let t = if t.is_finite() {
        t.clamp(0.0, 1.0)
    } else {
        0.0
    };
    let pos = t * (STOPS.len() - 1) as f64;
    let i = (pos.floor() as usize).min(STOPS.len() - 2);
    let f = pos - i as f64;
    let (a, b) = (STOPS[i], STOPS[i + 1]);
    let mix = |x: f64, y: f64| (x + (y - x) * f).round() as u8;
    format!(
        "#{:02x}{:02x}{:02x}",
        mix(a.0, b.0),
        mix(a.1, b.1),
        mix(a.2, b.2)
    )
}

/// Which figure a heatmap shows.
#[derive(Clone, Copy, PartialEq)]
enum Measure {
    Norm,
    Change,
}

/// Relative changes are shown on a log scale from 1e-6 to 1 (and above).
const CHANGE_DECADES: f64 = 6.0;

fn heatmaps(h: &mut String, report: &RunReport) {
    h.push_str("<section id=\"heatmaps\"><h2>Tensors × steps</h2>\n");
    if report.keys.is_empty() {
        let _ = writeln!(
            h,
            "<p class=\"empty\" id=\"no-keys\">{}</p></section>",
            if report.prefix.is_empty() {
                "No step holds a tensor.".to_owned()
            } else {
                format!(
                    "No tensor key starts with <code>{}</code>.",
                    esc(&report.prefix)
                )
            }
        );
        return;
    }
    let _ = writeln!(
        h,
        "<div class=\"legend\"><span><span class=\"swatch\" style=\"background:{BAD}\"></span>NaN or Inf</span>\
         <span><span class=\"swatch\" style=\"background:{UNCHANGED}\"></span>entry shared with the previous step</span>\
         <span>hover a cell for its exact figures</span></div>"
    );
    h.push_str("<h3>L2 norm of the finite elements (each row scaled from its own minimum to maximum)</h3>\n");
    h.push_str(
        "<div class=\"legend\">low<span class=\"ramp\"></span>high</div>\n<div class=\"scroll\">",
    );
    heatmap(h, report, Measure::Norm);
    h.push_str("</div>\n<h3>Relative change ‖w<sub>t</sub> − w<sub>t−1</sub>‖ / ‖w<sub>t−1</sub>‖ from the previous step shown (log scale)</h3>\n");
    h.push_str("<div class=\"legend\">10⁻⁶ or less<span class=\"ramp\"></span>1 or more</div>\n<div class=\"scroll\">");
    heatmap(h, report, Measure::Change);
    h.push_str("</div></section>\n");
}

fn heatmap(h: &mut String, report: &RunReport, measure: Measure) {
    let n = report.steps.len();
    let cw = (760.0 / n as f64).clamp(6.0, 40.0).floor();
    let ch = 16.0;
    let longest = report
        .keys
        .iter()
        .map(|k| k.key.chars().count())
        .max()
        .unwrap_or(0);
    let label_w = (longest.min(48) as f64 * 6.6 + 16.0).max(80.0);
    let top = 34.0;
    let mut groups: Vec<(&str, Vec<&KeyRow>)> = Vec::new();
    for k in &report.keys {
        match groups.last_mut() {
            Some((g, rows)) if *g == k.group => rows.push(k),
            _ => groups.push((&k.group, vec![k])),
        }
    }
    let rows = report.keys.len() as f64 + groups.len() as f64;
    let w = label_w + cw * n as f64 + 10.0;
    let height = top + rows * ch + 6.0;
    let name = match measure {
        Measure::Norm => "norm",
        Measure::Change => "change",
    };
    let _ = write!(
        h,
        "<svg class=\"heatmap\" data-measure=\"{name}\" width=\"{w}\" height=\"{height}\" viewBox=\"0 0 {w} {height}\">"
    );
    // Step labels, thinned to about one per 40 px.
    let every = ((40.0 / cw).ceil() as usize).max(1);
    for (i, s) in report.steps.iter().enumerate() {
        if i % every == 0 || i + 1 == n {
            let x = label_w + cw * (i as f64 + 0.5);
            let _ = write!(
                h,
                "<text x=\"{x:.1}\" y=\"{}\" text-anchor=\"middle\">{}</text>",
                top - 8.0,
                s.step
            );
        }
    }
    let mut y = top;
    for (group, keys) in groups {
        let _ = write!(
            h,
            "<text class=\"group\" x=\"4\" y=\"{:.1}\">{}</text>",
            y + ch - 4.0,
            esc(if group.is_empty() {
                "(top level)"
            } else {
                group
            })
        );
        y += ch;
        for k in keys {
            let label = super::super::table::truncate(&k.key, 48);
            let _ = write!(
                h,
                "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{}<title>{}</title></text>",
                label_w - 6.0,
                y + ch - 4.0,
                esc(&label),
                esc(&k.key)
            );
            let (lo, hi) = range(k.cells.iter().flatten().map(|c| c.l2));
            for (i, cell) in k.cells.iter().enumerate() {
                let Some(c) = cell else { continue };
                let step = report.steps[i].step;
                let fill = cell_fill(c, measure, lo, hi);
                let _ = write!(
                    h,
                    "<rect class=\"cell{}\" data-key=\"{}\" data-step=\"{step}\" data-l2=\"{}\" data-rel=\"{}\" \
                     x=\"{:.1}\" y=\"{:.1}\" width=\"{}\" height=\"{}\" fill=\"{fill}\"><title>{}</title></rect>",
                    if c.summary.has_non_finite() { " bad" } else { "" },
                    esc(&k.key),
                    num(c.l2),
                    c.rel_change.map(num).unwrap_or_default(),
                    label_w + cw * i as f64,
                    y,
                    cw - 1.0,
                    ch - 1.0,
                    esc(&cell_title(&k.key, step, c)),
                );
            }
            y += ch;
        }
    }
    h.push_str("</svg>");
}

fn cell_fill(c: &Cell, measure: Measure, lo: f64, hi: f64) -> String {
    if c.summary.has_non_finite() {
        return BAD.to_owned();
    }
    match measure {
        Measure::Norm => ramp(if hi > lo {
            (c.l2 - lo) / (hi - lo)
        } else {
            0.5
        }),
        Measure::Change => match c.rel_change {
            None => "#ffffff".to_owned(),
            Some(_) if c.shared => UNCHANGED.to_owned(),
            Some(r) if r.is_infinite() => ramp(1.0),
            Some(r) if r <= 0.0 => ramp(0.0),
            Some(r) => ramp((r.log10() + CHANGE_DECADES) / CHANGE_DECADES),
        },
    }
}

fn cell_title(key: &str, step: u64, c: &Cell) -> String {
    let mut t = format!(
        "{key} at step {step}\n{} {}  ({} elements)\n‖w‖ = {}",
        c.dtype,
        shape(&c.shape),
        c.summary.elements,
        num(c.l2)
    );
    match c.rel_change {
        Some(r) => {
            let _ = write!(t, "\n‖Δ‖/‖w‖ = {}", num(r));
        }
        None => t.push_str("\n‖Δ‖/‖w‖: no previous version"),
    }
    if c.shared {
        t.push_str(" (same entry as the previous step)");
    }
    if c.summary.has_non_finite() {
        let _ = write!(t, "\nNaN: {}  Inf: {}", c.summary.nan, c.summary.inf);
    }
    t
}

fn storage(h: &mut String, report: &RunReport) {
    let s = &report.storage;
    let _ = writeln!(
        h,
        "<section id=\"storage\"><h2>Storage</h2><table class=\"kv\">\
         <tr><td>live bytes (distinct entries of the live steps, replay pages included)</td><td class=\"n\" data-bytes=\"{}\">{}</td></tr>\
         <tr><td>sum of the live steps' sizes</td><td class=\"n\" data-bytes=\"{}\">{}</td></tr>\
         <tr><td>dedup ratio</td><td class=\"n\">{}×</td></tr>\
         <tr><td>on disk (segments and catalog)</td><td class=\"n\" data-bytes=\"{}\">{}</td></tr>\
         <tr><td>what <code>ckptdb compact</code> would reclaim</td><td class=\"n\" data-bytes=\"{}\">{}</td></tr>\
         </table>",
        s.live_bytes,
        human_bytes(s.live_bytes),
        s.logical_bytes,
        human_bytes(s.logical_bytes),
        short(report.dedup_ratio),
        s.disk_bytes,
        human_bytes(s.disk_bytes),
        s.reclaimable_bytes,
        human_bytes(s.reclaimable_bytes),
    );
    if report.steps.is_empty() {
        h.push_str("</section>\n");
        return;
    }
    h.push_str(
        "<h3>Bytes per step: written by its commit (new) and shared with earlier steps</h3>\n",
    );
    let _ = write!(
        h,
        "<div class=\"legend\"><span><span class=\"swatch\" style=\"background:#2f80ed\"></span>new</span>\
         <span><span class=\"swatch\" style=\"background:#a9c7f0\"></span>shared</span></div>"
    );
    let n = report.steps.len();
    let bw = (760.0 / n as f64).clamp(4.0, 48.0).floor();
    let (left, top, ph) = (64.0, 10.0, 150.0);
    let w = left + bw * n as f64 + 12.0;
    let hh = top + ph + 24.0;
    let max = report
        .steps
        .iter()
        .map(|s| s.bytes)
        .max()
        .unwrap_or(0)
        .max(1) as f64;
    let _ = write!(
        h,
        "<svg class=\"bars\" id=\"bytes-per-step\" width=\"{w}\" height=\"{hh}\" viewBox=\"0 0 {w} {hh}\">\
         <line class=\"axis\" x1=\"{left}\" y1=\"{b}\" x2=\"{r}\" y2=\"{b}\"/>\
         <text x=\"{tl}\" y=\"{ty}\" text-anchor=\"end\">{}</text><text x=\"{tl}\" y=\"{b}\" text-anchor=\"end\">0</text>",
        human_bytes(max as u64),
        b = top + ph,
        r = w - 12.0,
        tl = left - 6.0,
        ty = top + 8.0,
    );
    let every = ((48.0 / bw).ceil() as usize).max(1);
    for (i, st) in report.steps.iter().enumerate() {
        let x = left + bw * i as f64;
        let new_h = st.new_bytes.min(st.bytes) as f64 / max * ph;
        let all_h = st.bytes as f64 / max * ph;
        let _ = write!(
            h,
            "<g class=\"bar\" data-step=\"{}\" data-new=\"{}\" data-shared=\"{}\"><title>step {}: {} new, {} shared</title>\
             <rect x=\"{x:.1}\" y=\"{:.1}\" width=\"{}\" height=\"{:.1}\" fill=\"#a9c7f0\"/>\
             <rect x=\"{x:.1}\" y=\"{:.1}\" width=\"{}\" height=\"{:.1}\" fill=\"#2f80ed\"/></g>",
            st.step,
            st.new_bytes,
            st.shared_bytes,
            st.step,
            human_bytes(st.new_bytes),
            human_bytes(st.shared_bytes),
            top + ph - all_h,
            bw - 1.0,
            all_h - new_h,
            top + ph - new_h,
            bw - 1.0,
            new_h,
        );
        if i % every == 0 || i + 1 == n {
            let _ = write!(
                h,
                "<text x=\"{:.1}\" y=\"{}\" text-anchor=\"middle\">{}</text>",
                x + bw / 2.0,
                top + ph + 16.0,
                st.step
            );
        }
    }
    h.push_str("</svg></section>\n");
}

fn replay(h: &mut String, report: &RunReport) {
    if report.replay.is_empty() {
        return;
    }
    h.push_str("<section id=\"replay\"><h2>Replay tables</h2><div class=\"charts\">\n");
    for t in &report.replay {
        replay_chart(h, t);
    }
    h.push_str("</div></section>\n");
}

fn replay_chart(h: &mut String, t: &ReplayCurve) {
    let last = t.points.last().copied();
    let _ = write!(
        h,
        "<figure class=\"chart replay\" data-table=\"{n}\"><figcaption>{n}<span> · {} of {} held · {} inserted in all{}</span></figcaption>",
        last.map_or(0, |p| p.len),
        t.capacity,
        last.map_or(0, |p| p.total_inserted),
        if t.prioritized { " · prioritized" } else { "" },
        n = esc(&t.table),
    );
    let f = Frame::new(
        t.points.iter().map(|p| p.step as f64),
        t.points
            .iter()
            .map(|p| p.len as f64)
            .chain([0.0, t.capacity as f64]),
    );
    f.open(h, "class=\"plot fill\"");
    let cy = f.y(t.capacity as f64);
    let _ = write!(
        h,
        "<line class=\"cap\" x1=\"{}\" y1=\"{cy:.1}\" x2=\"{}\" y2=\"{cy:.1}\"><title>capacity {}</title></line>",
        f.left,
        f.w - f.right,
        t.capacity
    );
    if t.points.len() > 1 {
        h.push_str("<polyline class=\"line\" points=\"");
        for p in &t.points {
            let _ = write!(h, "{:.1},{:.1} ", f.x(p.step as f64), f.y(p.len as f64));
        }
        h.push_str("\"/>");
    }
    for p in &t.points {
        let _ = write!(
            h,
            "<circle class=\"pt\" data-step=\"{}\" data-len=\"{}\" cx=\"{:.1}\" cy=\"{:.1}\" r=\"3\"><title>step {}: {} held, {} inserted</title></circle>",
            p.step,
            p.len,
            f.x(p.step as f64),
            f.y(p.len as f64),
            p.step,
            p.len,
            p.total_inserted
        );
    }
    h.push_str("</svg>");
    if !t.priorities.is_empty() {
        let max = t
            .priorities
            .iter()
            .map(|b| b.count)
            .max()
            .unwrap_or(1)
            .max(1) as f64;
        let (w, hh, left, ph) = (380.0, 120.0, 58.0, 84.0);
        let bw = (w - left - 16.0) / t.priorities.len() as f64;
        let _ = write!(
            h,
            "<div class=\"sub\">priority weights p<sup>α</sup> at step {}</div>\
             <svg class=\"priorities\" width=\"{w}\" height=\"{hh}\" viewBox=\"0 0 {w} {hh}\">\
             <line class=\"axis\" x1=\"{left}\" y1=\"{b}\" x2=\"{r}\" y2=\"{b}\"/>\
             <text x=\"{left}\" y=\"{ly}\" text-anchor=\"start\">{}</text><text x=\"{r}\" y=\"{ly}\" text-anchor=\"end\">{}</text>",
            last.map_or(0, |p| p.step),
            short(t.priorities[0].from),
            short(t.priorities[t.priorities.len() - 1].to),
            b = 8.0 + ph,
            r = w - 16.0,
            ly = 8.0 + ph + 16.0,
        );
        for (i, b) in t.priorities.iter().enumerate() {
            let bh = b.count as f64 / max * ph;
            let _ = write!(
                h,
                "<rect class=\"pbin\" data-count=\"{}\" x=\"{:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{bh:.1}\" fill=\"#27ae60\"><title>{} … {}: {}</title></rect>",
                b.count,
                left + bw * i as f64,
                8.0 + ph - bh,
                (bw - 1.0).max(1.0),
                num(b.from),
                num(b.to),
                b.count
            );
        }
        h.push_str("</svg>");
    }
    h.push_str("</figure>\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_markup() {
        assert_eq!(esc("a<b>&\"c'"), "a&lt;b&gt;&amp;&quot;c&#39;");
    }

    #[test]
    fn ramp_ends_are_the_viridis_ends() {
        assert_eq!(ramp(0.0), "#440154");
        assert_eq!(ramp(1.0), "#fde725");
        assert_eq!(ramp(f64::NAN), "#440154");
    }
}
