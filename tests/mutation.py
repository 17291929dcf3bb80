"""Mutation testing of the algorithm in ddpg.py (line 1 to the end of train()) with mutmut. Not part of CI: slow.

    python tests/mutation.py                 # every algorithm mutant, all re-tested (about an hour on 2 busy cores)
    python tests/mutation.py --show          # and print the diff of every surviving mutant
    python tests/mutation.py --survivors     # re-test only the mutants that survived the last run

The script copies ddpg.py, tests/ and pytest.ini into runs/mutation/; mutmut (requirements-dev.txt) rewrites
every function so that each of its one-token changes (a mutant: `+` for `-`, `<=` for `<`, 1.0 for 2.0, None
for a value, a dropped argument, ...) can be switched on, and runs, for each mutant, the fast in-process tests
that call the mutated function (FAST_TESTS). A mutant is killed when one of them fails or times out. Survivors
that cannot change behaviour are listed in EQUIVALENT with the reason, matched by their diff, and left out of the
score.
Exit 0 when at least 95% of the other mutants are killed; the figure goes into README's "Tests".
"""

from __future__ import annotations

import argparse
import ast
import collections
import hashlib
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
WORK = REPO / "runs" / "mutation"
FAST_TESTS = ["tests/test_units.py", "tests/test_algorithm.py", "tests/test_update_equivalence.py"]
GOAL = 0.95
KILLED = ("killed", "timeout")  # a timeout is a mutant that never ends: caught

# Survivors that cannot change what the code computes: (regex on the function's name, regex on the original
# line, regex on the mutated line, why). Only survivors are matched: a rule never hides a killed mutant. Mutants
# that only drop or null a `device=` argument are also equivalent here (see DEVICE).
EQUIVALENT: list[tuple[str, str, str, str]] = [
    (r"ReplayBuffer\.__init__", r"dtype=torch\.float32", r"dtype=None|float32, \)|zeros\(capacity(, \w+_dim)?, device",
     "torch's default dtype is float32"),
    (r"Actor\.act|train|OUNoise\.load_state_dict", r"astype\(np\.float64\)|dtype=np\.float64",
     r"astype\(None\)|dtype=None|\], \)",
     "numpy's default dtype is float64 (and a saved OU state is float64 already)"),
    (r"Actor\.__init__|QNetwork\.forward", r"inplace=True", r"inplace=(None|False)|relu\(x, \)",
     "in-place ReLU only saves memory"),
    (r"Learner\.update", r"set_to_none=True", r"set_to_none=(None|False)",
     "gradients zeroed instead of freed: the same update"),
    (r"Learner\.__init__|ParamNoise\.__init__", r"requires_grad_\(False\)", r"requires_grad_\(True\)",
     "targets, the perturbed actor and the probe only run under no_grad: no gradient is ever computed for them"),
    (r"Learner\.__init__", r"^fused = dict\(fused=True\) if", r"^fused = dict\(fused=(None|False|True)\) if",
     "fused Adam or torch's default Adam: the same update, only faster"),
    (r"Learner\.__init__", r"torch\.optim\.Adam\(.*, \*\*fused\)",
     r"^self\.\w+_opt = torch\.optim\.Adam\(self\.\w+\.parameters\(\), "
     r"lr=args\.\w+_lr, \)$", "fused Adam or torch's default Adam: the same update, only faster"),
    (r"Learner\.__init__", r"self\.to\(device\)", r"self\.to\(None\)", "no-op on the CPU, the suite's device"),
    (r"Actor\.__init__|QNetwork\.__init__", r'(weights|bias)_init="torch"', r'_init="(XXtorchXX|TORCH)"',
     "a default the Learner always overrides; init_ treats any name but xavier/uniform/zeros as torch's scheme"),
    (r"QNetwork\.forward", r"dim=-1", r"dim=\+1", "obs and act are 2-D batches: dim 1 is the last"),
    (r"Learner\.__init__", r"persistent=False", r"persistent=None",
     "None is false: the buffer stays out of checkpoints"),
    (r"ParamNoise\.__init__", r'float\("nan"\)', r'float\("NAN"\)', "the same NaN"),
    (r"ParamNoise\.adapt", r"self\.distance > self\.target_std", r"self\.distance >= self\.target_std",
     "a measured distance exactly equal to the target has probability zero"),
    (r"Learner\.actor_loss", r"q\.mean\(0\)", r"q\.mean\((None|1)\)",
     "-mean over the batch of the mean over critics = -mean over both (equal sizes)"),
    (r"ReplayBuffer\.sample", r"bad = ~self\.valid\[idx\]", r"bad = self\.valid\[idx\]",
     "valid first draws are redrawn once, then rejection goes on: still uniform over the stored transitions"),
    (r"ReplayBuffer\.__init__", r"self\.pos, self\.high, self\.added = 0, 0, 0", r"= 0, 1, 0",
     "high is only read after the first add, which sets it to at least 2"),
    (r"OUNoise\.state_dict", r"self\.x\.copy\(\)", r'"x": self\.x}',
     "x is replaced at every sample, never changed in place, so the copy only guards against future edits"),
    (r"train", r"noise\.reset\(learner\.actor, rng\)", r"noise\.reset\(learner\.actor, None\)",
     "no noise's reset uses the numpy generator (OU returns to mu; parameter noise draws from torch's)"),
]
DEVICE = "only the device changes: None (or no device) is the CPU, the only device of this suite and of CI"


