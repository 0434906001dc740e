#!/usr/bin/env bash
# The README's Quick start run at two commits, alternately, as whole processes.
#
#   bash benchmarks/quickstart_ab.sh OLD_COMMIT [RUNS [EXTRA_FLAGS...]]
#
# Checks OLD_COMMIT out in a temporary git worktree, then runs
# `python -m simsoft.main --config configs/default.py` RUNS times (3) from it
# and from this checkout in turn (old, new, old, ...; one warm-up each first,
# not counted), each into a fresh workdir, with .venv/bin/python. Prints each
# run's wall and CPU seconds (/usr/bin/time) and its per-phase times (the
# "[phase] finished in" lines), then the medians. EXTRA_FLAGS go to both
# (e.g. --config.train_eval.every_epochs=0).
set -euo pipefail
old="${1:?usage: quickstart_ab.sh OLD_COMMIT [RUNS [EXTRA_FLAGS...]]}"
runs="${2:-3}"
shift $(( $# >= 2 ? 2 : 1 ))
root="$(cd "$(dirname "$0")/.." && pwd)"
python="$root/.venv/bin/python"
scratch="$(mktemp -d)"
trap 'git -C "$root" worktree remove --force "$scratch/old" >/dev/null 2>&1 || true; rm -rf "$scratch"' EXIT
git -C "$root" worktree add --detach "$scratch/old" "$old" >/dev/null 2>&1

one() {  # one() NAME SOURCE_DIR -> "wall cpu phase=seconds..."
  local name="$1" src="$2" work="$scratch/work-$1"
  shift 2
  rm -rf "$work"
  (cd "$src" && PYTHONPATH="$src" /usr/bin/time -f "%e %U %S" -o "$scratch/time" \
    "$python" -m simsoft.main --config configs/default.py --workdir "$work" "$@" \
    >"$scratch/log" 2>&1) || { tail -5 "$scratch/log"; exit 1; }
  read -r wall user sys <"$scratch/time"
  printf '%s %s %.2f' "$name" "$wall" "$(echo "$user + $sys" | bc)"
  grep -o '\[[a-z]*\] finished in [0-9.]*s' "$scratch/log" \
    | sed 's/\[\([a-z]*\)\] finished in \([0-9.]*\)s/ \1=\2/' | tr -d '\n'
  echo
}

one old "$scratch/old" "$@" >/dev/null
one new "$root" "$@" >/dev/null
for _ in $(seq "$runs"); do
  one old "$scratch/old" "$@"
  one new "$root" "$@"
done | tee "$scratch/rows"
echo "medians (wall s, cpu s, evaluate s):"
for name in old new; do
  grep "^$name " "$scratch/rows" | awk -v n="$name" '
    { w[NR]=$2; c[NR]=$3; e[NR]=0
      for (i=4;i<=NF;i++) if ($i ~ /^evaluate=/) { split($i,a,"="); e[NR]=a[2] } }
    function med(x,   k,m,t,i,j) { m=NR; for(i=1;i<=m;i++) t[i]=x[i]
      for(i=1;i<=m;i++) for(j=i+1;j<=m;j++) if (t[j]<t[i]) {k=t[i];t[i]=t[j];t[j]=k}
      return (m%2) ? t[(m+1)/2] : (t[m/2]+t[m/2+1])/2 }
    END { printf "%s wall %.1f cpu %.1f evaluate %.1f\n", n, med(w), med(c), med(e) }'
done
