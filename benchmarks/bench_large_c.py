"""Large label spaces: the similarity losses and the estimation pass against optax CE as C grows.

Loss with its gradient w.r.t. the logits, jitted, batch 256, random logits
and labels, at C = 10, 100, 1,000, 10,000, 21,843 (ImageNet-21k), each
variant timed in one process, interleaved (benchmarks.common.interleave):

  optax_ce        optax.softmax_cross_entropy_with_integer_labels (baseline)
  soft_dense      make_loss_fn('soft_target', alpha=0.5), dense S [C, C]
  log_dense       make_loss_fn('log_sum', alpha=0.5), dense S
  soft_sparse     the same with a top-k SparseSimilarity (k = 64)
  log_sparse      the same, log-sum form
  soft_mass_sparse  soft_target with mass = 0.1 (its uniform fallback costs a
                  pass over the logits), sparse S
  soft_onehot     the landed code before issue 23 (rows by a one-hot matmul at
                  HIGHEST precision, the C x C target matrix per call), for
                  reference, C <= 1,000 only

`inner` evaluations run in one jitted fori_loop (each depends on the last), so
dispatch is amortized; CPU clock, median of interleaved repeats; ratios are
paired per repeat. Then one estimation pass (update_stats over 8 batches of
256) at C = 1,000: the scatter-add accumulators against the one-hot products
they replaced. Finally the share of each row's mass a top-k S keeps, on S
estimated from a synthetic 1,000-class problem (Gaussian classes in
superclasses of 10, scored by a nearest-prototype model A; confusion with its
default smoothing and with 0.01, softmax) at k = 64, and on estimated S files
given with --kept_mass_files.

  python -m benchmarks.bench_large_c              # ~5 minutes on 2 cores
  python -m benchmarks.bench_large_c --kept_mass_files W/estimate/similarity.npy
  python -m benchmarks.bench_large_c --smoke      # tiny, checks the script
"""

from __future__ import annotations

import argparse
import functools
import statistics

import jax
import jax.numpy as jnp
import numpy as np
import optax

from benchmarks import common
from simsoft import similarity as sim_lib
from simsoft import train_step as step_lib
from simsoft.similarity import sparse as sparse_lib

TARGET = 2.0  # loss + gradient time / optax CE's, at every C
MEMORY_TARGET_MB = 20.0  # sparse S at C = 21,843, k = 64
CLASSES = (10, 100, 1000, 10000, 21843)


def _onehot_soft_target(logits, labels, s, alpha=0.5):
  """The loss as landed before issue 23: C x C target matrix, one-hot matmul rows."""
  c = s.shape[0]
  rows = s / jnp.sum(s, axis=-1, keepdims=True)
  matrix = (1 - alpha) * jnp.eye(c) + alpha * rows
  onehot = jax.nn.one_hot(labels, c, dtype=matrix.dtype)
  targets = jnp.matmul(onehot, matrix, precision=jax.lax.Precision.HIGHEST)
  return -jnp.sum(targets * jax.nn.log_softmax(logits), axis=-1)


def random_sparse(c: int, k: int, seed: int = 0) -> sparse_lib.SparseSimilarity:
  """A valid top-k S: the diagonal plus k - 1 random distinct other columns."""
  rng = np.random.default_rng(seed)
  k = min(k, c)
  offsets = np.stack(
      [rng.choice(c - 1, size=k - 1, replace=False) for _ in range(c)]
  )
  cols = (np.arange(c)[:, None] + 1 + offsets) % c  # never the diagonal
  indices = np.concatenate([np.arange(c)[:, None], cols], axis=1)
  values = rng.random((c, k)).astype(np.float32)
  values[:, 0] = 1.0
  return sparse_lib.validate_sparse(
      sparse_lib.SparseSimilarity(
          indices=indices.astype(np.int32), values=values
      )
  )


def timed_losses(
    fns: dict, c: int, batch_size: int, *, inner: int, repeats: int
) -> dict[str, float]:
  """Seconds per (loss + gradient w.r.t. logits) of each (fn, S) on [B, C] logits."""
  logits = jax.random.normal(jax.random.key(0), (batch_size, c))
  labels = jax.random.randint(jax.random.key(1), (batch_size,), 0, c)
  variants = {}
  for name, (fn, s) in fns.items():
    grad = jax.grad(lambda z, y, s, fn=fn: fn(z, y, s).mean())

    @jax.jit
    def many(z, s, grad=grad):
      # new labels every evaluation, so reading S's rows is not hoisted out
      return jax.lax.fori_loop(
          0,
          inner,
          lambda i, acc: acc + grad(z + 1e-3 * acc, (labels + i) % c, s),
          z,
      )

    jax.block_until_ready(many(logits, s))
    variants[name] = lambda n, many=many, s=s: [
        jax.block_until_ready(many(logits, s)) for _ in range(n)
    ]
  times = common.interleave(variants, steps=1, repeats=repeats, warmup=1)
  return {name: [t / inner for t in ts] for name, ts in times["cpu"].items()}


