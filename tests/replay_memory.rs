//! A 1M-capacity table of CartPole rows keeps its rows in the file, not on
//! the heap: under 16 MiB of heap beyond the page being filled, uniform or
//! prioritized.

mod replay_util;

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, Ordering};

use ckptdb::replay::{Field, ReplayOptions};
use ckptdb::Db;
use rand::rngs::StdRng;
use rand::SeedableRng;
use replay_util::*;

/// Counts live heap bytes.
struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        LIVE.fetch_add(l.size() as isize, Ordering::Relaxed);
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        LIVE.fetch_sub(l.size() as isize, Ordering::Relaxed);
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
        LIVE.fetch_add(new as isize - l.size() as isize, Ordering::Relaxed);
        unsafe { System.realloc(p, l, new) }
    }
}

#[global_allocator]
static A: Counting = Counting;

const MIB: isize = 1 << 20;

fn fill_and_measure(prioritized: bool) {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open(dir.path().join("run.ckpt")).unwrap();
    let cap = 1_000_000u64;
    let page = 4096u64;
    let mut opts = ReplayOptions::new(cap, page);
    if prioritized {
        opts = opts.prioritized(0.6);
    }
    let base = LIVE.load(Ordering::Relaxed);
    let mut t = db.replay_table("buf", &cartpole(), opts).unwrap();
    let x = transition(5);
    for i in 0..cap + cap / 3 {
        let a = i as i64;
        t.push(&[
            Field::vector("obs", &x.obs),
            Field::scalar("action", &a),
            Field::scalar("reward", &x.reward),
            Field::vector("next_obs", &x.next_obs),
            Field::scalar("terminated", &x.terminated),
            Field::scalar("truncated", &x.truncated),
        ])
        .unwrap();
    }
    let mut tx = db.begin_step(1).unwrap();
    tx.put_replay(&mut t).unwrap();
    tx.commit().unwrap();
    let mut rng = StdRng::seed_from_u64(0);
    let b = if prioritized {
        t.sample_prioritized(&mut rng, 256, 0.4).unwrap()
    } else {
        t.sample_uniform(&mut rng, 256).unwrap()
    };
    drop(b);
    let used = LIVE.load(Ordering::Relaxed) - base;
    let page_bytes = (page as usize * ROW_BYTES) as isize;
    eprintln!(
        "prioritized={prioritized}: {} KiB of heap beyond the page",
        (used - page_bytes) >> 10
    );
    assert!(
        used - page_bytes < 16 * MIB,
        "{} MiB of heap for a table of {} MiB of rows",
        used / MIB,
        (cap as usize * ROW_BYTES) >> 20
    );
    // The rows really are all there.
    assert_eq!(t.len(), cap);
    assert_eq!(
        t.get(0).unwrap().scalar::<i64>("action").unwrap(),
        (cap / 3) as i64
    );
    assert_eq!(
        t.get(cap - 1).unwrap().scalar::<i64>("action").unwrap(),
        (cap + cap / 3 - 1) as i64
    );
}

#[test]
fn a_million_row_table_stays_small_on_the_heap() {
    fill_and_measure(false);
    fill_and_measure(true);
}
