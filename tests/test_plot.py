"""experiments/plot.py on run folders made up here: grouping, statistics, the TensorBoard
fallback, and the PNG, SVG and markdown table it writes."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

ROOT = Path(__file__).resolve().parents[1]
PLOT = ROOT / "experiments" / "plot.py"
STEPS = [1000, 2000, 3000]
# final returns of the 4 seeds of each (env, noise type): the IQM is the mean of the middle two
FINALS = {("Pendulum-v1", "gaussian"): [-400.0, -300.0, -200.0, 100.0],
          ("Pendulum-v1", "ou"): [-900.0, -800.0, -800.0, -100.0],
          ("HopperBulletEnv-v0", "gaussian"): [500.0, 1000.0, 1500.0, 3000.0]}


def load_plot_module():
    spec = importlib.util.spec_from_file_location("experiments_plot", PLOT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


plot = load_plot_module()


def make_run(runs_dir: Path, env_id: str, noise_type: str, seed: int, curve: list[float],
             status: str | None = "finished", **config) -> Path:
    """A run folder like ddpg.py's: config.json and (unless status is None) summary.json."""
    folder = runs_dir / f"{env_id}__x-{noise_type}__{seed}__{1000 + seed}"
    folder.mkdir(parents=True)
    cfg = {"env_id": env_id, "seed": seed, "exp_name": f"x-{noise_type}", "noise_type": noise_type,
           "target_noise": 0.0, "hidden_sizes": [32, 32], "runs_dir": str(runs_dir), "cuda": seed % 2 == 0,
           "torch_threads": seed, **config}
    (folder / "config.json").write_text(json.dumps(cfg))
    if status is not None:
        summary = {"status": status, "env_id": env_id, "seed": seed, "total_steps": STEPS[len(curve) - 1],
                   "eval_returns": [[s, r] for s, r in zip(STEPS, curve, strict=False)],
                   "final_eval_return_mean": curve[-1] if status == "finished" else None}
        (folder / "summary.json").write_text(json.dumps(summary))
    return folder


@pytest.fixture
def runs_dir(tmp_path):
    """3 groups x 4 seeds of finished runs (seed, cuda, threads and paths differ but never make a
    group), an interrupted run and a diverged one."""
    runs = tmp_path / "runs"
    for (env_id, noise_type), finals in FINALS.items():
        for seed, final in enumerate(finals, start=1):
            make_run(runs / "sweep", env_id, noise_type, seed, [final - 200.0, final - 100.0, final])
    make_run(runs / "other", "Pendulum-v1", "gaussian", 9, [-1500.0], status="interrupted")
    make_run(runs / "other", "Pendulum-v1", "ou", 9, [-1500.0], status="diverged")
    return runs


def table_row(table: str, env_id: str, group: str) -> list[str]:
    (row,) = [ln for ln in table.splitlines() if ln.startswith(f"| {env_id} | {group} |")]
    return [cell.strip() for cell in row.strip("|").split("|")]


