"""ddpg.py stays readable like CleanRL: the flags, then the whole algorithm in one stretch ending with the
training loop, then a marked line, then the run's plumbing. These checks read the source for structure only:
no line numbers, no line counts and no fixed list of what the algorithm holds, so a researcher's idea (a flag, a
buffer array, a noise, a longer loss) never fails them; plumbing creeping above the line does."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import ddpg

SOURCE = (Path(__file__).resolve().parents[1] / "ddpg.py").read_text()
TREE = ast.parse(SOURCE)
LINES = SOURCE.splitlines()
DEFS = {node.name: node for node in TREE.body if isinstance(node, (ast.FunctionDef, ast.ClassDef))}
ALGORITHM_LINE = next(i for i, ln in enumerate(LINES, 1) if ln.startswith("# ==== THE ALGORITHM"))
PLUMBING_LINE = next(i for i, ln in enumerate(LINES, 1) if ln.startswith("# ==== THE PLUMBING"))


def defined_between(start: int, end: int) -> list[str]:
    return [n.name for n in TREE.body if isinstance(n, (ast.FunctionDef, ast.ClassDef)) and start < n.lineno < end]


def test_flags_then_the_algorithm_ending_with_the_loop_then_the_marked_line_then_the_plumbing():
    assert DEFS["Args"].end_lineno < ALGORITHM_LINE < PLUMBING_LINE, "Args, the algorithm, the plumbing: in that order"
    algorithm = defined_between(ALGORITHM_LINE, PLUMBING_LINE)
    assert algorithm[-1] == "train", "the algorithm stretch ends with the training loop train()"
    for core in ["Actor", "QNetwork", "ReplayBuffer", "Noise", "bellman_target", "polyak_update", "Learner"]:
        assert core in algorithm, f"{core} is not in the algorithm stretch"
    gap = LINES[DEFS["train"].end_lineno: PLUMBING_LINE - 1]
    assert all(not ln.strip() for ln in gap), "something sits between the loop and the marked line"
    plumbing = defined_between(PLUMBING_LINE, len(LINES) + 1)
    for name in ["validate", "parse_args", "make_env", "load_checkpoint", "restore", "Logger", "Run", "setup",
                 "eval_only", "main"]:
        assert name in plumbing, f"{name} is not below the marked line"


def test_no_plumbing_in_the_algorithm_stretch():
    # from the end of Args (which declares every flag, logging's too) to the marked line; comments may name
    # things, code may not use them
    code = re.sub(r"#.*", "", "\n".join(LINES[DEFS["Args"].end_lineno: PLUMBING_LINE]))
    for forbidden in ["fsync", "atomic", "pickle", "torch.save", "torch.load", "format_version", "signal.",
                      "wandb", "SummaryWriter", "UserError", "tqdm", "sys.stderr", "print(", "checkpoint"]:
        assert forbidden not in code, f"{forbidden!r} appears in the algorithm stretch"
    assert "tyro" not in "\n".join(LINES[: PLUMBING_LINE]).split("class Args", 1)[1], "tyro in the algorithm"


def noise_classes() -> set[str]:
    """Every class of the file that derives from Noise, directly or not."""
    found, grew = {"Noise"}, True
    while grew:
        more = {n.name for n in TREE.body if isinstance(n, ast.ClassDef)
                and any(getattr(b, "id", None) in found for b in n.bases)}
        grew, found = not more <= found, found | more
    return found - {"Noise"}


def test_one_noise_interface_every_noise_registered_no_isinstance_on_noise_types():
    names = noise_classes() | {"Noise"}
    assert noise_classes(), "no Noise subclass found"
    for node in ast.walk(TREE):
        if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "isinstance":
            checked = {getattr(n, "id", None) for n in ast.walk(node.args[1])}
            assert not checked & names, f"isinstance on a noise type at line {node.lineno}"
    registry = next(n for n in TREE.body if isinstance(n, ast.Assign) and getattr(n.targets[0], "id", "") == "NOISES")
    built = {getattr(c.func, "id", None) for c in ast.walk(registry) if isinstance(c, ast.Call)}
    for name in noise_classes():
        assert issubclass(getattr(ddpg, name), ddpg.Noise)
        assert name in built or any(issubclass(getattr(ddpg, b), getattr(ddpg, name)) for b in built
                                    if isinstance(getattr(ddpg, b, None), type)), f"{name} has no NOISES entry"
    for key, factory in ddpg.NOISES.items():  # one signature: the flags, the actor, the action space, the episode length
        assert factory.__code__.co_argcount == 4, f"NOISES[{key!r}] does not take (args, actor, space, ep_len)"


def test_every_flag_has_help_beside_it():
    body = LINES[DEFS["Args"].lineno: DEFS["Args"].end_lineno]
    fields = [ln for ln in body if re.match(r"    \w+: .+ = .+", ln)]
    assert len(fields) == len(ddpg.dataclasses.fields(ddpg.Args))
    assert all("  # " in ln for ln in fields), [ln for ln in fields if "  # " not in ln]
