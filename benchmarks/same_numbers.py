"""Does a refactor of ddpg.py change a single number? Train an old ddpg.py (a git revision or a file)
and the working tree's side by side, same seeds, same machine, and compare bit for bit: the final
weights and optimizer states, the noise state, the RNG states and every evaluation return.

    python benchmarks/same_numbers.py --old d16e906            # the default configurations
    python benchmarks/same_numbers.py --old old_ddpg.py --env-id HopperBulletEnv-v0 --steps 2000

It also resumes the old file's checkpoint with the new file (a checkpoint written before the change must
go on exactly as the old file would have gone on) unless --no-resume. Exit code 0 only if all match.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
import ddpg  # noqa: E402
CONFIGS = {  # name -> flags beyond the common ones
    "ddpg": [],
    "td3+param": ["--num-q", "2", "--policy-delay", "2", "--target-noise", "0.2", "--noise-type", "param",
                  "--param-noise-adapt-interval", "10"],
    "ou+3q-mean+ln+uniform": ["--noise-type", "ou", "--num-q", "3", "--q-reduce", "mean", "--q-data-fraction", "0.5",
                              "--actor-layer-norm", "--critic-layer-norm", "--weights-init", "uniform",
                              "--bias-init", "uniform"],
    "bursts+target-interval": ["--update-every", "4", "--updates-per-step", "2", "--target-update-interval", "2"],
}


def run(script: Path, runs: Path, flags: list[str]) -> Path:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONHASHSEED="0", WANDB_MODE="offline")
    proc = subprocess.run([sys.executable, str(script), *flags, "--runs-dir", str(runs)], capture_output=True,
                          text=True, env=env, cwd=script.parent)
    if proc.returncode != 0:
        sys.exit(f"error: {script} {' '.join(flags)} failed:\n{proc.stderr[-2000:]}")
    (run_dir,) = [p for p in runs.iterdir() if p.is_dir()]
    return run_dir


def flatten(obj, prefix="") -> dict:
    """Every tensor, array and number of a checkpoint, by its path."""
    out = {}
    if isinstance(obj, dict):
        for k, v in obj.items():
            out.update(flatten(v, f"{prefix}/{k}"))
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            out.update(flatten(v, f"{prefix}/{i}"))
    elif isinstance(obj, torch.Tensor):
        out[prefix] = obj
    elif hasattr(obj, "tobytes"):  # numpy
        out[prefix] = torch.as_tensor(obj.copy()) if obj.dtype.kind in "fiub" else obj.tobytes()
    elif isinstance(obj, (int, float, str, bool)) or obj is None:
        out[prefix] = obj
    return out


def compare(a: Path, b: Path, name: str) -> list[str]:
    """Differences between two run folders' final checkpoints and summaries."""
    diffs = []
    for ckpt in ["final.pt", "latest.pt"]:
        # read by the working tree's ddpg.py, which reads every checkpoint format in today's layout
        x, y = (ddpg.load_checkpoint(run_dir / "checkpoints" / ckpt) for run_dir in (a, b))
        for c in (x, y):
            c["stats"] = {k: v for k, v in c["stats"].items() if k in ("learn_steps", "eval_returns")}  # not times
        keys = ["learner", "noise", "loop", "rng", "stats", "buffer"]
        fx, fy = flatten({k: x.get(k) for k in keys}), flatten({k: y.get(k) for k in keys})
        if fx.keys() != fy.keys():
            diffs.append(f"{name} {ckpt}: different contents {sorted(set(fx) ^ set(fy))[:5]}")
        for k in sorted(set(fx) & set(fy)):
            u, v = fx[k], fy[k]
            same = torch.equal(u, v) if isinstance(u, torch.Tensor) and isinstance(v, torch.Tensor) else u == v
            if not same:
                diffs.append(f"{name} {ckpt}{k}: differs")
    sa, sb = (json.loads((p / "summary.json").read_text()) for p in (a, b))
    for s in (sa, sb):  # summary.json's "steps" was "total_steps" before 2026-12
        s.setdefault("steps", s.get("total_steps"))
    for key in ["eval_returns", "final_eval_return_mean", "final_eval_return_std", "steps", "episodes"]:
        if sa[key] != sb[key]:
            diffs.append(f"{name} summary {key}: {sa[key]} != {sb[key]}")
    return diffs


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--old", required=True, help="a git revision of this repository, or a path to an old ddpg.py")
    p.add_argument("--new", default=str(REPO / "ddpg.py"), help="the new ddpg.py (default: the working tree's)")
    p.add_argument("--env-id", default="Pendulum-v1")
    p.add_argument("--steps", type=int, default=3000, help="steps per run; the resume check trains twice as long")
    p.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    p.add_argument("--no-resume", action="store_true", help="skip resuming the old file's checkpoints")
    a = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        old = tmp / "old" / "ddpg.py"
        old.parent.mkdir()
        if Path(a.old).is_file():
            old.write_bytes(Path(a.old).read_bytes())
        else:
            old.write_bytes(subprocess.run(["git", "show", f"{a.old}:ddpg.py"], cwd=REPO, check=True,
                                           capture_output=True).stdout)
        new = Path(a.new).resolve()
        common = ["--env-id", a.env_id, "--total-steps", str(a.steps), "--start-steps", str(a.steps // 6),
                  "--batch-size", "64", "--hidden-sizes", "64", "64", "--eval-every", str(a.steps // 3),
                  "--eval-episodes", "2", "--save-every", str(a.steps // 2), "--save-buffer", "--log-every",
                  str(a.steps // 3), "--seed", "7", "--no-cuda", "--torch-threads", "1"]
        failures = []
        for name in a.configs:
            flags = [*common, *CONFIGS[name]]
            runs = {side: tmp / name.replace("+", "_") / side for side in ("old", "new")}
            dirs = {side: run(script, runs[side], flags) for side, script in (("old", old), ("new", new))}
            diffs = compare(dirs["old"], dirs["new"], name)
            if not a.no_resume:  # the old run's checkpoint, resumed by the old and by the new file
                longer = ["--total-steps", str(2 * a.steps)]
                resumed = {}
                for side, script in (("old", old), ("new", new)):
                    copy = tmp / name.replace("+", "_") / f"resume-{side}"
                    subprocess.run(["cp", "-r", str(dirs["old"].parent), str(copy)], check=True)
                    (run_dir,) = [q for q in copy.iterdir() if q.is_dir()]
                    subprocess.run([sys.executable, str(script), "--resume", str(run_dir), *longer],
                                   capture_output=True, env=dict(os.environ, OMP_NUM_THREADS="1"), check=True)
                    resumed[side] = run_dir
                diffs += compare(resumed["old"], resumed["new"], f"{name} (old checkpoint resumed)")
            final = json.loads((dirs["new"] / "summary.json").read_text())["final_eval_return_mean"]
            print(f"{name:28s} {'identical' if not diffs else 'DIFFERENT'} (final eval return {final:.4f})", flush=True)
            failures += diffs
        for d in failures[:20]:
            print("  " + d)
        return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