def loss_rows(args) -> list[dict]:
  rows = []
  for c in args.classes:
    sparse = random_sparse(c, args.k)
    dense = sparse_lib.to_dense(sparse)  # the values do not change the cost
    dense_dev = jnp.asarray(dense)
    sparse_dev = sparse_lib.device_put(sparse)
    soft = step_lib.make_loss_fn("soft_target", 0.5)
    log = step_lib.make_loss_fn("log_sum", 0.5)
    fns = {
        "optax_ce": (
            lambda z, y, s: optax.softmax_cross_entropy_with_integer_labels(
                z, y
            ),
            dense_dev[:1, :1],
        ),
        "soft_dense": (soft, dense_dev),
        "log_dense": (log, dense_dev),
        "soft_sparse": (soft, sparse_dev),
        "log_sparse": (log, sparse_dev),
        "soft_mass_sparse": (
            step_lib.make_loss_fn("soft_target", mass=0.1),
            sparse_dev,
        ),
    }
    if c <= 1000:
      fns["soft_onehot"] = (_onehot_soft_target, dense_dev)
    work = args.batch_size * c
    inner = int(np.clip(round(args.work / work), 1, 200))
    times = timed_losses(
        fns, c, args.batch_size, inner=inner, repeats=args.repeats
    )
    base = times["optax_ce"]
    row = {"C": c, "k": sparse.k, "inner": inner}
    for name, ts in times.items():
      row[f"{name}_ms"] = 1e3 * statistics.median(ts)
      if name != "optax_ce":
        row[f"{name}_ratio"] = statistics.median(
            t / b for t, b in zip(ts, base)
        )
    row["dense_S_MB"] = 4 * c * c / 1e6
    row["sparse_S_MB"] = sparse.nbytes / 1e6
    row["meets_target"] = all(
        row[f"{n}_ratio"] <= TARGET
        for n in ("soft_dense", "log_dense", "soft_sparse", "log_sparse")
    )
    common.emit({"bench": "large_c", **row})
    rows.append(row)
    del dense_dev, dense
  return rows


def _onehot_update(stats, logits, labels, mask):
  """update_stats as landed before issue 23 (one-hot products, C x C x B)."""
  c = stats.num_classes
  valid = mask != 0
  probs = jnp.where(valid[:, None], jax.nn.softmax(logits, axis=-1), 0.0)
  pred = jnp.argmax(logits, axis=-1)
  true_1h = jax.nn.one_hot(labels, c) * valid[:, None]
  correct_1h = true_1h * (pred == labels)[:, None]
  pred_1h = jax.nn.one_hot(pred, c)
  hi = functools.partial(
      jnp.einsum, "bc,bk->ck", precision=jax.lax.Precision.HIGHEST
  )
  return stats.replace(
      confusion=stats.confusion + hi(true_1h, pred_1h),
      prob_sum=stats.prob_sum + hi(true_1h, probs),
      prob_sum_correct=stats.prob_sum_correct + hi(correct_1h, probs),
      count=stats.count + true_1h.sum(0),
      count_correct=stats.count_correct + correct_1h.sum(0),
  )


