"""The Python main job: kill -9 and rerun ends bit-identical to one run."""

import os
import pathlib
import signal
import subprocess
import sys

EXAMPLE = pathlib.Path(__file__).resolve().parents[2] / "examples" / "python" / "dqn_cartpole.py"
ARGS = ["--steps", "3000", "--save-every", "500", "--capacity", "2000"]
# One BLAS thread: the same sums in the same order in every run.
ENV = dict(os.environ, OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")


def run(path):
    out = subprocess.run(
        [sys.executable, str(EXAMPLE), "--path", str(path), *ARGS],
        env=ENV, capture_output=True, text=True, check=True,
    ).stdout
    return out


def digest(out):
    lines = [l for l in out.splitlines() if l.startswith("weights sha256 ")]
    assert len(lines) == 1, out
    return lines[0].split()[-1]


def run_and_kill_after(path, marker):
    p = subprocess.Popen(
        [sys.executable, str(EXAMPLE), "--path", str(path), *ARGS],
        env=ENV, stdout=subprocess.PIPE, text=True,
    )
    seen = []
    for line in p.stdout:
        seen.append(line)
        if line.startswith(marker):
            break
    # Killed right after a save was handed over: its commit may be in flight.
    os.kill(p.pid, signal.SIGKILL)
    p.wait()
    return "".join(seen)


def test_kill_9_and_resume_is_bit_identical(tmp_path):
    whole = digest(run(tmp_path / "whole.ckpt"))
    cut = tmp_path / "cut.ckpt"
    first = run_and_kill_after(cut, "step 1000 ")
    assert "fresh run" in first
    second = run_and_kill_after(cut, "step 2000 ")
    assert "resumed from step " in second
    last = run(cut)
    assert "resumed from step " in last
    assert digest(last) == whole