def device_only(removed: str, added: str) -> bool:
    """The mutant only drops or nulls a device= argument."""
    drop = lambda line: re.sub(r",\s*\)", ")", re.sub(r",?\s*device=[\w.]+", "", line))
    return "device=" in removed and drop(removed) == drop(added)


CONFIG = """[mutmut]
source_paths = ddpg.py
also_copy =
    pytest.ini
    tests/
    benchmarks/
pytest_add_cli_args_test_selection =
{tests}
pytest_add_cli_args =
    -p
    no:cacheprovider
    -q
"""


def algorithm_functions() -> list[str]:
    """mutmut's names (x_func, xǁClassǁmethod) of every function from line 1 to the end of train()."""
    tree = ast.parse((REPO / "ddpg.py").read_text())
    end = next(n.end_lineno for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "train")
    names = []
    for node in tree.body:
        if node.lineno > end:
            break
        if isinstance(node, ast.FunctionDef):
            names.append(f"x_{node.name}")
        elif isinstance(node, ast.ClassDef):
            names += [f"x\u01c1{node.name}\u01c1{f.name}" for f in node.body if isinstance(f, ast.FunctionDef)]
    return names


def mutmut(*argv: str, capture: bool = False) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", WANDB_MODE="offline", PYTHONHASHSEED="0")
    cmd = [sys.executable, "-m", "mutmut", *argv]
    return subprocess.run(cmd, cwd=WORK, env=env, text=True, capture_output=capture)


def tests_digest(folder: Path) -> str:
    return hashlib.sha256(b"".join(p.read_bytes() for p in sorted(folder.rglob("*.py")))).hexdigest()


def results() -> dict[str, str]:
    """{mutant name: killed, survived, no tests, timeout, ...} of every mutant tested so far."""
    out = mutmut("results", "--all", "true", capture=True).stdout
    return {m.group(1): m.group(2) for m in re.finditer(r"^\s*(ddpg\.\S+__mutmut_\d+): (.+)$", out, re.M)}


DIFFS = """
import sys
from mutmut.__main__ import find_mutant, get_diff_for_mutant
for name in sys.argv[1:]:
    print(get_diff_for_mutant(name, path=find_mutant(name).path) + "\\0", end="")
"""


def diffs(names: list[str]) -> list[str]:
    """The unified diff of each mutant (one process for all: `mutmut show` would start one per mutant)."""
    if not names:
        return []
    out = subprocess.run([sys.executable, "-c", DIFFS, *names], cwd=WORK, capture_output=True, text=True, check=True)
    return out.stdout.split("\0")[:len(names)]


def why_equivalent(function: str, removed: str, added: str) -> str | None:
    """The reason a surviving mutant cannot change what the code computes, or None."""
    if device_only(removed, added):
        return DEVICE
    for functions, before, after, reason in EQUIVALENT:
        if re.fullmatch(functions, function) and re.search(before, removed) and re.search(after, added):
            return reason
    return None


def function_of(mutant: str) -> str:
    """ddpg.x_polyak_update__mutmut_3 -> x_polyak_update: mutmut's name of the function it mutates."""
    return mutant.removeprefix("ddpg.").rsplit("__mutmut_", 1)[0]


