//! The report page in a real browser: headless Chromium loads it from disk,
//! `--dump-dom` shows every chart, every heatmap cell and the first-bad-step
//! list with the right numbers, and `--screenshot` shows the charts drawn
//! (their colours are on the rendered page, not only in the markup).
//!
//! Skipped, with a message, when `/usr/bin/chromium` is missing, unless
//! `CI` is set: then a missing browser fails the test.

#![cfg(feature = "cli")]

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use ckptdb::ndarray::Array1;
use ckptdb::replay::{Field, ReplayOptions, Schema};
use ckptdb::Db;
use common::json;

const CHROMIUM: &str = "/usr/bin/chromium";
const STEPS: [u64; 6] = [100, 200, 300, 400, 500, 600];
const NAN_STEP: u64 = 400;
const NAN_KEY: &str = "policy/l1.bias";
const KEYS: [&str; 4] = [
    "optimizer/m.l1",
    "policy/l1.bias",
    "policy/l1.weight",
    "policy/l2.weight",
];

fn chromium() -> Option<PathBuf> {
    if Path::new(CHROMIUM).exists() {
        return Some(CHROMIUM.into());
    }
    if std::env::var_os("CI").is_some() {
        panic!(
            "{CHROMIUM} is missing and CI is set: `.ci/run` installs it (apt-get install chromium)"
        );
    }
    eprintln!("SKIPPED: {CHROMIUM} is missing; install Debian's `chromium` to render the report in a browser");
    None
}

