"""Every Python snippet of the README runs as pasted (issue 28), in a fresh folder whose runs/ holds a short
HopperBulletEnv-v0 run made first, with ddpg importable as after `pip install -e .`."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from conftest import REPO, cli_command

README = (REPO / "README.md").read_text()
SNIPPETS = re.findall(r"```python\n(.*?)```", README, flags=re.S)
HOPPER_TINY = ["--env-id", "HopperBulletEnv-v0", "--total-steps", "300", "--start-steps", "100", "--batch-size", "32",
               "--hidden-sizes", "32", "32", "--eval-every", "300", "--eval-episodes", "1", "--max-episode-steps", "50",
               "--torch-threads", "1", "--no-cuda"]


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("user")
    cmd, env = cli_command(HOPPER_TINY)
    proc = subprocess.run(cmd, cwd=folder, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    return folder


def test_the_readme_has_python_snippets():
    assert len(SNIPPETS) >= 2


@pytest.mark.parametrize("index", range(len(SNIPPETS)))
def test_a_readme_snippet_runs_as_pasted(index, folder):
    _, env = cli_command([])
    proc = subprocess.run([sys.executable, "-c", SNIPPETS[index]], cwd=folder, env=env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, f"snippet {index}:\n{SNIPPETS[index]}\n{proc.stderr[-3000:]}"
    assert proc.stdout.strip(), "the snippet printed nothing"
