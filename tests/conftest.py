"""Shared helpers for the tests: the repo root on sys.path, the CLI in a subprocess, run folders,
TensorBoard event files."""

from __future__ import annotations

import json
import os
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # `import ddpg` and `import tests.envs` from the repo root
    sys.path.insert(0, str(REPO))

# A CLI budget that finishes in a couple of seconds on one core (two evaluations, two saves).
TINY = ["--total-steps", "400", "--start-steps", "100", "--batch-size", "32", "--eval-every", "200",
        "--eval-episodes", "1", "--save-every", "200", "--hidden-sizes", "32", "32", "--torch-threads", "1",
        "--no-cuda"]


def cli_command(args: list[str], env: dict | None = None) -> tuple[list[str], dict]:
    """`python ddpg.py ARGS` and its environment: one thread, W&B offline, tests.envs importable."""
    full_env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "WANDB_MODE": "offline",
                "WANDB_SILENT": "true", "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
                "COLUMNS": "200", **(env or {})}
    return [sys.executable, str(REPO / "ddpg.py"), *map(str, args)], full_env


def run_cli(args: list[str], *, cwd: Path = REPO, timeout: float = 300, env: dict | None = None):
    """Run `python ddpg.py ARGS` in a subprocess. Returns (returncode, stdout, stderr)."""
    cmd, full_env = cli_command(args, env)
    proc = subprocess.run(cmd, cwd=cwd, env=full_env, capture_output=True, text=True, timeout=timeout)
    return proc.returncode, proc.stdout, proc.stderr


def single_run_dir(runs_dir: Path) -> Path:
    """The one run folder inside runs_dir (fails if there are none or several)."""
    runs = [p for p in Path(runs_dir).iterdir() if p.is_dir()]
    assert len(runs) == 1, f"expected one run folder in {runs_dir}, found {sorted(p.name for p in runs)}"
    return runs[0]


def read_events(run_dir: Path) -> list:
    """All tensorboardX Event protos of a run folder, read straight from the TFRecord files
    (uint64 length, masked crc32c, payload, masked crc32c), checksums verified."""
    from tensorboardX.proto.event_pb2 import Event
    from tensorboardX.record_writer import masked_crc32c

    events = []
    for path in sorted(Path(run_dir).glob("events.out.tfevents.*")):
        data = path.read_bytes()
        pos = 0
        while pos < len(data):
            header = data[pos:pos + 8]
            (length,) = struct.unpack("<Q", header)
            (header_crc,) = struct.unpack("<I", data[pos + 8:pos + 12])
            assert header_crc == masked_crc32c(header), f"corrupt record header in {path}"
            payload = data[pos + 12:pos + 12 + length]
            (payload_crc,) = struct.unpack("<I", data[pos + 12 + length:pos + 16 + length])
            assert payload_crc == masked_crc32c(payload), f"corrupt record in {path}"
            events.append(Event.FromString(payload))
            pos += 16 + length
    return events


def scalar_tags(run_dir: Path) -> dict[str, list[tuple[int, float]]]:
    """{tag: [(step, value), ...]} of the scalars, plus the text summaries' tags (values empty)."""
    tags: dict[str, list[tuple[int, float]]] = {}
    for ev in read_events(run_dir):
        for v in ev.summary.value:
            entry = tags.setdefault(v.tag, [])
            if v.WhichOneof("value") == "simple_value":
                entry.append((ev.step, v.simple_value))
    return tags


def wandb_records(path: Path) -> list:
    """The records of a W&B transaction log (.wandb): a 7-byte header, then LevelDB-style chunks
    (crc32, length, type: 1 full, 2 first, 3 middle, 4 last) in 32 KiB blocks."""
    from wandb.proto import wandb_internal_pb2 as pb

    data, pos, records, partial = path.read_bytes(), 7, [], b""
    assert data[:4] == b":W&B"
    while pos + 7 <= len(data):
        if 32768 - pos % 32768 < 7:  # block trailer: padding
            pos += 32768 - pos % 32768
            continue
        _, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        if kind == 0 and length == 0:
            break
        chunk, pos = data[pos + 7:pos + 7 + length], pos + 7 + length
        partial = chunk if kind in (1, 2) else partial + chunk
        if kind in (1, 4):
            record = pb.Record()
            record.ParseFromString(partial)
            records.append(record)
    return records


def assert_one_error_line(rc: int, stderr: str, code: int = 2) -> str:
    """Bad input: exit code 2, exactly one line on stderr, starting 'error:', no traceback."""
    lines = [ln for ln in stderr.splitlines() if ln.strip()]
    assert rc == code, f"exit {rc}, stderr:\n{stderr}"
    assert "Traceback" not in stderr, stderr
    assert len(lines) == 1 and lines[0].startswith("error: "), f"stderr:\n{stderr}"
    return lines[0]


# ---------------------------------------------------------------------------------------------
# Long CLI runs in the background (the learning tests)
# ---------------------------------------------------------------------------------------------


