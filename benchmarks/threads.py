"""Which thread policy should ddpg.py use by default? Learning-phase steps/s of real ddpg.py runs
under each policy, on an idle machine and with N busy processes competing for the cores.

    python benchmarks/threads.py                      # HopperBulletEnv-v0, loads 0 1 2, 3 repeats, ~15 min
    python benchmarks/threads.py --loads 0 1 --repeats 2 --steps 2500 --env-id Pendulum-v1

Policies (each a fresh `python ddpg.py` process; the runs of one repetition are interleaved, so the
machine's drift hits every policy alike):
  spin:       torch's default thread count (one per core), libgomp's default spin-wait: ddpg.py's default
              before 2026-12
  1-thread:   --torch-threads 1: ddpg.py's default in 2026-12, until free-cores
  free-cores: --torch-threads 0, ddpg.py's default now: as many threads as the cores other processes
              leave free, re-measured every 2 s (FreeCores in ddpg.py)
  spin-10k, passive (not run by default): torch's thread count with a short spin, then sleep
              (GOMP_SPINCOUNT=10000), or with idle threads sleeping at once (OMP_WAIT_POLICY=PASSIVE)
A busy process is a pure-Python loop (`while True: pass`), the kind of neighbour a laptop, a CI runner or
a shared node has. Prints a markdown table (median and min-max steps/s, ratios) and writes it to --out.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TORCH = "{torch}"  # replaced by torch's default thread count on this machine
POLICIES = {  # name -> (extra environment, extra ddpg.py flags)
    "spin": ({}, ["--torch-threads", TORCH]),  # torch's threads, libgomp's default spin-wait: before 2026-12
    "1-thread": ({}, ["--torch-threads", "1"]),
    "free-cores": ({}, ["--torch-threads", "0"]),  # the default: threads follow the free cores
    "spin-10k": ({"GOMP_SPINCOUNT": "10000"}, ["--torch-threads", TORCH]),  # a short spin, then sleep
    "passive": ({"OMP_WAIT_POLICY": "PASSIVE"}, ["--torch-threads", TORCH]),  # no spin: idle threads sleep at once
}
DEFAULT_POLICIES = ["spin", "1-thread", "free-cores"]
CLEAN_ENV = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OMP_WAIT_POLICY", "GOMP_SPINCOUNT")


def torch_default_threads() -> int:
    env = {k: v for k, v in os.environ.items() if k not in CLEAN_ENV}
    return int(subprocess.run([sys.executable, "-c", "import torch; print(torch.get_num_threads())"], env=env,
                              capture_output=True, text=True, check=True).stdout)


def busy(n: int) -> list[subprocess.Popen]:
    return [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(n)]


def one_run(policy: str, a, seed: int) -> float:
    extra_env, flags = POLICIES[policy]
    flags = [str(a.torch_threads) if f == TORCH else f for f in flags]
    env = {k: v for k, v in os.environ.items() if k not in CLEAN_ENV}
    env.update(extra_env)
    with tempfile.TemporaryDirectory() as runs:
        cmd = [sys.executable, str(ROOT / "ddpg.py"), "--env-id", a.env_id, "--total-steps", str(a.steps),
               "--start-steps", str(a.start_steps), "--eval-every", "1000000000", "--eval-episodes", "1",
               "--save-every", "1000000000", "--log-every", str(a.steps), "--seed", str(seed), "--no-cuda",
               "--runs-dir", runs, *flags]
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=a.timeout)
        if proc.returncode != 0:
            sys.exit(f"error: {policy} run failed: {proc.stderr.strip().splitlines()[-1:]}")
        (summary,) = Path(runs).glob("*/summary.json")
        return json.loads(summary.read_text())["learning_sps"]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--env-id", default="HopperBulletEnv-v0")
    p.add_argument("--loads", type=int, nargs="+", default=[0, 1, 2], help="busy processes competing (default: 0 1 2)")
    p.add_argument("--repeats", type=int, default=3, help="interleaved repetitions per load")
    p.add_argument("--steps", type=int, default=4000, help="steps per run (default: 4000)")
    p.add_argument("--start-steps", type=int, default=1000, help="random warm-up steps, not timed (default: 1000)")
    p.add_argument("--policies", nargs="+", default=DEFAULT_POLICIES, choices=list(POLICIES),
                   help=f"default: {' '.join(DEFAULT_POLICIES)}")
    p.add_argument("--timeout", type=float, default=900)
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "threads.md")
    a = p.parse_args()
    a.torch_threads = torch_default_threads()
    if a.steps <= a.start_steps or a.repeats < 1 or any(n < 0 for n in a.loads):
        p.error("need --steps > --start-steps, --repeats >= 1 and loads >= 0")
    results: dict[int, dict[str, list[float]]] = {}
    for load in a.loads:
        results[load] = {policy: [] for policy in a.policies}
        procs = busy(load)
        try:
            time.sleep(1.0 if load else 0.0)
            for rep in range(a.repeats):
                order = a.policies if rep % 2 == 0 else a.policies[::-1]  # alternate who goes first
                for policy in order:
                    sps = one_run(policy, a, seed=rep + 1)
                    results[load][policy].append(sps)
                    print(f"load {load} rep {rep + 1} {policy:8s} {sps:7.1f} steps/s", flush=True)
        finally:
            for proc in procs:
                proc.kill()
                proc.wait()

    def cell(xs: list[float]) -> str:
        return f"{statistics.median(xs):.0f} ({min(xs):.0f}-{max(xs):.0f})"

    cpus = os.cpu_count()
    lines = [f"# Thread policies: learning-phase steps/s of ddpg.py on {a.env_id}", "",
             f"{time.strftime('%Y-%m-%d %H:%M')}, {cpus} CPUs (torch's default: {a.torch_threads} threads), {a.steps} steps of which {a.start_steps} random; "
             f"median (min-max) of {a.repeats} interleaved runs. `python benchmarks/threads.py "
             f"--env-id {a.env_id} --loads {' '.join(map(str, a.loads))} --repeats {a.repeats} --steps {a.steps} "
             f"--policies {' '.join(a.policies)}`", "",
             "| busy processes | " + " | ".join(a.policies) + " |", "|---:|" + "---:|" * len(a.policies)]
    med = {load: {k: statistics.median(v) for k, v in by.items()} for load, by in results.items()}
    for load, by_policy in results.items():
        lines.append(f"| {load} | " + " | ".join(cell(by_policy[k]) for k in a.policies) + " |")
    lines += ["", "Ratios of the medians: to `1-thread` under the same load, and to `spin` (the old default) idle.", "",
              "| busy processes | " + " | ".join(f"{k} / 1-thread" for k in a.policies) + " | "
              + " | ".join(f"{k} / idle spin" for k in a.policies) + " |",
              "|---:|" + "---:|" * (2 * len(a.policies))]
    for load, m in med.items():
        to_one = [f"{m[k] / m['1-thread']:.2f}x" if "1-thread" in m else "-" for k in a.policies]
        to_spin = [f"{m[k] / med[0]['spin']:.2f}x" if 0 in med and "spin" in med[0] else "-" for k in a.policies]
        lines.append(f"| {load} | " + " | ".join(to_one + to_spin) + " |")
    text = "\n".join(lines) + "\n"
    print("\n" + text)
    a.out.write_text(text)
    (a.out.with_suffix(".json")).write_text(json.dumps({str(k): v for k, v in results.items()}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
