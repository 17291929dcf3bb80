"""Learning curves and a table of final returns from ddpg.py run folders.

    python experiments/plot.py runs/noise --out docs/figs/noise --title "Exploration noise"

Every folder under the given paths that holds a config.json is a run. Its evaluation curve
comes from summary.json (eval_returns), or from its TensorBoard events (eval/return_mean) when
summary.json lacks it. Runs are grouped by environment (one panel each) and by the config.json
options that differ between runs (seed, names, paths, logging and device options aside; choose
them with --label-keys). A group is named after its arm: runs of a sweep (exp-names SWEEP_ARM...)
take the exp-name without the sweep's name (`td3` for [variants.td3], `noise-type-ou` for a grid
point); other runs are named by the options that differ; --label OLD=NEW renames. Each group is
drawn as the mean over seeds with a 95% bootstrap confidence band, or, with fewer than 5 seeds
(too few for a bootstrap to mean much), the band of the seeds' range, and the legend says which.
Writes OUT.png, OUT.svg and OUT.md, a markdown table of final returns per
group: mean, std over seeds, IQM (interquartile mean, interpolated so that it means something
with 3 seeds already; see iqm()) and the number of seeds.

Only runs whose summary.json says "finished" are used, unless --include-unfinished.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

try:
    import matplotlib
    import matplotlib.pyplot as plt
    import numpy as np
    from scipy import stats
except ImportError as e:  # ddpg.py's requirements lack the plotting ones
    sys.exit(f"error: plot.py needs {e.name}: pip install -r experiments/requirements.txt")

matplotlib.use("Agg")  # files only, no display: before the first figure

EVAL_TAG = "eval/return_mean"
# config.json keys that never define a group: identity, paths, logging, device, resuming.
IGNORED_KEYS = {"seed", "exp_name", "runs_dir", "env_id", "cuda", "torch_threads", "torch_deterministic",
                "capture_video", "track", "wandb_project", "wandb_entity", "log_every", "save_every",
                "save_buffer", "resume", "checkpoint", "eval_only"}


@dataclasses.dataclass
class Run:
    """One run folder: its options, its evaluation curve and how it ended."""

    path: Path
    config: dict
    steps: np.ndarray
    returns: np.ndarray
    status: str  # summary.json's status, or "no summary.json"
    final: float | None  # final evaluation return


@dataclasses.dataclass
class Group:
    """Runs of one environment with the same label options, normally one per seed."""

    env_id: str
    label: str
    runs: list[Run]


# ---------------------------------------------------------------------------------------------
# Loading runs
# ---------------------------------------------------------------------------------------------


def read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def tensorboard_curve(run_dir: Path) -> list[tuple[int, float]]:
    """The eval/return_mean scalars of a run folder's TensorBoard event files."""
    try:
        from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    except ImportError:
        raise SystemExit(f"error: {run_dir} has no eval curve in summary.json; reading its TensorBoard "
                         "events needs tensorboard: pip install -r experiments/requirements.txt") from None
    accumulator = EventAccumulator(str(run_dir), size_guidance={"scalars": 0})
    accumulator.Reload()
    if EVAL_TAG not in accumulator.Tags().get("scalars", []):
        return []
    return [(event.step, event.value) for event in accumulator.Scalars(EVAL_TAG)]


def load_run(run_dir: Path) -> Run | None:
    """A run folder as a Run, or None without config.json or any evaluation."""
    config = read_json(run_dir / "config.json")
    if config is None:
        return None
    summary = read_json(run_dir / "summary.json") or {}
    curve = summary.get("eval_returns") or tensorboard_curve(run_dir)
    if not curve:
        return None
    curve = sorted({int(step): float(value) for step, value in curve}.items())  # last value per step wins
    steps, returns = (np.array(column) for column in zip(*curve, strict=True))
    status = summary.get("status", "no summary.json")
    final = summary.get("final_eval_return_mean")
    return Run(run_dir, config, steps, returns, status, float(final) if final is not None else float(returns[-1]))


