"""Run a grid of ddpg.py trainings: every (environment, grid point, seed) as its own process.

    python experiments/sweep.py --name noise --env-id Pendulum-v1 --seeds 1 2 3 \\
        --grid noise-type=gaussian,ou,param --grid target-noise=0,0.2 -- --total-steps 50000
    python experiments/sweep.py --config experiments/configs/noise.toml   (or just --config noise)

Each trial gets a deterministic exp-name built from the sweep name and its grid point
(e.g. noise_noise-type-ou_target-noise-0.2), so a re-run finds its run folder: trials whose
summary.json says "finished" are skipped, interrupted ones are resumed from their checkpoint,
the rest run. Trials run as local processes (--workers at a time, one CPU thread each) or, with
--ray-address, as tasks on a Ray cluster whose run folders come back into the local runs folder.
A failed trial is reported with the tail of its log and never stops the others; the sweep exits
with 1 if any trial failed, 130 if it was interrupted, 2 on bad input.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import hashlib
import io
import itertools
import json
import logging
import os
import re
import shlex
import signal
import subprocess
import sys
import tarfile
import tempfile
import time
import tomllib
from collections import deque
from pathlib import Path

HERE = Path(__file__).resolve().parent
DDPG = HERE.parent / "ddpg.py"
CONFIGS = HERE / "configs"
# ddpg.py options the sweep sets itself, per trial or through its own flags.
RESERVED = {"env-id": "--env-id", "seed": "--seeds", "exp-name": "--name and the grid", "runs-dir": "--runs-dir",
            "torch-threads": "--threads", "cuda": "--cuda", "resume": "re-running the sweep",
            "eval-only": None, "checkpoint": None}
SWEEP_KEYS = {"name", "env_ids", "seeds", "workers", "runs_dir", "threads"}
MAX_NAME = 100  # longer exp-names are cut and end in a hash of the full name
LOG_TAIL = 20  # lines of a failed trial's log to show
POLL_S = 0.2


class SweepError(Exception):
    """Bad sweep input: argparse reports it as 'sweep.py: error: ...' with exit code 2."""


@dataclasses.dataclass(frozen=True)
class Trial:
    """One ddpg.py training: an environment, a grid point and a seed."""

    env_id: str
    seed: int
    point: tuple[tuple[str, object], ...]  # (kebab-case option, value) pairs of the grid point
    exp_name: str

    def label(self) -> str:
        return f"{self.env_id} {self.exp_name} seed {self.seed}"

    def log_name(self) -> str:
        return f"{sanitize(self.env_id.split(':')[-1])}__{self.exp_name}__{self.seed}.log"


@dataclasses.dataclass
class Sweep:
    """A whole experiment: which environments, seeds and options, and how to run it."""

    name: str
    env_ids: list[str]
    seeds: list[int]
    grid: dict[str, list]  # kebab-case option -> values
    fixed: dict[str, object]  # kebab-case option -> value, shared by every trial
    # named option sets, each crossed with the grid: for arms that differ in several options at once
    variants: dict[str, dict[str, object]] = dataclasses.field(default_factory=dict)
    extra: list[str] = dataclasses.field(default_factory=list)  # more ddpg.py arguments of every trial
    workers: int | None = None
    runs_dir: str | None = None
    threads: int = 0  # torch threads per trial; 0: ddpg.py's default, as many as the cores the others leave


@dataclasses.dataclass
class Job:
    """A trial to launch: its ddpg.py arguments (all but --runs-dir), or the interrupted run
    folder to resume instead, and its log file."""

    trial: Trial
    args: list[str]
    resume: Path | None
    log: Path
    before: frozenset[Path] = frozenset()  # the trial's run folders when the sweep started

    def run_folder(self, runs_dir: Path) -> RunFolder | None:
        """The folder this job trained into: the resumed one, else the newest new one."""
        runs = find_runs(runs_dir, self.trial)
        if self.resume is not None:
            return next((r for r in runs if r.path == self.resume), None)
        new = [r for r in runs if r.path not in self.before]
        return new[-1] if new else None


@dataclasses.dataclass
class RunFolder:
    """What a run folder of ddpg.py says about itself."""

    path: Path
    status: str | None  # summary.json's status; None while there is no summary.json
    final_return: float | None

    @property
    def resumable(self) -> bool:
        return self.status in (None, "interrupted") and (self.path / "checkpoints" / "latest.pt").is_file()


# ---------------------------------------------------------------------------------------------
# Grid expansion and ddpg.py arguments
# ---------------------------------------------------------------------------------------------


def kebab(key: str) -> str:
    """'target_noise', '--target-noise' -> 'target-noise'."""
    return key.strip().lstrip("-").replace("_", "-")


def sanitize(text: str) -> str:
    """Keep what ddpg.py accepts in an exp-name (letters, digits, '.', '+', '-'); '_' is the separator."""
    return re.sub(r"[^A-Za-z0-9.+-]+", "-", text).strip("-") or "x"


def value_text(value) -> str:
    """A grid value as it appears in an exp-name: 0.2, ou, true, 64-64."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, (list, tuple)):
        return "-".join(value_text(v) for v in value)
    return str(value)


