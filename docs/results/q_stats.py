"""How concentrated each estimated Q is: row entropy and largest entry.

Q is where a class's off-target mass goes (S without its diagonal, rows
normalized: simsoft.losses.off_target_distribution); at equal mass m the
target of class y is (1 - m) onehot(y) + m Q_y. A uniform row (label
smoothing) has entropy log(C - 1) (2.20 nats for 10 classes) and entries
1 / (C - 1); a row that sends all its mass to one class has entropy 0.

  python docs/results/q_stats.py WORKDIR...   # each with estimate/similarity.npy
"""

import os
import sys

import numpy as np

from simsoft import losses


def q_stats(similarity: np.ndarray) -> dict[str, float]:
  """Row entropy (nats) and largest entry of Q, min / mean / max over rows."""
  q = np.asarray(losses.off_target_distribution(similarity), np.float64)
  c = q.shape[0]
  off = q[~np.eye(c, dtype=bool)].reshape(c, c - 1)
  safe = np.where(off > 0, off, 1.0)
  entropy = -(off * np.log(safe)).sum(axis=1)
  largest = off.max(axis=1)
  uniform = np.all(np.abs(off - 1.0 / (c - 1)) < 1e-6, axis=1)
  return {
      "entropy_min": entropy.min(),
      "entropy_mean": entropy.mean(),
      "entropy_max": entropy.max(),
      "uniform_entropy": np.log(c - 1),
      "largest_min": largest.min(),
      "largest_mean": largest.mean(),
      "largest_max": largest.max(),
      "uniform_rows": int(uniform.sum()),
      "classes": c,
  }


def main(workdirs: list[str]) -> None:
  print(
      "| workdir | row entropy, nats: min / mean / max (uniform) |"
      " largest entry: min / mean / max | uniform rows |"
  )
  print("|---|---|---|---|")
  for w in workdirs:
    s = q_stats(np.load(os.path.join(w, "estimate", "similarity.npy")))
    print(
        f"| {w} | {s['entropy_min']:.2f} / {s['entropy_mean']:.2f} /"
        f" {s['entropy_max']:.2f} ({s['uniform_entropy']:.2f}) |"
        f" {s['largest_min']:.2f} / {s['largest_mean']:.2f} /"
        f" {s['largest_max']:.2f} | {s['uniform_rows']} of {s['classes']} |"
    )


if __name__ == "__main__":
  main(sys.argv[1:])
