"""Resident memory of a full replay buffer: allocate ddpg.ReplayBuffer, write every slot, and
compare the process's RSS before and after with the raw size (observations stored once).

    python benchmarks/buffer_memory.py --obs-dim 15 --act-dim 3 --capacity 1000000   # HopperBulletEnv-v0
"""

import argparse
import os
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # `python benchmarks/buffer_memory.py` finds ddpg.py
import ddpg  # noqa: E402


def rss_mib() -> float:
    with open(f"/proc/{os.getpid()}/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--obs-dim", type=int, default=15)
    parser.add_argument("--act-dim", type=int, default=3)
    parser.add_argument("--capacity", type=int, default=1_000_000)
    ns = parser.parse_args()
    before = rss_mib()
    buf = ddpg.ReplayBuffer(ns.capacity, ns.obs_dim, ns.act_dim, torch.device("cpu"))
    allocated = rss_mib()
    for t in buf.obs, buf.actions, buf.rewards, buf.terminated, buf.valid:  # touch every page, as a full run does
        t.fill_(1)
    full = rss_mib()
    raw = ns.capacity * (4 * ns.obs_dim + 4 * ns.act_dim + 4 + 4 + 1) / 2**20
    print(f"capacity {ns.capacity:,}, obs {ns.obs_dim}, act {ns.act_dim}: raw {raw:.1f} MiB "
          f"({raw * 2**20 / ns.capacity:.0f} B/slot); RSS +{allocated - before:.1f} MiB after allocation, "
          f"+{full - before:.1f} MiB when full ({(full - before) / raw:.2f}x raw)")


if __name__ == "__main__":
    main()