/// Headless Chromium with a fresh profile, nothing fetched or synced.
fn browser(bin: &Path, profile: &Path, args: &[String]) -> std::process::Output {
    let out = Command::new(bin)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            "--disable-quic",
            "--hide-scrollbars",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(args)
        .output()
        .expect("chromium runs");
    assert!(
        out.status.success(),
        "chromium failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn make(path: &Path) {
    let db = Db::open(path).unwrap();
    let schema = Schema::parse("obs: f32[2], reward: f32[]").unwrap();
    let mut table = db
        .replay_table(
            "buffer",
            &schema,
            ReplayOptions::new(500, 64).prioritized(0.6),
        )
        .unwrap();
    let mut pushed = 0u32;
    for (n, &s) in STEPS.iter().enumerate() {
        for _ in 0..70 {
            let obs = [pushed as f32, 1.0];
            let r = pushed as f32 * 0.1;
            table
                .push(&[Field::vector("obs", &obs), Field::scalar("reward", &r)])
                .unwrap();
            pushed += 1;
        }
        let idx: Vec<_> = (0..table.len())
            .map(|i| table.get(i).unwrap().index())
            .collect();
        let pri: Vec<f64> = (0..idx.len()).map(|i| 0.1 + (i % 17) as f64).collect();
        table.update_priorities(&idx, &pri).unwrap();
        let mut tx = db.begin_step(s).unwrap();
        for (k, key) in KEYS.iter().enumerate() {
            let len = 64 * (k + 1);
            let mut v: Vec<f32> = (0..len)
                .map(|i| ((i + 1) as f32 * 0.01) * (1.0 + n as f32 * (k as f32 + 1.0) * 0.1))
                .collect();
            if *key == NAN_KEY && s >= NAN_STEP {
                v[5] = f32::NAN;
            }
            tx.put_tensor(key, &Array1::from(v)).unwrap();
        }
        tx.put_metric("eval_return", [10.0, 40.0, 25.0, 90.0, 60.0, 70.0][n])
            .unwrap();
        tx.put_metric("loss", 1.0 / (n + 1) as f64).unwrap();
        tx.put_replay(&mut table).unwrap();
        tx.commit().unwrap();
        if s == 300 {
            db.tag(300, "warmup_done").unwrap();
        }
    }
}

fn count(hay: &str, needle: &str) -> usize {
    hay.matches(needle).count()
}

/// The value of attribute `name` in the first tag of `dom` containing
/// `anchor`.
fn attr(dom: &str, anchor: &str, name: &str) -> String {
    let at = dom
        .find(anchor)
        .unwrap_or_else(|| panic!("{anchor} not in the DOM"));
    let tag_start = dom[..=at].rfind('<').unwrap();
    let tag = &dom[tag_start..tag_start + dom[tag_start..].find('>').unwrap()];
    let key = format!(" {name}=\"");
    let v = &tag[tag
        .find(&key)
        .unwrap_or_else(|| panic!("{name} not in {tag}"))
        + key.len()..];
    v[..v.find('"').unwrap()].to_owned()
}

#[test]
fn the_page_renders_every_chart_with_the_right_numbers() {
    let Some(bin) = chromium() else { return };
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("run.ckpt");
    make(&db);
    let page = dir.path().join("report.html");
    let v = json(&[
        "report",
        db.to_str().unwrap(),
        "-o",
        page.to_str().unwrap(),
        "--min",
        "loss",
    ]);
    let url = format!("file://{}", page.display());

    let dom = browser(
        &bin,
        &dir.path().join("profile-dom"),
        &["--dump-dom".into(), url.clone()],
    );
    let dom = String::from_utf8(dom.stdout).unwrap();
    assert!(
        dom.contains("<svg"),
        "not rendered: {}",
        &dom[..dom.len().min(500)]
    );

    // One chart per metric, each point drawn, the best one marked.
    assert_eq!(count(&dom, "class=\"chart metric\""), 2);
    assert_eq!(
        attr(&dom, "data-metric=\"eval_return\"", "data-metric"),
        "eval_return"
    );
    let er = &dom[dom.find("data-metric=\"eval_return\"").unwrap()
        ..dom.find("data-metric=\"loss\"").unwrap()];
    assert_eq!(count(er, "<circle class=\"pt\""), 5);
    assert_eq!(attr(er, "<circle class=\"best\"", "data-step"), "400");
    assert_eq!(attr(er, "<circle class=\"best\"", "data-value"), "90");
    assert!(er.contains("data-tag=\"warmup_done\""));
    let loss = &dom[dom.find("data-metric=\"loss\"").unwrap()..];
    assert_eq!(attr(loss, "<circle class=\"best\"", "data-step"), "600");

    // The first-bad-step list: exactly the injected key and step.
    assert_eq!(count(&dom, "class=\"bad-row\""), 1);
    assert_eq!(attr(&dom, "class=\"bad-row\"", "data-key"), NAN_KEY);
    assert_eq!(
        attr(&dom, "class=\"bad-row\"", "data-step"),
        NAN_STEP.to_string()
    );

    // Both heatmaps: a cell per key and step; the NaN cells flagged.
    assert_eq!(count(&dom, "class=\"heatmap\""), 2);
    assert_eq!(
        count(&dom, "<rect class=\"cell"),
        2 * KEYS.len() * STEPS.len()
    );
    let bad_after = STEPS.iter().filter(|&&s| s >= NAN_STEP).count();
    assert_eq!(count(&dom, "<rect class=\"cell bad\""), 2 * bad_after);
    let cells = v["keys"].as_array().unwrap();
    for (k, key) in KEYS.iter().enumerate() {
        assert_eq!(cells[k]["key"], *key);
        for (i, s) in STEPS.iter().enumerate() {
            let anchor = format!("data-key=\"{key}\" data-step=\"{s}\" data-l2=");
            let shown: f64 = attr(&dom, &anchor, "data-l2").parse().unwrap();
            let exact = cells[k]["cells"][i]["l2"].as_f64().unwrap();
            assert!(
                (shown - exact).abs() <= 1e-6 * exact,
                "{key}@{s}: {shown} vs {exact}"
            );
            // Independently: the norm of what was written.
            let n = i as f32;
            let len = 64 * (k + 1);
            let want: f64 = (0..len)
                .filter(|&j| !(*key == NAN_KEY && *s >= NAN_STEP && j == 5))
                .map(|j| ((j + 1) as f32 * 0.01 * (1.0 + n * (k as f32 + 1.0) * 0.1)) as f64)
                .map(|x| x * x)
                .sum::<f64>()
                .sqrt();
            // f32 tensors are summed in f32 blocks: within 1e-5.
            assert!(
                (exact - want).abs() <= 1e-5 * want,
                "{key}@{s}: {exact} vs {want}"
            );
            if i > 0 && !(*key == NAN_KEY && *s >= NAN_STEP) {
                let rel: f64 = attr(&dom, &anchor, "data-rel").parse().unwrap();
                let prev = 1.0 + (n - 1.0) * (k as f64 + 1.0) as f32 * 0.1;
                let cur = 1.0 + n * (k as f32 + 1.0) * 0.1;
                let want = ((cur - prev) / prev) as f64;
                assert!(
                    (rel - want).abs() <= 1e-4 * want,
                    "{key}@{s}: {rel} vs {want}"
                );
            }
        }
    }
    let nan_cell = &dom[dom
        .find(&format!(
            "data-key=\"{NAN_KEY}\" data-step=\"{NAN_STEP}\" data-l2="
        ))
        .unwrap()..];
    let title = &nan_cell[nan_cell.find("<title>").unwrap()..nan_cell.find("</title>").unwrap()];
    assert!(
        title.contains("NaN: 1") && title.contains(&format!("at step {NAN_STEP}")),
        "{title}"
    );

    // Storage and replay, with the library's figures.
    let live = v["storage"]["live_bytes"].as_u64().unwrap();
    assert!(dom.contains(&format!("data-bytes=\"{live}\"")));
    assert_eq!(count(&dom, "<g class=\"bar\""), STEPS.len());
    assert_eq!(count(&dom, "class=\"chart replay\""), 1);
    assert!(dom.contains(&format!("data-step=\"600\" data-len=\"{}\"", 420)));
    let bins = v["replay"][0]["priorities"].as_array().unwrap();
    let held: u64 = bins.iter().map(|b| b["count"].as_u64().unwrap()).sum();
    assert_eq!(held, 420);
    assert_eq!(count(&dom, "<rect class=\"pbin\""), bins.len());

    // The screenshot: the charts' colours are on the rendered page.
    let shot = dir.path().join("shot.png");
    browser(
        &bin,
        &dir.path().join("profile-shot"),
        &[
            format!("--screenshot={}", shot.display()),
            "--window-size=1300,2600".into(),
            url,
        ],
    );
    let decoder = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(&shot).unwrap()));
    let mut reader = decoder.read_info().unwrap();
    let mut buf = vec![0; reader.output_buffer_size().unwrap()];
    let info = reader.next_frame(&mut buf).unwrap();
    let channels = info.color_type.samples();
    let px = |rgb: [u8; 3]| {
        buf[..info.buffer_size()]
            .chunks_exact(channels)
            .filter(|p| p[..3] == rgb)
            .count()
    };
    let not_white = buf[..info.buffer_size()]
        .chunks_exact(channels)
        .filter(|p| p[..3] != [255, 255, 255])
        .count();
    let total = (info.width * info.height) as usize;
    assert!(
        not_white * 20 > total,
        "the page is almost blank: {not_white} of {total} pixels"
    );
    // NaN cells (magenta): 3 steps × 2 maps, each cell at least 30×14.
    assert!(
        px([0xe6, 0x00, 0x7e]) >= 2 * bad_after * 30 * 12,
        "NaN cells not drawn"
    );
    // The ramp's ends (each map's row minima and maxima) and the
    // priority bars.
    assert!(px([0x44, 0x01, 0x54]) > 300, "low heatmap cells not drawn");
    assert!(px([0xfd, 0xe7, 0x25]) > 300, "high heatmap cells not drawn");
    assert!(px([0x27, 0xae, 0x60]) > 200, "priority histogram not drawn");
    // Lines, points and the new-bytes bars share one blue.
    assert!(px([0x2f, 0x80, 0xed]) > 500, "curves and bars not drawn");
    assert!(px([0xf2, 0x99, 0x4a]) > 20, "best points not marked");
}
