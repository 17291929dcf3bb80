#!/usr/bin/env bash
# docs/TUTORIAL.md section 6.1's table: each idea of benchmarks/ideas.py (huber nstep pink per) applied to a
# scratch worktree of HEAD, never merged; where its diff lands (above or below the marked line); the unedited
# layout, unit and algorithm tests; a checkpoint HEAD wrote before the edit resumed, evaluated and loaded; a
# run with the idea on and the default --torch-threads 0.   bash benchmarks/try_ideas.sh huber nstep pink per
set -u
repo=$(cd "$(dirname "$0")/.." && pwd)
tmp=$(mktemp -d)
export WANDB_MODE=offline
rev=$(git -C "$repo" rev-parse HEAD)
OMP_NUM_THREADS=1 python "$repo/ddpg.py" --env-id Pendulum-v1 --total-steps 600 --start-steps 200 --batch-size 32 \
  --hidden-sizes 32 32 --eval-every 300 --eval-episodes 1 --save-every 300 --save-buffer --runs-dir "$tmp/before" \
  --exp-name before --torch-threads 1 > /dev/null 2>&1 || { echo "error: the run of HEAD failed"; exit 1; }
for idea in "$@"; do
  case $idea in huber) flag="--critic-loss huber";; nstep) flag="--n-step 3";; pink) flag="--noise-type pink";;
                per) flag="--per-alpha 0.6";; *) echo "error: unknown idea $idea"; exit 2;; esac
  wt="$tmp/$idea"
  git -C "$repo" worktree add -q --detach "$wt" "$rev"
  python "$repo/benchmarks/ideas.py" "$idea" "$wt/ddpg.py"
  marker=$(grep -n "^# ==== THE PLUMBING" "$wt/ddpg.py" | cut -d: -f1)
  above=0; below=0
  for h in $(git -C "$wt" diff -U0 ddpg.py | grep "^@@" | sed -E 's/^@@ -[0-9,]+ \+([0-9]+).*/\1/'); do
    if [ "$h" -lt "$marker" ]; then above=$((above + 1)); else below=$((below + 1)); fi
  done
  echo "== $idea ($flag): diff hunks above the marked line $above, below $below; $(git -C "$wt" diff --shortstat ddpg.py)"
  (cd "$wt" && OMP_NUM_THREADS=1 python -m pytest -q -p no:cacheprovider tests/test_layout.py tests/test_units.py \
     tests/test_algorithm.py 2>&1 | tail -1 | sed "s/^/   tests: /")
  cp -r "$tmp/before" "$wt/before" && run=$(ls -d "$wt"/before/*)
  (cd "$wt" && OMP_NUM_THREADS=1 python ddpg.py --resume "$run" --total-steps 800 > "$wt/resume.out" 2>&1
   echo "   HEAD's checkpoint resumed: exit $?; $(grep -c '^warning' "$wt/resume.out") warning(s)"; grep '^warning' "$wt/resume.out" | cut -c1-150 | sed 's/^/     /')
  (cd "$wt" && OMP_NUM_THREADS=1 python ddpg.py --env-id Pendulum-v1 --eval-only --checkpoint "$run" --eval-episodes 1 2>&1 \
     | tail -1 | cut -c1-90 | sed "s/^/   eval-only: /")
  (cd "$wt" && python -c "import ddpg; print('   load_policy:', ddpg.load_policy('$run'))" 2>&1 | tail -1 | cut -c1-90)
  (cd "$wt" && env -u OMP_NUM_THREADS python ddpg.py --env-id Pendulum-v1 --total-steps 1200 --start-steps 300 \
     --batch-size 64 --eval-every 600 --eval-episodes 2 --runs-dir "$wt/on" $flag 2>&1 | tail -1 | cut -c1-100 \
     | sed "s/^/   default threads, idea on: /")
  git -C "$repo" worktree remove --force "$wt"
done
rm -rf "$tmp"