def exp_name(sweep_name: str, point: tuple[tuple[str, object], ...], variant: str | None = None) -> str:
    """Deterministic, readable exp-name: sweep name, variant name, then key-value of each grid option."""
    name = "_".join([sanitize(sweep_name)] + ([sanitize(variant)] if variant else [])
                    + [f"{sanitize(k)}-{sanitize(value_text(v))}" for k, v in point])
    if len(name) > MAX_NAME:
        name = f"{name[:MAX_NAME - 9]}-{hashlib.sha1(name.encode()).hexdigest()[:8]}"
    return name


def option_args(key: str, value) -> list[str]:
    """One ddpg.py option as arguments: booleans as --flag/--no-flag, lists as several values."""
    key = kebab(key)
    if isinstance(value, bool):
        return [f"--{key}" if value else f"--no-{key}"]
    if isinstance(value, (list, tuple)):
        return [f"--{key}", *(str(v) for v in value)]
    return [f"--{key}", str(value)]


def expand(sweep: Sweep) -> list[Trial]:
    """Every (seed, env, grid point) combination, seed-major so that a half-done sweep already
    covers the whole grid. Raises SweepError if two grid points would share an exp-name."""
    keys = list(sweep.grid)
    points = [tuple(zip(keys, values, strict=True)) for values in itertools.product(*(sweep.grid[k] for k in keys))]
    variants = list(sweep.variants.items()) or [(None, {})]
    names = {}
    for variant, options in variants:
        for point in points:
            name = exp_name(sweep.name, point, variant)
            full = tuple(options.items()) + point
            if name in names:
                raise SweepError(f"grid points {dict(names[name])} and {dict(full)} both give exp-name {name!r}")
            names[name] = full
    return [Trial(env, seed, point, name) for seed in sweep.seeds for env in sweep.env_ids
            for name, point in names.items()]


def trial_args(sweep: Sweep, trial: Trial, cuda: bool) -> list[str]:
    """ddpg.py arguments of a trial, all but --runs-dir (which depends on where it runs)."""
    args = ["--env-id", trial.env_id, "--seed", str(trial.seed), "--exp-name", trial.exp_name,
            "--torch-threads", str(sweep.threads), "--cuda" if cuda else "--no-cuda"]
    for key, value in sweep.fixed.items():
        args += option_args(key, value)
    args += sweep.extra
    for key, value in trial.point:
        args += option_args(key, value)
    return args


def ddpg_command(script: Path, args: list[str], runs_dir: Path, resume: Path | None) -> list[str]:
    """The command line of one trial: a new run into runs_dir, or --resume of a run folder."""
    if resume is not None:
        return [sys.executable, str(script), "--resume", str(resume)]
    return [sys.executable, str(script), *args, "--runs-dir", str(runs_dir)]


