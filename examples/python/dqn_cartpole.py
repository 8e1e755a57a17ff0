"""Double DQN on CartPole in NumPy, checkpointed through ckptdb.

The Python counterpart of the Rust main job (``examples/dqn_cartpole``):
CartPole is implemented below, the Q-network is a small MLP trained with
Adam, and every ``--save-every`` steps the manager saves, asynchronously,
everything the run needs to continue exactly: both networks, the Adam
moments, the replay buffer (a ckptdb replay table), the random generator's
state, the episode in progress and the counters.

Kill it at any moment (``kill -9`` included) and run it again: it resumes
from the newest snapshot and ends with exactly the weights an
uninterrupted run ends with (it prints their sha256 at the end).

    python examples/python/dqn_cartpole.py --path runs/cartpole-py.ckpt --steps 20000
"""

import argparse
import hashlib
import math
import sys
import time

import numpy as np

import ckptdb

SCHEMA = "obs: f32[4], action: i64[], reward: f32[], next_obs: f32[4], terminated: bool[]"
PARAMS = ("w1", "b1", "w2", "b2", "w3", "b3")


class CartPole:
    """The classic control task (Barto, Sutton and Anderson 1983), with the
    constants and Euler integration of the usual Gym implementation."""

    gravity, masscart, masspole, length, force_mag, tau = 9.8, 1.0, 0.1, 0.5, 10.0, 0.02
    theta_limit = 12 * 2 * math.pi / 360
    x_limit = 2.4
    max_steps = 500

    def __init__(self, rng: np.random.Generator):
        self.rng = rng
        self.state = np.zeros(4, np.float64)
        self.t = 0

    def reset(self) -> np.ndarray:
        self.state = self.rng.uniform(-0.05, 0.05, size=4)
        self.t = 0
        return self.state.astype(np.float32)

    def step(self, action: int):
        x, x_dot, theta, theta_dot = self.state
        force = self.force_mag if action == 1 else -self.force_mag
        total_mass = self.masspole + self.masscart
        pml = self.masspole * self.length
        cos, sin = math.cos(theta), math.sin(theta)
        temp = (force + pml * theta_dot**2 * sin) / total_mass
        theta_acc = (self.gravity * sin - cos * temp) / (
            self.length * (4.0 / 3.0 - self.masspole * cos**2 / total_mass)
        )
        x_acc = temp - pml * theta_acc * cos / total_mass
        x += self.tau * x_dot
        x_dot += self.tau * x_acc
        theta += self.tau * theta_dot
        theta_dot += self.tau * theta_acc
        self.state = np.array([x, x_dot, theta, theta_dot])
        self.t += 1
        terminated = abs(x) > self.x_limit or abs(theta) > self.theta_limit
        truncated = self.t >= self.max_steps
        return self.state.astype(np.float32), 1.0, terminated, truncated


def init_params(rng: np.random.Generator, hidden: int = 64):
    def layer(n_in, n_out):
        bound = 1.0 / math.sqrt(n_in)
        w = rng.uniform(-bound, bound, size=(n_in, n_out)).astype(np.float32)
        return w, np.zeros(n_out, np.float32)

    w1, b1 = layer(4, hidden)
    w2, b2 = layer(hidden, hidden)
    w3, b3 = layer(hidden, 2)
    return dict(w1=w1, b1=b1, w2=w2, b2=b2, w3=w3, b3=b3)


def forward(p, x):
    h1 = np.maximum(x @ p["w1"] + p["b1"], 0)
    h2 = np.maximum(h1 @ p["w2"] + p["b2"], 0)
    return h2 @ p["w3"] + p["b3"], (x, h1, h2)


def grads(p, cache, dq):
    x, h1, h2 = cache
    g = {"w3": h2.T @ dq, "b3": dq.sum(0)}
    dh2 = (dq @ p["w3"].T) * (h2 > 0)
    g["w2"], g["b2"] = h1.T @ dh2, dh2.sum(0)
    dh1 = (dh2 @ p["w2"].T) * (h1 > 0)
    g["w1"], g["b1"] = x.T @ dh1, dh1.sum(0)
    return g


class Adam:
    def __init__(self, params, lr=1e-3, b1=0.9, b2=0.999, eps=1e-8):
        self.lr, self.b1, self.b2, self.eps = lr, b1, b2, eps
        self.m = {k: np.zeros_like(v) for k, v in params.items()}
        self.v = {k: np.zeros_like(v) for k, v in params.items()}
        self.t = 0

    def update(self, params, g):
        self.t += 1
        c1 = 1 - self.b1**self.t
        c2 = 1 - self.b2**self.t
        for k in params:
            self.m[k] = self.b1 * self.m[k] + (1 - self.b1) * g[k]
            self.v[k] = self.b2 * self.v[k] + (1 - self.b2) * g[k] * g[k]
            params[k] -= (self.lr * (self.m[k] / c1) / (np.sqrt(self.v[k] / c2) + self.eps)).astype(
                np.float32
            )


