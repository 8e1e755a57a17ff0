//! Double DQN on CartPole, checkpointed into ckptdb.
//!
//! Everything the run needs to continue is in the database: both networks,
//! the Adam moments, the replay buffer, the random generator, the episode in
//! progress and the counters. Kill the process at any moment (even with
//! SIGKILL) and run the same command again: it resumes from the newest
//! snapshot and ends with exactly the weights an uninterrupted run ends with.
//!
//! ```sh
//! cargo run --release --example dqn_cartpole               # train (resumes if the db exists)
//! cargo run --release --example dqn_cartpole -- --fresh    # start over
//! ```

mod agent;
mod cartpole;
mod checkpoint;
mod mlp;
mod replay;

use std::path::PathBuf;
use std::time::Instant;

use clap::Parser;
use indicatif::{ProgressBar, ProgressStyle};
use rand::SeedableRng;
use rand_pcg::Pcg64Mcg;

use agent::{Agent, Config};
use cartpole::CartPole;
use checkpoint::{Counters, Run};

#[derive(Parser, Debug)]
#[command(about = "Double DQN on CartPole, checkpointed into ckptdb")]
struct Args {
    /// The database directory.
    #[arg(long, default_value = "runs/cartpole.ckpt")]
    db: PathBuf,
    /// Environment steps to train for in total.
    #[arg(long, default_value_t = 60_000)]
    steps: u64,
    /// Seed of every random choice of the run.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Save a snapshot every this many steps.
    #[arg(long, default_value_t = 1_000)]
    save_every: u64,
    /// Delete the database and start over.
    #[arg(long)]
    fresh: bool,
    /// Size of the database's segment files, in MiB: space of dropped
    /// snapshots comes back a segment at a time.
    #[arg(long, default_value_t = 16)]
    segment_mib: u64,
    /// No progress bar (for logs and tests).
    #[arg(long)]
    quiet: bool,
}

/// Average greedy return over `episodes` episodes, with a generator derived
/// from the step so that evaluating never disturbs training.
fn evaluate(agent: &Agent, seed: u64, step: u64, episodes: usize) -> f64 {
    let mut rng = Pcg64Mcg::seed_from_u64(seed ^ step.wrapping_mul(0x9E37_79B9_7F4A_7C15));
    let mut total = 0.0;
    for _ in 0..episodes {
        let mut env = CartPole::reset(&mut rng);
        loop {
            let o = env.step(agent.greedy(env.observation()));
            total += f64::from(o.reward);
            if o.terminated || o.truncated {
                break;
            }
        }
    }
    total / episodes as f64
}

fn main() -> std::process::ExitCode {
    match run(Args::parse()) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            // The message, not the `Debug` form of the error.
            eprintln!("error: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run(args: Args) -> Result<(), Box<dyn std::error::Error>> {
    if args.fresh {
        // Through the writer lock: refused while another trainer writes the
        // database, instead of deleting it under that trainer.
        ckptdb::Db::destroy(&args.db)?;
    }
    if let Some(parent) = args.db.parent() {
        std::fs::create_dir_all(parent)?;
    }
    let cfg = Config::default();
    let run = Run::open(&args.db, args.seed, args.save_every, args.segment_mib << 20)?;
    let (mut agent, mut rng, mut env, mut c) = match run.restore(&cfg)? {
        Some(state) => state,
        None => {
            let mut rng = Pcg64Mcg::seed_from_u64(args.seed);
            let agent = Agent::new(cfg.clone(), &mut rng);
            let env = CartPole::reset(&mut rng);
            (agent, rng, env, Counters::default())
        }
    };
    let mut table = run.replay_table(cfg.capacity)?;
    let resumed_from = c.step;
    if resumed_from > 0 {
        println!("resumed from step {resumed_from} in {}", args.db.display());
    } else {
        println!("new run in {}", args.db.display());
    }

    let bar = if args.quiet {
        ProgressBar::hidden()
    } else {
        ProgressBar::new(args.steps)
    };
    bar.set_style(
        ProgressStyle::with_template("{bar:30} {pos}/{len} steps  {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar.set_position(c.step.min(args.steps));
    let started = Instant::now();
    let mut loss = f32::NAN;
    let mut best_eval = run.best_eval();
    while c.step < args.steps {
        c.step += 1;
        let obs = env.observation();
        let action = agent.act(obs, c.step, &mut rng);
        let out = env.step(action);
        c.episode_return += f64::from(out.reward);
        replay::push(
            &mut table,
            obs,
            action as i64,
            out.reward,
            env.observation(),
            out.terminated,
        )?;
        if out.terminated || out.truncated {
            c.episode += 1;
            c.push_return(c.episode_return);
            c.episode_return = 0.0;
            env = CartPole::reset(&mut rng);
        }
        if c.step > cfg.warmup {
            let batch = replay::sample(&table, cfg.batch, &mut rng)?;
            loss = agent.train(&batch);
        }
        if c.step % cfg.target_sync == 0 {
            agent.sync_target();
        }
        if run.should_save(c.step) || c.step == args.steps {
            let eval = evaluate(&agent, args.seed, c.step, 10);
            best_eval = best_eval.max(eval);
            run.save(&agent, &mut table, &rng, &env, &c, eval, loss)?;
            c.checkpoints += 1;
        }
        if c.step % 250 == 0 {
            bar.set_position(c.step);
            bar.set_message(format!(
                "episode {}  recent return {:.1}  best eval {:.1}  checkpoints {}",
                c.episode,
                c.recent_return(),
                best_eval,
                c.checkpoints
            ));
        }
    }
    bar.finish_and_clear();

    let db = args.db.display();
    println!(
        "trained {} steps ({} this run, resumed from step {resumed_from}) in {:.1}s",
        c.step,
        c.step - resumed_from,
        started.elapsed().as_secs_f64()
    );
    println!(
        "episodes {}  recent return {:.1}  best evaluation return {:.1} (solved at >= 195)",
        c.episode,
        c.recent_return(),
        best_eval
    );
    println!("checkpoints in {db}: steps {:?}", run.steps());
    println!();
    println!("inspect the run:");
    println!("  cargo run --release -- ls {db}");
    println!("  cargo run --release -- show {db} best:eval_return");
    println!("  cargo run --release -- stats {db} latest online/l0.weight");
    println!("  cargo run --release -- verify {db}");
    Ok(())
}