def estimation_row(args, c: int = 1000, batches: int = 8) -> dict:
  """Seconds per estimation pass (update_stats over `batches` batches)."""
  rng = np.random.default_rng(0)
  logits = jnp.asarray(
      rng.normal(size=(batches, args.batch_size, c)).astype(np.float32)
  )
  labels = jnp.asarray(rng.integers(0, c, size=(batches, args.batch_size)))
  mask = jnp.ones((args.batch_size,), jnp.float32)

  def make(update):
    @jax.jit
    def one_pass(stats):
      body = lambda i, st: update(st, logits[i], labels[i], None, mask)
      return jax.lax.fori_loop(0, batches, body, stats)

    return one_pass

  passes = {
      "scatter_add": make(sim_lib.update_stats),
      "onehot": make(lambda st, z, y, f, m: _onehot_update(st, z, y, m)),
  }
  init = sim_lib.init_stats(c)
  check = {k: jax.block_until_ready(f(init)) for k, f in passes.items()}
  jax.tree.map(
      lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5),
      check["scatter_add"],
      check["onehot"],
  )
  variants = {
      k: lambda n, f=f: [jax.block_until_ready(f(init)) for _ in range(n)]
      for k, f in passes.items()
  }
  times = common.interleave(
      variants, steps=1, repeats=max(3, args.repeats // 3), warmup=1
  )["cpu"]
  row = {
      "C": c,
      "batches": batches,
      "batch_size": args.batch_size,
      "scatter_add_ms": 1e3 * statistics.median(times["scatter_add"]),
      "onehot_ms": 1e3 * statistics.median(times["onehot"]),
  }
  row["speedup"] = row["onehot_ms"] / row["scatter_add_ms"]
  common.emit({"bench": "large_c_estimation", **row})
  return row


def synthetic_stats(c: int, per_class: int, seed: int = 0, dim: int = 64):
  """(SimilarityStats, accuracy) of a synthetic held-out split, C classes.

  Each class is a Gaussian around a prototype; prototypes come in groups of
  10 (superclasses: a shared group direction plus a class direction), and
  "model A" scores a sample by its dot products with the prototypes (logits
  = x . prototypes). Mistakes then stay mostly within the superclass, as a
  trained network's do within a taxonomy's branches.
  """
  rng = np.random.default_rng(seed)
  groups = np.repeat(rng.normal(size=(c // 10 + 1, dim)), 10, axis=0)[:c]
  protos = (groups + 0.6 * rng.normal(size=(c, dim))).astype(np.float32)
  labels = np.repeat(np.arange(c), per_class).astype(np.int32)
  stats = sim_lib.init_stats(c)
  update = jax.jit(sim_lib.update_stats)
  correct = 0
  for s in range(0, len(labels), 1000):
    y = labels[s : s + 1000]
    x = protos[y] + 1.3 * rng.normal(size=(len(y), dim)).astype(np.float32)
    logits = jnp.asarray(x @ protos.T)
    correct += int((np.asarray(logits).argmax(1) == y).sum())
    stats = update(stats, logits, y)
  return stats, correct / len(labels)


def kept_mass_rows(c: int, k: int, per_class: int) -> list[dict]:
  stats, accuracy = synthetic_stats(c, per_class)
  rows = []
  for source, options in (
      ("confusion", {}),
      ("confusion", {"smoothing": 0.01}),
      ("softmax", {}),
  ):
    s = sim_lib.build_similarity(
        source, num_classes=c, stats=stats, options=options
    )
    sp = sparse_lib.to_sparse(s, k)
    kept = sparse_lib.kept_mass(s, sp)
    off = sparse_lib.kept_off_diagonal_mass(s, sp)
    row = {
        "S": f"synthetic {c}-class (model A accuracy {accuracy:.2f}), "
        f"{source} {options or 'defaults'}",
        "k": sp.k,
        "row_mass_kept_mean": float(kept.mean()),
        "row_mass_kept_min": float(kept.min()),
        "off_diag_kept_mean": float(off.mean()),
        "off_diag_kept_min": float(off.min()),
    }
    common.emit({"bench": "large_c_kept_mass", **row})
    rows.append(row)
  return rows


def file_kept_mass_rows(paths, k: int) -> list[dict]:
  """Kept mass of real estimated S files (.npy) at top-k."""
  rows = []
  for path in paths:
    s = np.load(path)
    sp = sparse_lib.to_sparse(s, k)
    kept = sparse_lib.kept_mass(s, sp)
    off = sparse_lib.kept_off_diagonal_mass(s, sp)
    row = {
        "S": f"{path} ({s.shape[0]} classes)",
        "k": sp.k,
        "row_mass_kept_mean": float(kept.mean()),
        "row_mass_kept_min": float(kept.min()),
        "off_diag_kept_mean": float(off.mean()),
        "off_diag_kept_min": float(off.min()),
    }
    common.emit({"bench": "large_c_kept_mass", **row})
    rows.append(row)
  return rows


def main(argv=None) -> dict:
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("--batch_size", type=int, default=256)
  ap.add_argument("--k", type=int, default=64)
  ap.add_argument(
      "--classes",
      type=lambda t: tuple(int(x) for x in t.split(",")),
      default=CLASSES,
  )
  ap.add_argument(
      "--work",
      type=float,
      default=3e7,
      help="logits entries per timed block: inner = work / (B C), in [1, 200]",
  )
  ap.add_argument(
      "--kept_mass_files",
      default="",
      help="comma-separated estimated S files (.npy): mass top-k keeps",
  )
  ap.add_argument("--kept_mass_k", type=int, default=3)
  common.add_common_args(ap, steps=1, repeats=15)
  args = ap.parse_args(argv)
  common.apply_smoke(args)
  if args.smoke:
    args.classes, args.batch_size, args.k, args.work = (10, 300), 8, 4, 1e4
  info = common.machine()
  rows = loss_rows(args)
  estimation = estimation_row(args, c=300 if args.smoke else 1000)
  kept = kept_mass_rows(*((300, 4, 4) if args.smoke else (1000, args.k, 50)))
  if args.kept_mass_files:
    kept += file_kept_mass_rows(
        args.kept_mass_files.split(","), args.kept_mass_k
    )
  summary = {
      "bench": "large_c",
      "summary": True,
      "target_ratio": TARGET,
      "memory_target_MB": MEMORY_TARGET_MB,
      "rows": rows,
      "estimation": estimation,
      "kept_mass": kept,
      "machine": info,
  }
  common.emit(summary)
  common.table(
      rows,
      [
          "C",
          "optax_ce_ms",
          "soft_dense_ratio",
          "log_dense_ratio",
          "soft_sparse_ratio",
          "log_sparse_ratio",
          "soft_mass_sparse_ratio",
          "soft_onehot_ratio",
          "dense_S_MB",
          "sparse_S_MB",
          "meets_target",
      ],
      title=f"loss + gradient, batch {args.batch_size}, k = {args.k}: time / "
      f"optax CE (target <= {TARGET}), median of {args.repeats} paired repeats",
  )
  common.table([estimation], list(estimation), title="estimation pass")
  common.table(kept, list(kept[0]), title="top-k mass kept")
  return summary


if __name__ == "__main__":
  main()