def train_step(online, target, opt, batch, gamma=0.99):
    q, cache = forward(online, batch["obs"])
    q_next_online, _ = forward(online, batch["next_obs"])
    q_next_target, _ = forward(target, batch["next_obs"])
    best = q_next_online.argmax(1)  # Double DQN: online picks, target evaluates
    next_v = q_next_target[np.arange(len(best)), best]
    y = batch["reward"] + gamma * next_v * (~batch["terminated"])
    idx = np.arange(len(y))
    err = q[idx, batch["action"]] - y
    derr = np.clip(err, -1.0, 1.0) / len(y)  # Huber loss gradient
    dq = np.zeros_like(q)
    dq[idx, batch["action"]] = derr
    opt.update(online, grads(online, cache, dq))


def weights_digest(online, target) -> str:
    h = hashlib.sha256()
    for k in PARAMS:
        h.update(np.ascontiguousarray(online[k]).tobytes())
        h.update(np.ascontiguousarray(target[k]).tobytes())
    return h.hexdigest()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--path", default="runs/cartpole-py.ckpt")
    ap.add_argument("--steps", type=int, default=20_000)
    ap.add_argument("--save-every", type=int, default=1_000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--capacity", type=int, default=50_000)
    args = ap.parse_args(argv)

    mgr = ckptdb.CheckpointManager(
        args.path,
        save_every_steps=args.save_every,
        keep_last=3,
        keep_best=("eval_return", 1, "max"),
    )
    table = mgr.db.replay_table("buffer", SCHEMA, capacity=args.capacity, page_size=1024)
    snap = mgr.restore_latest()
    rng = np.random.Generator(np.random.PCG64(args.seed))
    env = CartPole(rng)
    if snap is None:
        online = init_params(rng)
        target = {k: v.copy() for k, v in online.items()}
        opt = Adam(online)
        step, episodes, ep_return, recent = 0, 0, 0.0, []
        obs = env.reset()
        print("fresh run", flush=True)
    else:
        # Arrays from a snapshot are read-only views of the file: copy the
        # ones training changes.
        online = {k: np.array(snap[f"online/{k}"]) for k in PARAMS}
        target = {k: np.array(snap[f"target/{k}"]) for k in PARAMS}
        opt = Adam(online)
        opt.m = {k: np.array(snap[f"adam/m/{k}"]) for k in PARAMS}
        opt.v = {k: np.array(snap[f"adam/v/{k}"]) for k in PARAMS}
        counters = snap.value("counters")
        opt.t, episodes, ep_return = counters["adam_t"], counters["episodes"], counters["ep_return"]
        recent = counters["recent"]
        rng.bit_generator.state = snap.value("rng")
        env.state = np.array(snap["env/state"])
        env.t = counters["env_t"]
        obs = np.array(snap["env/obs"])
        step = snap.step
        print(f"resumed from step {step}", flush=True)

    started = time.perf_counter()
    first = step
    while step < args.steps:
        step += 1
        eps = max(0.05, 1.0 - step / 10_000)
        if rng.random() < eps:
            action = int(rng.integers(2))
        else:
            q, _ = forward(online, obs[None, :])
            action = int(q[0].argmax())
        next_obs, reward, terminated, truncated = env.step(action)
        table.push(obs=obs, action=action, reward=reward, next_obs=next_obs, terminated=terminated)
        ep_return += reward
        obs = next_obs
        if terminated or truncated:
            episodes += 1
            recent = (recent + [ep_return])[-20:]
            ep_return = 0.0
            obs = env.reset()
        if len(table) >= 500:
            batch = table.sample(64, seed=int(rng.integers(2**63)))
            train_step(online, target, opt, batch)
        if step % 500 == 0:
            target = {k: v.copy() for k, v in online.items()}
        if mgr.should_save(step):
            tensors = {f"online/{k}": v for k, v in online.items()}
            tensors.update({f"target/{k}": v for k, v in target.items()})
            tensors.update({f"adam/m/{k}": v for k, v in opt.m.items()})
            tensors.update({f"adam/v/{k}": v for k, v in opt.v.items()})
            tensors["env/state"] = env.state
            tensors["env/obs"] = obs
            counters = dict(adam_t=opt.t, episodes=episodes, ep_return=ep_return,
                            recent=recent, env_t=env.t)
            mean_return = float(np.mean(recent)) if recent else 0.0
            mgr.save_async(
                step,
                tensors,
                metrics={"eval_return": mean_return},
                values={"counters": counters, "rng": rng.bit_generator.state},
                replay=[table],
            )
            print(f"step {step}  episodes {episodes}  recent return {mean_return:.1f}", flush=True)
    mgr.flush()
    took = time.perf_counter() - started
    print(f"trained {args.steps} steps ({args.steps - first} this run) in {took:.1f}s", flush=True)
    print(f"checkpoints in {args.path}: steps {mgr.db.steps}", flush=True)
    print(f"weights sha256 {weights_digest(online, target)}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
