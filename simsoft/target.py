"""Model B's training target: its source's options, the loss keywords, the record.

similarity_options(config, source)   what build_similarity gets
loss_options(config, C)              make_loss_fn's keywords (amount, as_given, hxe)
target_record(config, S0, S_final)   retrain/target.json: form, amount,
                                     per-class off-target mass, Q's row
                                     entropy and largest entry, options
"""

from __future__ import annotations

from typing import Any

import jax.numpy as jnp
import ml_collections
import numpy as np
from jax.typing import ArrayLike

from simsoft import config as config_lib
from simsoft import losses
from simsoft import similarity as sim_lib


def similarity_options(
    config: ml_collections.ConfigDict, source: str
) -> dict[str, Any]:
  """What build_similarity gets: similarity.options plus similarity.<source> (its own)."""
  options = config.similarity.options.to_dict()
  if source in sim_lib.SOURCES and isinstance(
      config.similarity.get(source), ml_collections.ConfigDict
  ):
    options.update(config.similarity[source].to_dict())
  if not options.get("temperature"):
    options.pop("temperature", None)
  allowed = sim_lib.source_options(source)
  return {k: v for k, v in options.items() if k in allowed}


def similarity_options_that_ran(
    config: ml_collections.ConfigDict, source: str
) -> dict[str, Any]:
  """Every option of `source` with the value it ran with (defaults filled in)."""
  return {
      **sim_lib.source_options(source),
      **similarity_options(config, source),
  }


def shuffle_permutation(
    config: ml_collections.ConfigDict, num_classes: int
) -> np.ndarray | None:
  """The shuffled-S control's class permutation (a derangement fixed by config.seed), or None."""
  if not config.similarity.shuffle:
    return None
  return sim_lib.derangement(num_classes, seed=config.seed)


def source_path(config: ml_collections.ConfigDict, source: str) -> str | None:
  """The file a source reads (the config field its registry entry names), or None."""
  field = sim_lib.source_spec(source).path_field
  if field is None:
    return None
  node = config
  for name in field.split("."):
    node = node[name]
  return node or None


def loss_options(
    config: ml_collections.ConfigDict, num_classes: int
) -> dict[str, Any]:
  """make_loss_fn's keywords from config.loss: the amount, as_given and (form 'hxe') the arrays."""
  options = {**config_lib.loss_amount(config), "as_given": config.loss.as_given}
  if config.loss.form == "hxe":
    if not config.hierarchy_path:
      raise ValueError(
          "loss form 'hxe' needs a class hierarchy: set config.hierarchy_path"
      )
    tree = sim_lib.read_hierarchy(
        config.hierarchy_path, num_classes=num_classes
    )
    options["hxe"] = sim_lib.hxe_arrays(
        tree, config.loss.hxe.alpha, normalize=config.loss.hxe.normalize
    )
  return options


def off_target_mass(
    similarity: ArrayLike, amount: dict[str, Any], as_given: bool = False
) -> np.ndarray:
  """[C]: the mass class y's soft target puts on other classes.

  1 - T[y, y] for T = similarity_target_matrix(S); with `as_given`, the
  off-diagonal sum of row y of W = (1 - alpha) I + alpha S. S may be a top-k
  SparseSimilarity (its kept entries normalized as the losses do).
  """
  if sim_lib.is_sparse(similarity):  # the diagonal is each row's first entry
    values = np.asarray(similarity.values, np.float64)
    diagonal, total = values[:, 0], values.sum(axis=1)
    if as_given:
      return amount.get("alpha", 1.0) * (total - diagonal)
    if amount.get("mass") is not None:
      return np.full(len(values), float(amount["mass"]))
    return amount.get("alpha", 1.0) * (1.0 - diagonal / total)
  if as_given:
    s = np.asarray(similarity, np.float64)
    return amount.get("alpha", 1.0) * (s.sum(axis=1) - np.diag(s))
  target = losses.similarity_target_matrix(
      jnp.asarray(similarity, jnp.float32), **amount
  )
  return 1.0 - np.diag(np.asarray(target, np.float64))


# Above this many classes the record keeps Q's row statistics, not Q itself.
MAX_RECORDED_Q_CLASSES = 100