def load_runs(paths: list[Path], include_unfinished: bool) -> list[Run]:
    """Every run under the paths (a run folder itself or any folder above run folders)."""
    folders = sorted({p.parent for path in paths for p in [path / "config.json", *path.rglob("*/config.json")]
                      if p.is_file()})
    runs, skipped = [], []
    for folder in folders:
        run = load_run(folder)
        if run is None:
            skipped.append(f"{folder} (no evaluation yet)")
        elif run.status != "finished" and not include_unfinished:
            skipped.append(f"{folder} ({run.status})")
        else:
            runs.append(run)
    if skipped:
        print(f"note: left out {len(skipped)} run(s) (--include-unfinished keeps unfinished ones):\n  "
              + "\n  ".join(skipped), file=sys.stderr)
    return runs


# ---------------------------------------------------------------------------------------------
# Grouping
# ---------------------------------------------------------------------------------------------


def hashable(value):
    if isinstance(value, dict):  # e.g. Stable-Baselines3's policy_kwargs (experiments/sb3_run.py)
        return tuple(sorted((k, hashable(v)) for k, v in value.items()))
    return tuple(hashable(v) for v in value) if isinstance(value, list) else value


def text(value) -> str:
    return ",".join(text(v) for v in value) if isinstance(value, (list, tuple)) else str(value)


def differing_keys(runs: list[Run]) -> list[str]:
    """config.json options with more than one value across the runs (ignored keys aside)."""
    keys = sorted({k for run in runs for k in run.config} - IGNORED_KEYS)
    return [k for k in keys if len({hashable(run.config.get(k)) for run in runs}) > 1]


def config_key(run: Run) -> tuple:
    """What makes a run a different experiment: its config minus the ignored keys."""
    return tuple(sorted((k, hashable(v)) for k, v in run.config.items() if k not in IGNORED_KEYS | {"env_id"}))


def drop_repeats(runs: list[Run]) -> list[Run]:
    """One run per environment, options and seed: for a re-run, the one that got furthest, then
    the newest."""
    kept: dict[tuple, Run] = {}
    for run in sorted(runs, key=lambda r: (r.steps[-1], r.path.name)):
        key = (run.config.get("env_id"), config_key(run), run.config.get("seed"))
        if key in kept:
            print(f"note: {kept[key].path} and {run.path} have the same options and seed; using {run.path}",
                  file=sys.stderr)
        kept[key] = run
    return list(kept.values())


def arm_names(groups: list[Group]) -> dict[str, str] | None:
    """Group label -> arm name, when every run comes from one sweep (exp-names SWEEP_ARM..., see
    experiments/sweep.py) and each group is one arm: the exp-name without 'SWEEP_'. Else None."""
    names = {g.label: {str(run.config.get("exp_name")) for run in g.runs} for g in groups}
    if any(len(n) != 1 for n in names.values()):
        return None
    names = {label: n.pop() for label, n in names.items()}
    sweeps = {name.split("_", 1)[0] for name in names.values()}
    if len(sweeps) != 1 or not all("_" in name for name in names.values()):
        return None
    arms = {label: name.split("_", 1)[1] for label, name in names.items()}
    by_env = {}
    for g in groups:  # two groups of one environment must not share an arm name
        by_env.setdefault(g.env_id, []).append(arms[g.label])
    return arms if all(len(a) == len(set(a)) for a in by_env.values()) else None