def thread_pools(threads: int) -> dict[str, str]:
    """One BLAS/OpenMP pool of `threads` threads; none set for 0 (ddpg.py's threads then follow the free cores)."""
    return {"OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)} if threads else {}


def trial_env(threads: int) -> dict[str, str]:
    """Environment of a trial process: its thread pools (thread_pools), unbuffered output."""
    return {**os.environ, **thread_pools(threads), "PYTHONUNBUFFERED": "1"}


# ---------------------------------------------------------------------------------------------
# Sweep definition: TOML file and command line
# ---------------------------------------------------------------------------------------------


def parse_grid_value(text: str):
    """A value from --grid KEY=V1,V2: 'true'/'false' are booleans, '64 64' is a list."""
    text = text.strip()
    if text.lower() in ("true", "false"):
        return text.lower() == "true"
    parts = text.split()
    return parts if len(parts) > 1 else text


def parse_grid_option(text: str) -> tuple[str, list]:
    """'noise-type=gaussian,ou' -> ('noise-type', ['gaussian', 'ou'])."""
    key, sep, values = text.partition("=")
    if not sep or not kebab(key) or not values.strip():
        raise SweepError(f"--grid expects KEY=V1,V2,..., got {text!r}")
    return kebab(key), [parse_grid_value(v) for v in values.split(",")]


def config_path(name: str) -> Path:
    """A TOML path, or the name of a file in experiments/configs/."""
    for path in (Path(name), CONFIGS / name, CONFIGS / f"{name}.toml"):
        if path.is_file():
            return path
    raise SweepError(f"config {name!r} not found (tried it as a path and in {CONFIGS})")


def load_config(path: Path) -> Sweep:
    """Read experiments/configs/NAME.toml: [sweep] name, env_ids, seeds, workers (runs_dir and
    threads optional), [fixed] options of every trial, [grid] lists of values."""
    try:
        data = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as e:
        raise SweepError(f"cannot read {path}: {e}") from None
    unknown = (set(data) - {"sweep", "fixed", "grid", "variants"}) | (set(data.get("sweep", {})) - SWEEP_KEYS)
    if unknown:
        raise SweepError(f"{path}: unknown keys {sorted(unknown)}; expected [sweep] {sorted(SWEEP_KEYS)}, "
                         "[fixed], [grid] and [variants.NAME]")
    variants = {}
    for name, options in data.get("variants", {}).items():
        if not isinstance(options, dict):
            raise SweepError(f"{path}: variants.{name} must be a table of ddpg.py options ([variants.{name}])")
        variants[name] = {kebab(k): v for k, v in options.items()}
    if len({sanitize(name) for name in variants}) != len(variants):
        raise SweepError(f"{path}: variant names {sorted(variants)} clash once made safe for an exp-name")
    head = data.get("sweep", {})
    grid = {kebab(k): v for k, v in data.get("grid", {}).items()}
    for key, values in grid.items():
        if not isinstance(values, list) or not values:
            raise SweepError(f"{path}: [grid] {key} must be a non-empty list of values")
    fixed = {kebab(k): v for k, v in data.get("fixed", {}).items()}
    return Sweep(name=head.get("name", path.stem), env_ids=list(head.get("env_ids", [])),
                 seeds=list(head.get("seeds", [1])), grid=grid, fixed=fixed, variants=variants,
                 workers=head.get("workers"),
                 runs_dir=head.get("runs_dir"), threads=head.get("threads", 0))


def option_keys(args: list[str]) -> set[str]:
    """Option names given in a list of ddpg.py arguments ('--no-cuda' counts as 'cuda')."""
    keys = {kebab(a.split("=")[0]) for a in args if a.startswith("--")}
    return {k[3:] if k.startswith("no-") else k for k in keys}


def check_sweep(sweep: Sweep) -> None:
    """Refuse a sweep that cannot run: no environment, options the sweep sets itself, clashes."""
    if not sweep.env_ids:
        raise SweepError("no environment: give --env-id or env_ids in the config's [sweep]")
    if not sweep.seeds or not all(isinstance(s, int) for s in sweep.seeds):
        raise SweepError(f"seeds must be a non-empty list of integers, got {sweep.seeds}")
    if len(set(sweep.seeds)) != len(sweep.seeds):
        raise SweepError(f"seeds repeat: {sweep.seeds}")
    if sweep.workers is not None and sweep.workers < 1:
        raise SweepError("--workers must be at least 1")
    if not isinstance(sweep.threads, int) or sweep.threads < 0:
        raise SweepError(f"--threads must be 0 (ddpg.py's default) or more, got {sweep.threads}")
    fixed = set(sweep.fixed) | option_keys(sweep.extra)
    in_variants = {key for options in sweep.variants.values() for key in options}
    for key in sorted((fixed | set(sweep.grid) | in_variants) & set(RESERVED)):
        instead = RESERVED[key]
        raise SweepError(f"--{key} is set by the sweep" + (f"; use the sweep's {instead}" if instead else ""))
    both = fixed & set(sweep.grid)
    if both:
        raise SweepError(f"options both fixed and in the grid: {sorted(both)}")
    both = in_variants & (fixed | set(sweep.grid))
    if both:
        raise SweepError(f"options both in a variant and fixed or in the grid: {sorted(both)}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sweep.py", allow_abbrev=False, formatter_class=argparse.RawDescriptionHelpFormatter,
        usage="%(prog)s [options] [-- EXTRA DDPG.PY ARGS ...]",
        description=__doc__,
        epilog=CONFIG_HELP)
    parser.add_argument("--config", metavar="TOML",
                        help="sweep file: a path, or NAME for experiments/configs/NAME.toml")
    parser.add_argument("--name", help="sweep name: prefix of every exp-name and of the default runs folder "
                        "(default: the config's [sweep] name or file name, else 'sweep')")
    parser.add_argument("--env-id", nargs="+", metavar="ENV", help="environment id(s) to train on")
    parser.add_argument("--seeds", nargs="+", type=int, metavar="SEED", help="seeds of every grid point (default 1)")
    parser.add_argument("--grid", action="append", default=[], metavar="KEY=V1,V2",
                        help="a ddpg.py option and its values, repeatable; the grid is their product. "
                             "true/false give --flag/--no-flag; '64 64' gives two values (--hidden-sizes 64 64)")
    parser.add_argument("--runs-dir", metavar="DIR",
                        help="where run folders go (default runs/<name>); logs go to <runs-dir>/logs")
    parser.add_argument("--workers", type=int, metavar="N",
                        help="trials at a time (default: the CPU cores here, or the cluster's CPUs (GPUs with "
                             "--cuda) divided by --threads with --ray-address)")
    parser.add_argument("--threads", type=int, metavar="N",
                        help="CPU threads per trial: OMP_NUM_THREADS and --torch-threads (default 0: "
                             "ddpg.py's default, each trial as many as the cores the others leave free; with the "
                             "default --workers, one per core, that is one thread each)")
    parser.add_argument("--cuda", action="store_true", help="pass --cuda to every trial; with Ray each trial "
                        "reserves one GPU. Without it every trial gets --no-cuda")
    parser.add_argument("--ray-address", metavar="ADDRESS", help="run the trials as Ray tasks on this cluster "
                        "(host:port of its head, or 'auto'); their run folders are copied back into --runs-dir")
    parser.add_argument("--ddpg", type=Path, default=DDPG, metavar="PATH", help=f"training script (default {DDPG})")
    parser.add_argument("--dry-run", action="store_true", help="print the plan and the commands, run nothing")
    return parser


CONFIG_HELP = """\
config file (TOML):
  [sweep]
  name = "noise"                  # default: the file name
  env_ids = ["Pendulum-v1"]
  seeds = [1, 2, 3]
  workers = 2                     # optional; runs_dir and threads too
  [fixed]                         # ddpg.py options of every trial (kebab- or snake_case)
  total-steps = 50000
  hidden-sizes = [64, 64]         # lists become several values, booleans --flag/--no-flag
  [grid]                          # lists of values; every combination runs
  noise-type = ["gaussian", "ou", "param"]
  target-noise = [0.0, 0.2]
  [variants.ddpg]                 # optional named arms that set several options at once;
  [variants.td3]                  # each is crossed with the grid (an empty one = the defaults)
  num-q = 2
  policy-delay = 2
The command line wins: its flags replace the file's [sweep] values, and a ddpg.py option given
with --grid or after -- replaces the file's [fixed] value or [grid] list of that option.
The exp-name (sweep name + grid point) identifies a trial: give the sweep a new name when you
change its fixed options, or the old results are taken as done.

exit codes: 0 all trials finished, 1 some failed, 2 bad input, 130 interrupted. Ctrl-C (or
SIGTERM) stops the running trials; local ones save a checkpoint that a re-run of the same
command resumes, Ray ones start over."""


def sweep_from_args(ns: argparse.Namespace, extra: list[str]) -> Sweep:
    """Merge the config file (if any) with the command line."""
    sweep = load_config(config_path(ns.config)) if ns.config else Sweep("sweep", [], [1], {}, {})
    grid = dict(parse_grid_option(text) for text in ns.grid)
    extra_keys = option_keys(extra)
    if extra_keys & set(grid):
        raise SweepError(f"options both after -- and in --grid: {sorted(extra_keys & set(grid))}")
    for key in set(grid) | extra_keys:  # the command line replaces the file's value or grid
        sweep.fixed.pop(key, None)
        if key in extra_keys:
            sweep.grid.pop(key, None)
    sweep.grid.update(grid)
    sweep.extra = extra
    for field in ("name", "seeds", "workers", "runs_dir", "threads"):
        if getattr(ns, field) is not None:
            setattr(sweep, field, getattr(ns, field))
    if ns.env_id:
        sweep.env_ids = ns.env_id
    sweep.name = sanitize(sweep.name)
    check_sweep(sweep)
    return sweep


# ---------------------------------------------------------------------------------------------
# Run folders: what is done, what to resume
# ---------------------------------------------------------------------------------------------


def read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def find_runs(runs_dir: Path, trial: Trial) -> list[RunFolder]:
    """The trial's run folders in runs_dir, oldest first: ddpg.py names them
    <env>__<exp-name>__<seed>__<unix time>."""
    runs = []
    for path in runs_dir.glob(f"*__{trial.exp_name}__{trial.seed}__*"):
        config = read_json(path / "config.json")
        if config is None or config.get("env_id") != trial.env_id:
            continue
        summary = read_json(path / "summary.json") or {}
        runs.append(RunFolder(path, summary.get("status"), summary.get("final_eval_return_mean")))
    return sorted(runs, key=lambda r: (folder_time(r.path), r.path.name))


def folder_time(path: Path) -> int:
    """The unix time at the end of a run folder's name."""
    suffix = path.name.rpartition("__")[2]
    return int(suffix) if suffix.isdigit() else 0


def plan(sweep: Sweep, trials: list[Trial], runs_dir: Path, cuda: bool) -> tuple[list[Job], list[RunFolder]]:
    """Jobs for the trials not finished yet (resuming an interrupted run folder where there is
    one), and the finished run folders that are skipped."""
    jobs, done = [], []
    for trial in trials:
        runs = find_runs(runs_dir, trial)
        finished = [r for r in runs if r.status == "finished"]
        if finished:
            done.append(finished[-1])
            continue
        resumable = [r for r in runs if r.resumable]
        jobs.append(Job(trial, trial_args(sweep, trial, cuda), resumable[-1].path if resumable else None,
                        runs_dir / "logs" / trial.log_name(), frozenset(r.path for r in runs)))
    return jobs, done


# ---------------------------------------------------------------------------------------------
# Backends: local processes and Ray tasks
# ---------------------------------------------------------------------------------------------


class LocalBackend:
    """Each trial is a ddpg.py child process in its own session (so that Ctrl-C reaches the
    sweep, which then stops each trial once, cleanly), writing to its log file."""

    name = "local processes"

    def __init__(self, script: Path, runs_dir: Path, threads: int):
        self.script, self.runs_dir, self.threads = script, runs_dir, threads

    def start(self, job: Job) -> subprocess.Popen:
        cmd = ddpg_command(self.script, job.args, self.runs_dir, job.resume)
        with open(job.log, "a") as log:
            log.write(f"=== {time.strftime('%Y-%m-%d %H:%M:%S')} {shlex.join(cmd)}\n")
            log.flush()
            return subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    env=trial_env(self.threads), start_new_session=True)

    def poll(self, proc: subprocess.Popen, job: Job) -> int | None:
        return proc.poll()

    def stop(self, procs: list[subprocess.Popen]) -> None:
        """SIGINT once: ddpg.py saves a checkpoint and exits. A second Ctrl-C kills them."""
        for proc in procs:
            proc.send_signal(signal.SIGINT)
        try:
            for proc in procs:
                proc.wait()
        except KeyboardInterrupt:
            for proc in procs:
                proc.kill()

    def close(self) -> None:
        """Nothing to release: every child has been waited for."""