def off_target_structure(similarity: ArrayLike) -> dict[str, Any]:
  """How concentrated each row of Q = off_target_distribution(S) is.

  Per class y: the entropy H(Q_y) = -sum_j Q_yj log Q_yj in nats (uniform
  over the other C - 1 classes: log(C - 1), the most; all mass on one
  class: 0), the largest entry max_j Q_yj and where it goes (argmax_j);
  Q itself [C, C] for C <= MAX_RECORDED_Q_CLASSES. Equal off-target mass is
  not equal structure: a concentrated Q differs from label smoothing by more
  than where its mass goes.
  """
  if sim_lib.is_sparse(similarity):
    entropy, q_max, argmax, c = _sparse_q_rows(similarity)
    q = None
  else:
    q = np.asarray(
        losses.off_target_distribution(jnp.asarray(similarity, jnp.float32)),
        np.float64,
    )
    logs = np.log(np.where(q > 0, q, 1.0))
    entropy = np.maximum(-(q * logs).sum(axis=1), 0.0)
    q_max, argmax, c = q.max(axis=1), q.argmax(axis=1), q.shape[0]
  out = {
      "q_row_entropy": entropy.tolist(),
      "mean_q_row_entropy": float(entropy.mean()),
      "uniform_q_row_entropy": float(np.log(c - 1)),
      "q_row_max": q_max.tolist(),
      "mean_q_row_max": float(q_max.mean()),
      "q_row_argmax": argmax.tolist(),
  }
  if c <= MAX_RECORDED_Q_CLASSES:
    if q is None:
      q = np.asarray(
          losses.off_target_distribution(
              jnp.asarray(sim_lib.to_dense(similarity), jnp.float32)
          ),
          np.float64,
      )
    out["off_target_distribution"] = np.round(q, 6).tolist()
  return out


def _sparse_q_rows(sparse) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
  """(entropy, max, argmax, C) of Q's rows from a sparse S's kept entries, O(C k):
  a row without off-diagonal mass is uniform over the other C - 1 classes."""
  columns = np.asarray(sparse.indices)[:, 1:]
  off = np.asarray(sparse.values, np.float64)[:, 1:]
  c = columns.shape[0]
  total = off.sum(axis=1, keepdims=True)
  has = total[:, 0] > 0
  q = off / np.where(total > 0, total, 1.0)
  logs = np.log(np.where(q > 0, q, 1.0))
  entropy = np.where(
      has, np.maximum(-(q * logs).sum(axis=1), 0.0), np.log(c - 1)
  )
  q_max = np.where(has, q.max(axis=1, initial=0.0), 1.0 / (c - 1))
  first_other = np.where(np.arange(c) == 0, 1, 0)  # the uniform row's argmax
  best = first_other
  if q.shape[1]:  # ties as np.argmax of the dense row: the lowest column
    best = np.where(q == q_max[:, None], columns, c).min(axis=1)
  argmax = np.where(has, best, first_other)
  return entropy, q_max, argmax, c


def target_record(
    config: ml_collections.ConfigDict,
    initial_similarity: ArrayLike,
    final_similarity: ArrayLike,
    permutation: np.ndarray | None,
) -> dict[str, Any]:
  """What model B's target actually was: form, amount, per-class off-target mass, source options.

  For a per-epoch source (online) S changes every epoch: 'off_target_mass' is for the
  first epoch's S, 'off_target_mass_final' for the last one. The 'hxe' form has
  no soft target: its record holds its alpha and hierarchy instead.
  """
  amount = config_lib.loss_amount(config)
  source = config.similarity.source
  as_given = config.loss.as_given
  record = {
      "form": config.loss.form,
      "amount": amount,
      "as_given": as_given,
      "source": source,
      "options": similarity_options_that_ran(config, source),
      "shuffle_permutation": None
      if permutation is None
      else np.asarray(permutation).tolist(),
  }
  if config.loss.form == "hxe":
    return record | {
        "hxe": config.loss.hxe.to_dict(),
        "hierarchy_path": config.hierarchy_path,
    }
  mass = off_target_mass(initial_similarity, amount, as_given)
  record |= {
      "off_target_mass": mass.tolist(),
      "mean_off_target_mass": float(mass.mean()),
      "q": off_target_structure(initial_similarity),
  }
  if sim_lib.source_spec(source).per_epoch:
    final = off_target_mass(final_similarity, amount, as_given)
    record |= {
        "off_target_mass_final": final.tolist(),
        "mean_off_target_mass_final": float(final.mean()),
    }
  return record