# Run by BackgroundRuns for each training, in a session of its own: runs the command, writes
# (returncode, stdout, stderr) to RESULT.tmp, then renames it to RESULT (whole or absent).
RUNNER = """
import json, os, subprocess, sys
result, timeout, *cmd = sys.argv[1:]
try:
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=float(timeout))
    out = [p.returncode, p.stdout, p.stderr]
except subprocess.TimeoutExpired as e:
    out = [-9, e.stdout or "", f"{e.stderr or ''}\\n(killed after {timeout} s)"]
with open(result + ".tmp", "w") as f:
    json.dump(out, f)
os.replace(result + ".tmp", result)
"""


class BackgroundRuns:
    """Long trainings (the learning tests) that start as soon as the tests are collected and run
    while the quick tests run; their tests then wait for the results. A test declares its run with
    @pytest.mark.background_run(name, argv) and gets it with background_runs.result(name, argv):
    (rc, stdout, stderr, runs_dir), each run in its own empty --runs-dir. Deselected tests start
    nothing.

    Every process of the session shares the runs (pytest-xdist's workers too). They live in ROOT,
    a folder made by the controller (or the lone pytest process), which also ends what still runs
    and removes ROOT at the end. The process that creates ROOT/NAME.claim first (O_EXCL) starts
    NAME: a runner in a session of its own (it outlives a worker that has no tests left) trains in
    ROOT/NAME and writes ROOT/NAME.json; whoever needs the result waits for that file. Two run at a
    time in all: a lone process starts two at a time, each of N workers max(1, 2 // N)."""

    def __init__(self):
        self.pool: ThreadPoolExecutor | None = None
        self.futures: dict[str, Future] = {}
        self.lock = threading.Lock()
        self.root: Path | None = None
        self.owner = False
        self.workers = 2
        self.stopping = threading.Event()

    def configure(self, config) -> None:
        worker = getattr(config, "workerinput", None)
        if worker is None:
            self.root, self.owner = Path(tempfile.mkdtemp(prefix="ddpg-background-runs-")), True
        else:
            self.root = Path(worker["ddpg_background_runs"])
            self.workers = max(1, 2 // worker["workercount"])

    def start(self, runs: dict[str, list[str]]) -> None:
        with self.lock:
            if self.pool is None:
                self.pool = ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="background-run")
            for name, argv in runs.items():
                if name not in self.futures:
                    self.futures[name] = self.pool.submit(self._claim_and_run, name, list(argv))

    def _claim_and_run(self, name: str, argv: list[str], timeout: float = 1800) -> None:
        """Start NAME unless another process claimed it; wait for it (a slot of the two)."""
        if self.stopping.is_set():
            return
        try:
            os.close(os.open(self.root / f"{name}.claim", os.O_CREAT | os.O_EXCL | os.O_WRONLY))
        except FileExistsError:
            return
        cmd, env = cli_command([*argv, "--runs-dir", self.root / name])
        proc = subprocess.Popen([sys.executable, "-c", RUNNER, str(self.root / f"{name}.json"), str(timeout), *cmd],
                                cwd=REPO, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                start_new_session=True)
        (self.root / f"{name}.pid").write_text(str(proc.pid))
        while proc.poll() is None and not self.stopping.wait(0.2):
            pass

    def result(self, name: str, argv: list[str], timeout: float = 1900):
        self.start({name: argv})  # no-op when it was started at collection
        done, deadline = self.root / f"{name}.json", time.monotonic() + timeout
        while not done.exists():
            assert time.monotonic() < deadline, f"background run {name}: no result in {timeout} s"
            time.sleep(0.2)
        rc, out, err = json.loads(done.read_text())
        return rc, out, err, self.root / name

    def stop(self) -> None:
        """End of this process's session (also after -x or Ctrl-C): start nothing more; the owner
        ends the runners still going (whichever process started them) and removes ROOT."""
        self.stopping.set()
        if self.pool is not None:
            self.pool.shutdown(wait=True, cancel_futures=True)
        if self.owner:
            for pid_file in self.root.glob("*.pid"):
                try:
                    os.killpg(int(pid_file.read_text()), signal.SIGKILL)
                except (OSError, ValueError):  # it ended already
                    pass
            shutil.rmtree(self.root, ignore_errors=True)


BACKGROUND = BackgroundRuns()


def pytest_configure(config):
    BACKGROUND.configure(config)


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node):  # pytest-xdist, in the controller: hand ROOT to each worker
    node.workerinput["ddpg_background_runs"] = str(BACKGROUND.root)


def pytest_collection_modifyitems(items):
    # the tests that wait for background runs go last: all the others run while those train
    items.sort(key=lambda item: item.get_closest_marker("background_run") is not None)


def pytest_collection_finish(session):
    if session.config.option.collectonly:
        return
    runs = {}
    for item in session.items:
        for marker in item.iter_markers("background_run"):
            name, argv = marker.args
            runs[name] = argv
    if runs:
        BACKGROUND.start(runs)


def pytest_sessionfinish(session):
    BACKGROUND.stop()


@pytest.fixture(scope="session")
def background_runs() -> BackgroundRuns:
    return BACKGROUND


@pytest.fixture(scope="session")
def repo() -> Path:
    return REPO
