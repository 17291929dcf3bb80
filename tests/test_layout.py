"""ddpg.py stays readable like CleanRL: the whole algorithm in one stretch at the top, ending with the
training loop, and the run's plumbing below it. These checks read the source, so a change that
lets plumbing creep back into the algorithm, or the loop grow past a screenful, fails here."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import ddpg

SOURCE = (Path(__file__).resolve().parents[1] / "ddpg.py").read_text()
TREE = ast.parse(SOURCE)
DEFS = {node.name: node for node in TREE.body if isinstance(node, (ast.FunctionDef, ast.ClassDef))}
LINES = SOURCE.splitlines()


def algorithm_stretch() -> str:
    """Line 1 to the end of the training-loop function train()."""
    return "\n".join(LINES[: DEFS["train"].end_lineno])


def test_the_algorithm_reads_first_and_ends_with_the_loop():
    train = DEFS["train"]
    assert train.end_lineno <= 450, f"the algorithm stretch (line 1 to the end of train) is {train.end_lineno} lines"
    assert train.end_lineno - train.lineno + 1 <= 100, "the training loop is longer than 100 lines"
    order = [n.name for n in TREE.body if isinstance(n, (ast.FunctionDef, ast.ClassDef))]
    algorithm = ["Args", "Actor", "QNetwork", "ReplayBuffer", "Noise", "GaussianNoise", "OUNoise", "ParamNoise",
                 "bellman_target", "polyak_update", "Learner", "train"]
    assert [n for n in order if n in algorithm] == algorithm, "the algorithm's pieces are out of reading order"
    plumbing = ["validate", "parse_args", "make_env", "atomic_write_bytes", "load_checkpoint", "Logger",
                "Interrupted", "Run", "setup", "eval_only", "main"]
    assert all(DEFS[name].lineno > train.end_lineno for name in plumbing), "plumbing above the training loop"


def test_no_plumbing_in_the_algorithm_stretch():
    # from the end of Args (which declares every flag, logging's too) to the end of train; comments may
    # name things, code may not use them
    code = re.sub(r"#.*", "", "\n".join(LINES[DEFS["Args"].end_lineno: DEFS["train"].end_lineno]))
    for forbidden in ["fsync", "atomic", "pickle", "torch.save", "torch.load", "format_version", "signal.",
                      "wandb", "SummaryWriter", "UserError", "tqdm", "sys.stderr", "print("]:
        assert forbidden not in code, f"{forbidden!r} appears in the algorithm stretch"
    assert "tyro" not in algorithm_stretch().split("class Args", 1)[1], "tyro is used in the algorithm stretch"


def test_one_noise_interface_no_isinstance_on_noise_types():
    names = {"Noise", "GaussianNoise", "OUNoise", "ParamNoise"}
    for node in ast.walk(TREE):
        if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "isinstance":
            checked = {getattr(n, "id", None) for n in ast.walk(node.args[1])}
            assert not checked & names, f"isinstance on a noise type at line {node.lineno}"
    for name in ["GaussianNoise", "OUNoise", "ParamNoise"]:
        assert issubclass(getattr(ddpg, name), ddpg.Noise)
        assert any(f"{name}(" in line for line in LINES if line.lstrip().startswith('"')), name  # its NOISES line
    assert set(ddpg.NOISES) == {"gaussian", "ou", "param"}


def test_every_flag_has_help_beside_it():
    body = LINES[DEFS["Args"].lineno: DEFS["Args"].end_lineno]
    fields = [ln for ln in body if re.match(r"    \w+: .+ = .+", ln)]
    assert len(fields) == len(ddpg.dataclasses.fields(ddpg.Args))
    assert all("  # " in ln for ln in fields), [ln for ln in fields if "  # " not in ln]