def test_cli_writes_png_svg_and_table(runs_dir, tmp_path):
    out = tmp_path / "figs" / "noise"
    result = subprocess.run([sys.executable, str(PLOT), str(runs_dir), "--out", str(out), "--title", "Noise"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert Path(f"{out}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "<svg" in Path(f"{out}.svg").read_text()
    table = Path(f"{out}.md").read_text()
    assert table in result.stdout
    assert "left out 2 run(s)" in result.stderr and "interrupted" in result.stderr and "diverged" in result.stderr
    assert len([ln for ln in table.splitlines() if ln.startswith("| ") and "---" not in ln]) == 1 + 3


@pytest.mark.parametrize("env_id, noise_type", list(FINALS))
def test_table_statistics_over_seeds(runs_dir, tmp_path, env_id, noise_type):
    plot.main([str(runs_dir), "--out", str(tmp_path / "t")])
    row = table_row((tmp_path / "t.md").read_text(), env_id, f"noise_type={noise_type}")
    finals = np.array(FINALS[(env_id, noise_type)])
    seeds, steps, mean, std, iqm = row[2:7]
    assert (seeds, steps) == ("4", "3000")
    assert float(mean) == pytest.approx(finals.mean(), abs=0.05)
    assert float(std) == pytest.approx(finals.std(ddof=1), abs=0.05)
    assert float(iqm) == pytest.approx(stats.trim_mean(finals, 0.25), abs=0.05)
    assert float(iqm) == pytest.approx(np.sort(finals)[1:3].mean(), abs=0.05)
    interval, kind = row[7].rsplit(" ", 1)
    low, high = (float(x) for x in interval.strip("[]").split(","))
    assert kind == "range" and (low, high) == (finals.min(), finals.max())  # 4 seeds: the range, not a CI


@pytest.mark.parametrize("values, expected", [
    ([5.0], 5.0),
    ([1.0, 9.0], 5.0),  # 2 values: the IQM is the mean
    ([0.0, 10.0, 100.0], (0.25 * 0.0 + 10.0 + 0.25 * 100.0) / 1.5),  # 23.33; mean 36.67, trim_mean 36.67
    ([484.0, 780.0, 1457.0], (0.25 * 484.0 + 780.0 + 0.25 * 1457.0) / 1.5),  # 843.5: the earlier Hopper DDPG run's seeds (RESULTS.md, experiment 4)
    ([-400.0, -300.0, -200.0, 100.0], -250.0),  # 4 values: the middle two
    ([1.0, 2.0, 3.0, 4.0, 100.0], (0.75 * 2.0 + 3.0 + 0.75 * 4.0) / 2.5),  # 3.0: the outlier has weight 0
    ([float(v) for v in range(8)], 3.5),  # the middle four
])
def test_iqm_is_the_interpolated_interquartile_mean(values, expected):
    assert plot.iqm(values) == pytest.approx(expected)
    assert plot.iqm(values[::-1]) == pytest.approx(expected)  # order does not matter


def test_iqm_against_trim_mean_and_the_mean():
    rng = np.random.default_rng(0)
    for n in range(1, 13):
        for _ in range(20):
            x = rng.standard_cauchy(n) * 100.0  # heavy tails: outliers are common
            value = plot.iqm(x)
            assert x.min() <= value <= x.max()
            if n % 4 == 0:  # the quartiles fall between values: scipy's (and rliable's) 25% trimmed mean
                assert value == pytest.approx(stats.trim_mean(x, 0.25))
            if n <= 2:  # every value is cut in half or whole: the mean, nothing else is possible
                assert value == pytest.approx(x.mean())
    x = np.array([0.0, 10.0, 100.0])
    assert stats.trim_mean(x, 0.25) == pytest.approx(x.mean())  # what the table showed before: no information
    assert plot.iqm(x) < x.mean()  # the high outlier pulls the mean, not the IQM
    assert np.isnan(plot.iqm([]))


def test_table_iqm_with_few_seeds(tmp_path):
    runs = tmp_path / "runs"
    for seed, final in enumerate([0.0, 10.0, 100.0], start=1):
        make_run(runs, "Pendulum-v1", "ou", seed, [final - 200.0, final - 100.0, final])
    for seed, final in enumerate([-500.0, -300.0], start=1):
        make_run(runs, "Pendulum-v1", "gaussian", seed, [final - 200.0, final - 100.0, final])
    plot.main([str(runs), "--out", str(tmp_path / "t")])
    table = (tmp_path / "t.md").read_text()
    three = table_row(table, "Pendulum-v1", "noise_type=ou")
    assert (three[2], three[4], three[6]) == ("3", "36.7", "23.3")  # seeds, mean, IQM
    two = table_row(table, "Pendulum-v1", "noise_type=gaussian")
    assert (two[2], two[4], two[6]) == ("2", "-400.0", "= mean")
    assert "interpolated" in table and "fewer than 3 seeds it equals the mean" in table


def test_groups_by_differing_options_only(runs_dir):
    runs = plot.load_runs([runs_dir], include_unfinished=False)
    assert len(runs) == 12
    assert plot.differing_keys(runs) == ["noise_type"]  # not seed, cuda, torch_threads, runs_dir, exp_name
    groups = plot.group_runs(runs, ["noise_type"])
    assert sorted((g.env_id, g.label, len(g.runs)) for g in groups) == [
        ("HopperBulletEnv-v0", "noise_type=gaussian", 4), ("Pendulum-v1", "noise_type=gaussian", 4),
        ("Pendulum-v1", "noise_type=ou", 4)]


def test_label_keys_choose_the_groups(runs_dir, tmp_path, capsys):
    plot.main([str(runs_dir), "--out", str(tmp_path / "t"), "--label-keys", "target-noise"])
    table = (tmp_path / "t.md").read_text()
    assert table_row(table, "Pendulum-v1", "target_noise=0.0")[2] == "8"  # both noise types pooled
    assert "pooled" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        plot.main([str(runs_dir), "--out", str(tmp_path / "t"), "--label-keys", "no_such_option"])


def test_with_5_seeds_the_band_and_the_table_give_a_bootstrap_ci(tmp_path):
    runs = tmp_path / "runs"
    finals = np.array([-500.0, -300.0, -250.0, -200.0, 100.0])
    for seed, final in enumerate(finals, start=1):
        make_run(runs, "Pendulum-v1", "ou", seed, [final - 200.0, final - 100.0, final])
    plot.main([str(runs), "--out", str(tmp_path / "t"), "--resamples", "500"])
    interval, kind = table_row((tmp_path / "t.md").read_text(), "Pendulum-v1", "x-ou")[7].rsplit(" ", 1)
    low, high = (float(x) for x in interval.strip("[]").split(","))
    assert kind == "CI" and finals.min() < low < finals.mean() < high < finals.max()
    expected = plot.bootstrap_ci(finals, 0.95, 500)
    assert (low, high) == pytest.approx(expected, abs=0.05)


def test_sweep_runs_are_named_by_their_arm_and_can_be_renamed(tmp_path):
    """exp-names from experiments/sweep.py (SWEEP_ARM): legend and table say 'td3', not the flag list."""
    runs = tmp_path / "runs"
    for arm, options in [("ddpg", {}), ("td3", {"num_q": 2, "policy_delay": 2, "target_noise": 0.2})]:
        for seed in (1, 2):
            folder = make_run(runs, "HopperBulletEnv-v0", "gaussian", seed, [100.0 * seed], **options)
            config = json.loads((folder / "config.json").read_text())
            (folder / "config.json").write_text(json.dumps({**config, "exp_name": f"hopper_{arm}"}))
            folder.rename(folder.with_name(f"{arm}-{folder.name}"))
    plot.main([str(runs), "--out", str(tmp_path / "t")])
    table = (tmp_path / "t.md").read_text()
    assert table_row(table, "HopperBulletEnv-v0", "td3")[2] == "2" and table_row(table, "HopperBulletEnv-v0", "ddpg")
    assert "num_q" not in table
    plot.main([str(runs), "--out", str(tmp_path / "r"), "--label", "td3=TD3 combination"])
    assert table_row((tmp_path / "r.md").read_text(), "HopperBulletEnv-v0", "TD3 combination")[2] == "2"
    plot.main([str(runs), "--out", str(tmp_path / "f"), "--no-arm-names"])
    assert "num_q=2, policy_delay=2, target_noise=0.2" in (tmp_path / "f.md").read_text()
    with pytest.raises(SystemExit):
        plot.main([str(runs), "--out", str(tmp_path / "x"), "--label", "sac=SAC"])


def test_curve_band_is_a_bootstrap_interval_of_the_mean(runs_dir):
    runs = plot.load_runs([runs_dir], include_unfinished=False)
    (group,) = [g for g in plot.group_runs(runs, ["noise_type"])
                if g.env_id == "Pendulum-v1" and g.label == "noise_type=ou"]
    steps, mean, low, high = plot.curve_stats(group, confidence=0.95, resamples=500)
    finals = np.array(FINALS[("Pendulum-v1", "ou")])
    assert list(steps) == STEPS
    np.testing.assert_allclose(mean, [finals.mean() - 200, finals.mean() - 100, finals.mean()])
    # 4 seeds: fewer than plot.CI_MIN_SEEDS, so the band is the seeds' range
    np.testing.assert_allclose(low, finals.min() - np.array([200, 100, 0]))
    np.testing.assert_allclose(high, finals.max() - np.array([200, 100, 0]))
    values = np.array([-900.0, -800.0, -800.0, -100.0, -50.0])
    ci = plot.spread(values, 0.95, 500)
    assert ci == plot.bootstrap_ci(values, 0.95, 500) and values.min() < ci[0] < values.mean() < ci[1] < values.max()
    assert plot.bootstrap_ci(np.array([5.0]), 0.95, 100) == (5.0, 5.0)
    assert plot.bootstrap_ci(np.array([5.0, 5.0, 5.0]), 0.95, 100) == (5.0, 5.0)


def test_unfinished_runs_and_repeated_seeds(tmp_path):
    runs = tmp_path / "runs"
    make_run(runs / "a", "Pendulum-v1", "ou", 1, [-900.0, -800.0], status="interrupted")
    make_run(runs / "b", "Pendulum-v1", "ou", 1, [-900.0, -800.0, -700.0])  # the same seed, run again
    make_run(runs / "b", "Pendulum-v1", "ou", 2, [-500.0, -400.0, -300.0])
    finished = plot.load_runs([runs], include_unfinished=False)
    everything = plot.load_runs([runs], include_unfinished=True)
    assert (len(finished), len(everything)) == (2, 3)
    (group,) = plot.group_runs(everything, [])
    assert sorted(run.final for run in group.runs) == [-700.0, -300.0]  # seed 1: the run that got furthest


def test_tensorboard_events_when_summary_has_no_curve(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboardX import SummaryWriter

    folder = make_run(tmp_path / "runs", "Pendulum-v1", "ou", 1, [0.0], status=None)  # crashed: no summary
    writer = SummaryWriter(str(folder))
    for step, value in zip(STEPS, [-900.0, -600.0, -300.0], strict=True):
        writer.add_scalar(plot.EVAL_TAG, value, step)
    writer.close()
    run = plot.load_run(folder)
    assert run.status == "no summary.json"
    assert list(run.steps) == STEPS and list(run.returns) == [-900.0, -600.0, -300.0] and run.final == -300.0
    assert plot.main([str(tmp_path / "runs"), "--out", str(tmp_path / "tb"), "--include-unfinished"]) == 0
    assert "| Pendulum-v1 | x-ou | 1 | 3000 | -300.0 |" in (tmp_path / "tb.md").read_text()


def test_no_runs_is_an_error(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        plot.main([str(tmp_path), "--out", str(tmp_path / "x")])
    assert exit_info.value.code == 2 and "no finished runs" in capsys.readouterr().err