def readable(function: str) -> str:
    """x_polyak_update -> polyak_update; x\u01c1Learner\u01c1update -> Learner.update (a mutant's name works too)."""
    mangled = function_of(function)
    return mangled[2:] if mangled.startswith("x_") else mangled[2:].replace("\u01c1", ".")


def diff_lines(diff: str) -> tuple[str, str]:
    """The removed and the added line of a one-line mutant's diff, stripped."""
    removed = [ln[1:].strip() for ln in diff.splitlines() if ln.startswith("-") and not ln.startswith("---")]
    added = [ln[1:].strip() for ln in diff.splitlines() if ln.startswith("+") and not ln.startswith("+++")]
    return " / ".join(removed), " / ".join(added)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--show", action="store_true", help="print the diff of every surviving mutant")
    parser.add_argument("--fresh", action="store_true", help="forget the results of earlier runs")
    parser.add_argument("--survivors", action="store_true", help="only re-test the mutants that survived last time")
    parser.add_argument("--only", metavar="FUNCTION", nargs="+", help="only these functions (e.g. polyak_update "
                        "Learner.update)")
    parser.add_argument("--max-children", type=int, default=os.cpu_count() or 1, help="mutants tested at a time")
    ns = parser.parse_args()

    if ns.fresh:
        shutil.rmtree(WORK, ignore_errors=True)
    WORK.mkdir(parents=True, exist_ok=True)
    old_tests = tests_digest(WORK / "tests") if (WORK / "tests").exists() else None
    shutil.copy2(REPO / "ddpg.py", WORK / "ddpg.py")
    shutil.copy2(REPO / "pytest.ini", WORK / "pytest.ini")
    (WORK / "benchmarks").mkdir(exist_ok=True)
    # test_update_equivalence.py loads benchmarks/eager_ddpg.py; also_copy takes it on into mutants/
    shutil.copy2(REPO / "benchmarks" / "eager_ddpg.py", WORK / "benchmarks" / "eager_ddpg.py")
    shutil.rmtree(WORK / "tests", ignore_errors=True)
    shutil.copytree(REPO / "tests", WORK / "tests", ignore=shutil.ignore_patterns("__pycache__"))
    if old_tests != tests_digest(WORK / "tests"):  # mutmut maps tests to functions once: map them again
        (WORK / "mutants" / "mutmut-stats.json").unlink(missing_ok=True)
    (WORK / "setup.cfg").write_text(CONFIG.format(tests="\n".join(f"    {t}" for t in FAST_TESTS)))

    functions = algorithm_functions()
    if ns.only:
        functions = [f for f in functions if readable(f) in ns.only]
    names = [f"ddpg.{f}__mutmut_*" for f in functions]
    if ns.survivors:
        names = [name for name, st in results().items() if st not in KILLED and function_of(name) in functions]
        if not names:
            print("no survivors to re-test")
    run = mutmut("run", "--max-children", str(ns.max_children), *names) if names else None
    if run is not None and run.returncode != 0:
        print(f"error: mutmut run failed with exit code {run.returncode}", file=sys.stderr)
        return 2

    status = {name: st for name, st in results().items() if function_of(name) in functions}
    equivalent, survivors = {}, {}
    alive = sorted(name for name, st in status.items() if st in ("survived", "no tests"))
    for name, diff in zip(alive, diffs(alive)):
        removed, added = diff_lines(diff)
        reason = why_equivalent(readable(name), removed, added)
        (equivalent if reason else survivors)[name] = (status[name], diff, reason)
    counted = len(status) - len(equivalent)
    killed = sum(st in KILLED for st in status.values())
    score = killed / counted if counted else 0.0
    by_status = collections.Counter(status.values())
    print(f"\n{len(status)} mutants of {len(functions)} algorithm functions: "
          + ", ".join(f"{n} {st}" for st, n in sorted(by_status.items())))
    print(f"{len(equivalent)} survivors recorded as equivalent (EQUIVALENT in {Path(__file__).name})")
    print(f"killed {killed} of {counted} non-equivalent mutants: {100 * score:.1f}% (goal {100 * GOAL:.0f}%)")
    if survivors:
        print(f"{len(survivors)} surviving: " + " ".join(sorted(survivors)))
    if ns.show:
        for name, (st, diff, _) in sorted(survivors.items()):
            print(f"\n# {name} ({readable(name)}, {st})\n{diff}")
    return 0 if score >= GOAL else 1


if __name__ == "__main__":
    sys.exit(main())
