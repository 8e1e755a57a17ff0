//! `ckptdb report` on a run where a NaN appears at a known step and key
//! (and an Inf later in another): the report names exactly that step and
//! key first, and every norm and relative change is the one computed here
//! from the tensors the test wrote.

#![cfg(feature = "cli")]

mod common;

use ckptdb::ndarray::Array1;
use ckptdb::Db;
use common::{ckptdb, json};

const STEPS: [u64; 5] = [10, 20, 30, 40, 50];

fn weights(step: u64) -> Vec<f32> {
    (0..300)
        .map(|i| ((i as f32) * 0.01 + step as f32 * 0.001).sin())
        .collect()
}

fn l2(xs: &[f32]) -> f64 {
    xs.iter()
        .filter(|x| x.is_finite())
        .map(|&x| (x as f64) * (x as f64))
        .sum::<f64>()
        .sqrt()
}

/// `policy/fc.weight` changes every step; `policy/fc.bias` holds a NaN from
/// step 30 on; `optimizer/m` is unchanged until it holds an Inf at 40.
/// Returns the weights written at each step.
fn make(path: &std::path::Path) -> Vec<Vec<f32>> {
    let db = Db::open(path).unwrap();
    let mut written = Vec::new();
    for &s in &STEPS {
        let w = weights(s);
        let mut b = vec![0.5f32; 16];
        if s >= 30 {
            b[7] = f32::NAN;
        }
        let mut m = vec![2.0f32; 40];
        if s >= 40 {
            m[3] = f32::INFINITY;
        }
        let mut tx = db.begin_step(s).unwrap();
        tx.put_tensor("policy/fc.weight", &Array1::from(w.clone()))
            .unwrap();
        tx.put_tensor("policy/fc.bias", &Array1::from(b)).unwrap();
        tx.put_tensor("optimizer/m", &Array1::from(m)).unwrap();
        tx.put_value("config", &serde_json::json!({"lr": 0.1}))
            .unwrap();
        tx.put_metric("loss", 1.0 / s as f64).unwrap();
        tx.commit().unwrap();
        written.push(w);
    }
    written
}

#[test]
fn names_the_first_nan_first_with_exact_figures() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("run.ckpt");
    let written = make(&path);
    let out = dir.path().join("r.html");
    let v = json(&[
        "report",
        path.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
    ]);

    let bad = v["first_bad"].as_array().unwrap();
    assert_eq!(bad.len(), 2, "{bad:?}");
    assert_eq!(bad[0]["key"], "policy/fc.bias");
    assert_eq!(bad[0]["step"], 30);
    assert_eq!(
        (bad[0]["nan"].as_u64(), bad[0]["inf"].as_u64()),
        (Some(1), Some(0))
    );
    assert_eq!(bad[1]["key"], "optimizer/m");
    assert_eq!(bad[1]["step"], 40);
    assert_eq!(
        (bad[1]["nan"].as_u64(), bad[1]["inf"].as_u64()),
        (Some(0), Some(1))
    );

    // Norms and relative changes, against the written values.
    let keys = v["keys"].as_array().unwrap();
    let names: Vec<&str> = keys.iter().map(|k| k["key"].as_str().unwrap()).collect();
    assert_eq!(names, ["optimizer/m", "policy/fc.bias", "policy/fc.weight"]);
    let weight_cells = keys[2]["cells"].as_array().unwrap();
    for (i, w) in written.iter().enumerate() {
        let c = &weight_cells[i];
        let got = c["l2"].as_f64().unwrap();
        // f32 tensors are summed in f32 blocks: within 1e-5.
        assert!(
            (got - l2(w)).abs() < 1e-5 * l2(w),
            "step {i}: {got} vs {}",
            l2(w)
        );
        if i == 0 {
            assert!(c["rel_change"].is_null());
        } else {
            let prev = &written[i - 1];
            let d: Vec<f32> = w.iter().zip(prev).map(|(a, b)| a - b).collect();
            let want = l2(&d) / l2(prev);
            let rel = c["rel_change"].as_f64().unwrap();
            assert!(
                (rel - want).abs() < 1e-4 * want,
                "step {i}: {rel} vs {want}"
            );
        }
    }
    // optimizer/m is one stored entry at 10..30 (dedup): no change, shared.
    let m = keys[0]["cells"].as_array().unwrap();
    assert_eq!(m[1]["shared"], true);
    assert_eq!(m[1]["rel_change"].as_f64(), Some(0.0));
    assert_eq!(m[0]["l2"].as_f64(), Some((40.0f64 * 4.0).sqrt()));
    assert_eq!(m[3]["inf"].as_u64(), Some(1));
    assert_eq!(m[3]["l2"].as_f64(), Some((39.0f64 * 4.0).sqrt()));
    let bias = keys[1]["cells"].as_array().unwrap();
    assert_eq!(bias[2]["nan"].as_u64(), Some(1));

    // Each stored entry was summarized once: weight 5 versions, bias 2
    // (0.5s; with the NaN), m 2 (finite; with the Inf).
    assert_eq!(v["entries_read"].as_u64(), Some(5 + 2 + 2));

    // The page lists the same two, in that order, at the top.
    let page = std::fs::read_to_string(&out).unwrap();
    let first = page
        .find("class=\"bad-row\" data-key=\"policy/fc.bias\" data-step=\"30\"")
        .unwrap();
    let second = page
        .find("class=\"bad-row\" data-key=\"optimizer/m\" data-step=\"40\"")
        .unwrap();
    let heatmap = page.find("id=\"heatmaps\"").unwrap();
    assert!(first < second && second < heatmap);

    // And the text summary says it in one line.
    let r = ckptdb(&[
        "report",
        path.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
    ]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(
        r.stdout
            .contains("first bad step: policy/fc.bias at step 30 (1 NaN, 0 Inf), and 1 more key"),
        "{}",
        r.stdout
    );
}