def group_runs(runs: list[Run], label_keys: list[str], arms: bool = True) -> list[Group]:
    """Runs grouped by environment and the values of label_keys, in a stable order, named by their
    arm (arms=True, see arm_names), else by those values."""
    buckets: dict[tuple, list[Run]] = {}
    for run in drop_repeats(runs):
        key = (run.config.get("env_id", "?"), tuple(hashable(run.config.get(k)) for k in label_keys))
        buckets.setdefault(key, []).append(run)
    groups = []
    for (env_id, values), members in sorted(buckets.items(), key=lambda item: str(item[0])):
        exp_names = sorted({str(run.config.get("exp_name")) for run in members})
        label = ", ".join(f"{k}={text(v)}" for k, v in zip(label_keys, values, strict=True))
        groups.append(Group(env_id, label or text(exp_names), sorted(members, key=lambda r: r.path.name)))
    names = arm_names(groups) if arms else None
    for g in groups:
        g.label = (names or {}).get(g.label, g.label)
    return groups


# ---------------------------------------------------------------------------------------------
# Statistics
# ---------------------------------------------------------------------------------------------


def bootstrap_ci(values: np.ndarray, confidence: float, resamples: int, seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap confidence interval of the mean; a point for fewer than 2 values or
    values that are all equal."""
    values = np.asarray(values, dtype=float)
    if len(values) < 2 or np.ptp(values) == 0:
        return float(values.mean()), float(values.mean())
    result = stats.bootstrap((values,), np.mean, confidence_level=confidence, n_resamples=resamples,
                             method="percentile", rng=np.random.default_rng(seed))
    return float(result.confidence_interval.low), float(result.confidence_interval.high)


CI_MIN_SEEDS = 5  # below this a bootstrap CI of the mean is hardly more than the seeds' range: show the range


def spread(values: np.ndarray, confidence: float, resamples: int) -> tuple[float, float]:
    """The band around a mean: the bootstrap CI with at least CI_MIN_SEEDS values, else min and max."""
    if len(values) < CI_MIN_SEEDS:
        return float(np.min(values)), float(np.max(values))
    return bootstrap_ci(values, confidence, resamples)


def curve_stats(group: Group, confidence: float, resamples: int) -> tuple[np.ndarray, ...]:
    """Steps, mean, and the band's low and high (spread()) over the seeds that evaluated at each step."""
    steps = np.unique(np.concatenate([run.steps for run in group.runs]))
    mean, low, high = (np.empty(len(steps)) for _ in range(3))
    for i, step in enumerate(steps):
        values = np.array([run.returns[run.steps == step][0] for run in group.runs if step in run.steps])
        mean[i] = values.mean()
        low[i], high[i] = spread(values, confidence, resamples)
    return steps, mean, low, high


def iqm(values) -> float:
    """Interquartile mean, interpolated: the mean of the middle 50% of the sorted values, where the
    i-th smallest of n values covers [i, i + 1) of [0, n], the middle 50% is [n/4, 3n/4], and a value
    cut by a quartile counts with the fraction of it inside. For n divisible by 4 this is the mean of
    the middle n/2 values, scipy.stats.trim_mean(x, 0.25), which rliable's IQM uses. For other n,
    trim_mean drops floor(n/4) values per side: none of 3 seeds, so its IQM is the plain mean. Here 3
    seeds weigh 1/4, 1, 1/4 (one outlier moves the IQM far less than the mean) and 5 seeds 0, 3/4, 1,
    3/4, 0. With 1 or 2 values every weight is equal: the IQM is the mean and cannot differ from it."""
    x = np.sort(np.asarray(values, dtype=float).ravel())
    n = len(x)
    if n == 0:
        return float("nan")
    left = np.arange(n)  # value i covers [i, i + 1)
    weights = np.clip(np.minimum(left + 1, 0.75 * n) - np.maximum(left, 0.25 * n), 0.0, None)
    return float(weights @ x / weights.sum())  # the weights sum to n/2


IQM_MIN_SEEDS = 3  # below this the interpolated IQM equals the mean: the table says so instead of a number


def final_stats(group: Group, confidence: float, resamples: int) -> dict:
    """Final returns over seeds: mean, std (ddof=1), IQM (interpolated, iqm()), CI of the mean,
    number of seeds."""
    finals = np.array([run.final for run in group.runs])
    low, high = spread(finals, confidence, resamples)
    return {"seeds": len(finals), "mean": finals.mean(), "std": finals.std(ddof=1) if len(finals) > 1 else np.nan,
            "iqm": iqm(finals), "low": low, "high": high,
            "steps": sorted({int(run.steps[-1]) for run in group.runs})}


# ---------------------------------------------------------------------------------------------
# Output
# ---------------------------------------------------------------------------------------------


def seed_count(groups: list[Group]) -> str:
    """'n=3', or 'n=2-3' where the environments have different numbers of seeds."""
    counts = sorted({len(g.runs) for g in groups})
    return f"n={counts[0]}" if len(counts) == 1 else f"n={counts[0]}-{counts[-1]}"


def plot(groups: list[Group], title: str | None, confidence: float, resamples: int) -> plt.Figure:
    """One panel per environment; a line per group (mean over seeds) with its confidence band,
    one legend for all panels."""
    envs = sorted({g.env_id for g in groups})
    labels = list(dict.fromkeys(g.label for g in groups))
    colors = {label: f"C{i % 10}" for i, label in enumerate(labels)}
    cols = min(len(envs), 3)
    rows = -(-len(envs) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(5 * cols, 3.6 * rows), squeeze=False)
    for ax, env_id in zip(axes.flat, envs, strict=False):  # more panels than envs: the rest are hidden
        for group in (g for g in groups if g.env_id == env_id):
            steps, mean, low, high = curve_stats(group, confidence, resamples)
            ax.plot(steps, mean, color=colors[group.label], marker="o" if len(steps) < 12 else None, markersize=3)
            ax.fill_between(steps, low, high, color=colors[group.label], alpha=0.2, linewidth=0)
        ax.set(title=env_id, xlabel="environment steps", ylabel="eval return (mean over seeds)")
        ax.grid(alpha=0.3)
    for ax in axes.flat[len(envs):]:
        ax.set_visible(False)
    handles = [plt.Line2D([], [], color=colors[label]) for label in labels]
    def band(label: str) -> str:
        few = any(len(g.runs) < CI_MIN_SEEDS for g in groups if g.label == label)
        return "band: seeds' range" if few else f"band: {confidence:.0%} CI"
    names = [f"{label} ({seed_count([g for g in groups if g.label == label])}, {band(label)})" for label in labels]
    ncol = min(len(labels), 2 if max(map(len, names)) <= 45 * cols / 2 else 1)  # long labels: one column
    fig.legend(handles, names, loc="lower center", ncol=ncol, fontsize="small", frameon=False)
    if title:
        fig.suptitle(title)
    fig.tight_layout(rect=(0, 0.06 * (-(-len(labels) // ncol)) / rows, 1, 1))
    return fig


def number(x: float) -> str:
    return "n/a" if x is None or not np.isfinite(x) else f"{x:.1f}"


def markdown_table(groups: list[Group], confidence: float, resamples: int) -> str:
    """Final evaluation returns per environment and group, and a note on how the IQM is computed."""
    lines = [f"| env | group | seeds | steps | mean | std | IQM | {confidence:.0%} CI of mean, or range |",
             "|---|---|---:|---:|---:|---:|---:|---|"]
    for group in groups:
        s = final_stats(group, confidence, resamples)
        steps = "/".join(str(x) for x in s["steps"])
        iqm_cell = number(s["iqm"]) if s["seeds"] >= IQM_MIN_SEEDS else "= mean"
        kind = "range" if s["seeds"] < CI_MIN_SEEDS else "CI"
        lines.append(f"| {group.env_id} | {group.label} | {s['seeds']} | {steps} | {number(s['mean'])} | "
                     f"{number(s['std'])} | {iqm_cell} | [{number(s['low'])}, {number(s['high'])}] {kind} |")
    lines += ["", "IQM: interquartile mean of the seeds' final returns, interpolated: the mean of the middle 50%, "
              "the seeds cut by a quartile counted with the fraction inside it (3 seeds weigh 1/4, 1, 1/4). "
              f"With fewer than {IQM_MIN_SEEDS} seeds it equals the mean (\"= mean\"). "
              f"Last column: the bootstrap {confidence:.0%} CI of the mean over seeds (CI), or with fewer than "
              f"{CI_MIN_SEEDS} seeds the seeds' range (range), since a bootstrap over so few seeds is little more."]
    return "\n".join(lines) + "\n"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="plot.py", description=__doc__, allow_abbrev=False,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("paths", nargs="+", type=Path, help="run folders, or folders holding run folders")
    parser.add_argument("--out", type=Path, required=True, help="output path without suffix: writes OUT.png, "
                        "OUT.svg and OUT.md (e.g. docs/figs/noise)")
    parser.add_argument("--title", help="figure title")
    parser.add_argument("--label-keys", nargs="+", metavar="KEY", help="config.json options that name and "
                        "define a group (default: every option that differs between the runs); runs that "
                        "differ only in other options are pooled")
    parser.add_argument("--label", action="append", default=[], metavar="OLD=NEW", help="show the group OLD "
                        "(an arm name or an options label) as NEW; repeat for several")
    parser.add_argument("--no-arm-names", action="store_true", help="name groups by the options that differ, "
                        "even for the runs of a sweep")
    parser.add_argument("--include-unfinished", action="store_true", help="also use interrupted, diverged and "
                        "still-running runs (their last evaluation counts as final)")
    parser.add_argument("--confidence", type=float, default=0.95, help="confidence level of the bands (0.95)")
    parser.add_argument("--resamples", type=int, default=2000, help="bootstrap resamples (2000)")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    ns = parser.parse_args(argv)
    if not 0 < ns.confidence < 1 or ns.resamples < 1:
        parser.error("--confidence must be in (0, 1) and --resamples positive")
    missing = [str(p) for p in ns.paths if not p.exists()]
    if missing:
        parser.error(f"not found: {', '.join(missing)}")
    runs = load_runs(ns.paths, ns.include_unfinished)
    if not runs:
        parser.error("no finished runs with evaluations found under " + ", ".join(map(str, ns.paths)))
    label_keys = [k.replace("-", "_") for k in ns.label_keys] if ns.label_keys else differing_keys(runs)
    unknown = [k for k in label_keys if not any(k in run.config for run in runs)]
    if unknown:
        parser.error(f"--label-keys: no run has {unknown} in its config.json")
    pooled = sorted(set(differing_keys(runs)) - set(label_keys))
    if pooled:
        print(f"note: runs that differ in {pooled} are pooled (not in --label-keys)", file=sys.stderr)
    bad = [item for item in ns.label if "=" not in item or not item.split("=", 1)[0]]
    if bad:
        parser.error(f"--label needs OLD=NEW, got {bad[0]!r}")
    rename = dict(item.split("=", 1) for item in ns.label)
    groups = group_runs(runs, label_keys, arms=not ns.no_arm_names and not ns.label_keys)
    unused = sorted(set(rename) - {g.label for g in groups})
    if unused:
        parser.error(f"--label {', '.join(unused)}: no such group (the groups: "
                     f"{', '.join(sorted({g.label for g in groups}))})")
    for g in groups:
        g.label = rename.get(g.label, g.label)

    ns.out.parent.mkdir(parents=True, exist_ok=True)
    fig = plot(groups, ns.title, ns.confidence, ns.resamples)
    for suffix in (".png", ".svg"):
        fig.savefig(ns.out.with_name(ns.out.name + suffix), dpi=150, bbox_inches="tight")
    plt.close(fig)
    table = markdown_table(groups, ns.confidence, ns.resamples)
    ns.out.with_name(ns.out.name + ".md").write_text(table)
    print(table + f"\nwrote {ns.out}.png, {ns.out}.svg and {ns.out}.md ({len(runs)} runs, {len(groups)} groups)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