def pack(folder: Path) -> bytes:
    """A run folder as tar bytes."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        tar.add(folder, arcname=folder.name)
    return buffer.getvalue()


def unpack(data: bytes, into: Path) -> None:
    """Extract tar bytes from pack() into a folder, refusing paths that leave it."""
    safe = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        tar.extractall(into, **safe)


def run_in_tempdir(script_text: str, args: list[str], resume_tar: bytes | None, resume_name: str | None,
                   threads: int) -> tuple[int, str, bytes | None]:
    """Body of a Ray task: run ddpg.py (shipped as text) into a temporary runs folder on the
    worker. Returns the exit code, the output and the run folder as tar bytes (None if no
    folder was made). A cancelled task stops its ddpg.py, which saves a checkpoint first."""
    with tempfile.TemporaryDirectory(prefix="ddpg-sweep-") as tmp:
        tmp = Path(tmp)
        script, runs, output = tmp / "ddpg.py", tmp / "runs", tmp / "output.log"
        script.write_text(script_text)
        runs.mkdir()
        if resume_tar is not None:
            unpack(resume_tar, runs)
        cmd = ddpg_command(script, args, runs, runs / resume_name if resume_name else None)
        with open(output, "w") as out:
            proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    env=trial_env(threads), cwd=tmp)
            try:
                while proc.poll() is None:  # short waits: Ray's cancel (KeyboardInterrupt) lands between them
                    time.sleep(POLL_S)
            except KeyboardInterrupt:  # SIGTERM, not SIGINT: Ray workers pass SIGINT blocked to their children
                proc.terminate()
                proc.wait()
                raise
        folders = [p for p in runs.iterdir() if p.is_dir()]
        log = f"$ {shlex.join(cmd)}\n{output.read_text(errors='replace')}"
        return proc.returncode, log, pack(folders[0]) if folders else None


class RayBackend:
    """Each trial is a Ray task (num_cpus=threads, or num_gpus=1 with --cuda) on an existing
    cluster; its run folder comes back as tar bytes and is unpacked into the local runs folder."""

    name = "Ray tasks"

    def __init__(self, script: Path, runs_dir: Path, threads: int, cuda: bool, address: str):
        try:
            import ray  # only needed for this backend
        except ImportError:
            raise SweepError("--ray-address needs ray: pip install -r experiments/requirements.txt") from None
        self.ray, self.runs_dir, self.threads = ray, runs_dir, threads
        try:
            ray.init(address=address, log_to_driver=False, logging_level=logging.WARNING)
        except Exception as e:  # unreachable, wrong address, version mismatch ...
            raise SweepError(f"cannot connect to the Ray cluster at {address!r}: {type(e).__name__}: {e}") from None
        if __name__ != "__main__":  # imported: ship this module's code with the task, workers lack it
            ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
        self.script = ray.put(script.read_text())
        cpus = threads or 1  # --threads 0 (ddpg.py's own policy) reserves one CPU per trial
        resources = {"num_cpus": cpus, "num_gpus": 1 if cuda else 0}
        self.task = ray.remote(max_retries=0, **resources)(run_in_tempdir)
        total = ray.cluster_resources()
        self.slots = int(total.get("GPU", 0)) if cuda else int(total.get("CPU", 0) // cpus)
        if self.slots < 1:
            ray.shutdown()
            need = "a GPU (--cuda)" if cuda else f"{cpus} CPU(s) (--threads)"
            raise SweepError(f"the Ray cluster at {address!r} has no node with {need}: {total}")

    def start(self, job: Job):
        resume_tar = pack(job.resume) if job.resume else None
        return self.task.remote(self.script, job.args, resume_tar, job.resume.name if job.resume else None,
                                self.threads)

    def poll(self, ref, job: Job) -> int | None:
        """None while the task runs; then its exit code, with its log written and its run
        folder unpacked."""
        ready, _ = self.ray.wait([ref], timeout=0)
        if not ready:
            return None
        try:
            code, output, folder = self.ray.get(ref)
        except self.ray.exceptions.RayError as e:  # worker died, node lost, task cancelled ...
            code, output, folder = -1, f"ray task failed: {e}\n", None
        with open(job.log, "a") as log:
            log.write(f"=== {time.strftime('%Y-%m-%d %H:%M:%S')} on Ray\n{output}")
        if folder is not None:
            unpack(folder, self.runs_dir)
        return code

    def stop(self, refs: list) -> None:
        """Cancel the tasks: a running one gets KeyboardInterrupt, which kills its ddpg.py."""
        for ref in refs:
            self.ray.cancel(ref)
        with contextlib.suppress(KeyboardInterrupt):
            self.ray.wait(refs, num_returns=len(refs), timeout=30)

    def close(self) -> None:
        self.ray.shutdown()


# ---------------------------------------------------------------------------------------------
# Scheduling and reporting
# ---------------------------------------------------------------------------------------------


def log_tail(path: Path, lines: int = LOG_TAIL) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


class Tally:
    """Counts finished, failed and interrupted trials and prints one line per trial."""

    def __init__(self, total: int, runs_dir: Path):
        self.total, self.runs_dir = total, runs_dir
        self.finished, self.failed, self.interrupted = [], [], []

    def record(self, job: Job, code: int, seconds: float, running: int) -> None:
        run = job.run_folder(self.runs_dir)
        status = run.status if run else None
        if code == 0 and status == "finished":
            self.finished.append(job)
            ret = f"final return {run.final_return:.1f}" if run.final_return is not None else "no eval"
            outcome = f"finished  {job.trial.label()}: {ret} ({seconds:.0f}s)"
        elif status == "interrupted" or code in (130, 143, -signal.SIGINT, -signal.SIGTERM, -signal.SIGKILL):
            self.interrupted.append(job)
            outcome = f"stopped   {job.trial.label()}"
        else:
            self.failed.append((job, code, status))
            outcome = f"FAILED    {job.trial.label()}: exit {code}" + (f", status {status}" if status else "")
        done = len(self.finished) + len(self.failed) + len(self.interrupted)
        print(f"[{done}/{self.total} | failed {len(self.failed)} | running {running}] {outcome}", flush=True)
        if outcome.startswith("FAILED"):
            tail = log_tail(job.log).replace("\n", "\n    ")
            print(f"    log {job.log}, last lines:\n    {tail}", flush=True)


def run_jobs(jobs: list[Job], backend, workers: int, tally: Tally) -> bool:
    """Run the jobs, `workers` at a time. Returns False if interrupted (Ctrl-C or SIGTERM): the
    running trials are stopped and the queued ones never start."""
    queue, running = deque(jobs), []  # (handle, job, start time) of each running trial
    try:
        while queue or running:
            while queue and len(running) < workers:
                job = queue.popleft()
                running.append((backend.start(job), job, time.time()))
            for entry in list(running):
                handle, job, t0 = entry
                code = backend.poll(handle, job)
                if code is not None:
                    running.remove(entry)
                    tally.record(job, code, time.time() - t0, len(running))
            time.sleep(POLL_S)
    except KeyboardInterrupt:
        print(f"\ninterrupted: stopping {len(running)} running trial(s); {len(queue)} not started", flush=True)
        backend.stop([handle for handle, _, _ in running])
        tally.interrupted += [job for _, job, _ in running]
        return False
    return True


def print_plan(jobs: list[Job], done: list[RunFolder], script: Path, runs_dir: Path, threads: int) -> None:
    """--dry-run: the skipped trials and the command of each trial to run."""
    for run in done:
        print(f"# skip, finished: {run.path}")
    for job in jobs:
        env = "".join(f"{key}={value} " for key, value in thread_pools(threads).items())
        print(f"{env}{shlex.join(ddpg_command(script, job.args, runs_dir, job.resume))}")


def print_summary(tally: Tally, skipped: int, seconds: float, runs_dir: Path, complete: bool) -> None:
    print(f"\nsweep {'done' if complete else 'interrupted'} in {seconds:.0f}s: {len(tally.finished)} finished, "
          f"{len(tally.failed)} failed, {len(tally.interrupted)} stopped, {skipped} skipped (finished before)")
    for job, code, status in tally.failed:
        print(f"  failed: {job.trial.label()} (exit {code}{', ' + status if status else ''}); log {job.log}")
    if not complete or tally.interrupted:
        print("re-run the same command to finish the sweep")
    plot = os.path.relpath(HERE / "plot.py")
    plot = plot if not plot.startswith("..") else HERE / "plot.py"
    print(f"runs in {runs_dir}; plot with: python {plot} {runs_dir} --out {runs_dir}/plot")


def default_workers() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def raise_interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


def make_backend(ns: argparse.Namespace, sweep: Sweep, runs_dir: Path):
    """The backend to run on and how many trials it runs at a time."""
    if ns.ray_address:
        backend = RayBackend(ns.ddpg, runs_dir, sweep.threads, ns.cuda, ns.ray_address)
        return backend, sweep.workers or backend.slots
    return LocalBackend(ns.ddpg, runs_dir, sweep.threads), sweep.workers or default_workers()


def run_sweep(ns: argparse.Namespace, sweep: Sweep, jobs: list[Job], done: list[RunFolder], runs_dir: Path) -> int:
    """Run the jobs and print the summary; returns the sweep's exit code."""
    if not jobs:
        print(f"sweep {sweep.name}: all {len(done)} trials finished before, nothing to run; runs in {runs_dir}")
        return 0
    (runs_dir / "logs").mkdir(parents=True, exist_ok=True)
    backend, workers = make_backend(ns, sweep, runs_dir)
    resumed = sum(job.resume is not None for job in jobs)
    print(f"sweep {sweep.name}: {len(jobs) + len(done)} trials ({len(done)} finished before, {resumed} to resume, "
          f"{len(jobs) - resumed} new); {workers} at a time as {backend.name}; runs in {runs_dir}, "
          f"logs in {runs_dir / 'logs'}", flush=True)
    t0, tally = time.time(), Tally(len(jobs), runs_dir)
    try:
        complete = run_jobs(jobs, backend, workers, tally)
    finally:
        backend.close()
    print_summary(tally, len(done), time.time() - t0, runs_dir, complete)
    if not complete:
        return 130
    return 1 if tally.failed or tally.interrupted else 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    own, extra = (argv[:argv.index("--")], argv[argv.index("--") + 1:]) if "--" in argv else (argv, [])
    parser = build_parser()
    ns = parser.parse_args(own)
    signal.signal(signal.SIGINT, signal.default_int_handler)  # even where a shell started us ignoring it
    signal.signal(signal.SIGTERM, raise_interrupt)
    try:
        sweep = sweep_from_args(ns, extra)
        if not ns.ddpg.is_file():
            raise SweepError(f"training script not found: {ns.ddpg}")
        runs_dir = Path(sweep.runs_dir or Path("runs") / sweep.name)
        jobs, done = plan(sweep, expand(sweep), runs_dir, ns.cuda)
        if ns.dry_run:
            print_plan(jobs, done, ns.ddpg, runs_dir, sweep.threads)
            return 0
        return run_sweep(ns, sweep, jobs, done, runs_dir)
    except SweepError as e:
        parser.error(str(e))


if __name__ == "__main__":
    sys.exit(main())
