r"""The jitted train and eval steps: pure functions of pytrees, no TensorFlow.

The train state is a plain dict (Orbax saves and restores it as is):

  step           int32 []      optimizer steps taken
  params         nnx.State     the model's nnx.Param variables
  model_state    nnx.State     everything else (BatchNorm running statistics)
  opt_state      optax state
  similarity     float32 [C,C] the S the loss uses (updated per epoch by `online`)
  epoch_stats    the running epoch's SimilarityStats fields (online source only)
  nonfinite_step int32 []      first step whose loss was NaN/inf, -1 if none

`make_train_step` returns `step(state, batch, key) -> (state, metrics)` with
the batch {'image': float32 [B,H,W,C] in [0,1], 'label': int32 [B]} sharded
over the mesh's 'data' axis and the state replicated; XLA inserts the gradient
all-reduce. Images are augmented and normalized inside the step, so the input
pipeline only moves raw pixels. The step's randomness is
fold_in(key, state['step']): a function of the step number alone, so a resumed
run draws what the uninterrupted one drew.

Two input paths feed it: the host path passes batches read by
simsoft.data.train_batches; the device path (`make_device_steps`) keeps the
whole split on the accelerator and gathers each batch from the indices the
host path would have read, optionally several steps per dispatch (lax.scan).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
import math
from typing import Any

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike
import ml_collections
import optax
from flax import nnx

from simsoft import augment as augment_lib
from simsoft import losses
from simsoft import similarity as sim_lib

State = dict[str, Any]
Batch = dict[str, jax.Array]
StepMetrics = dict[str, jax.Array]
LossFn = Callable[[jax.Array, jax.Array, jax.Array], jax.Array]
# step(state, batch, key) -> (state, metrics); see make_train_step.
TrainStep = Callable[[State, Batch, jax.Array], tuple[State, StepMetrics]]
# Per-channel image statistics: a tuple of floats or an array [C].
ChannelStats = ArrayLike | Sequence[float]


def make_loss_fn(
    form: str,
    alpha: ArrayLike | None = None,
    *,
    mass: ArrayLike | None = None,
    as_given: bool = False,
    hxe: tuple[ArrayLike, ArrayLike] | None = None,
) -> LossFn:
  """(logits [B,C], labels [B], S) -> per-example loss [B] for a loss form.

  S is a dense [C, C] array or a top-k SparseSimilarity; either way the loss
  reads only the batch's rows of S (O(B C), never a C x C product per step).

  soft_target: cross-entropy against row y of similarity_target_matrix(S);
  log_sum: -log sum_j W[y, j] p_j with W = similarity_target_matrix(S), so row
    y of W is the soft target of class y and both forms share alpha and mass
    (for alpha, mass <= 1/2 the true class weighs most, which SimLoss needs);
  hxe: hierarchical cross-entropy with `hxe` = (node_leaves [N, C],
    path_weights [C, N]) (simsoft.similarity.hierarchy.hxe_arrays), closed
    over as constants; S is not used.
  Give `alpha` or `mass` (see simsoft.losses). With `as_given`, W = (1 - alpha) I
  + alpha S with S as given (no row normalization; `mass` is refused):
  log_sum with alpha = 1 is SimLoss exactly, soft_target
  (simsoft.losses.weighted_cross_entropy) with alpha = 0.5 is Online Label
  Smoothing's loss.
  """
  losses.check_amount(alpha=alpha, mass=mass)
  if form == "hxe":
    if hxe is None:
      raise ValueError(
          "loss form 'hxe' needs a class hierarchy (config.hierarchy_path)"
      )
    leaves, weights = (jnp.asarray(a, jnp.float32) for a in hxe)
    return lambda logits, labels, s: losses.hierarchical_cross_entropy(
        logits, labels, leaves, weights
    )
  if as_given and mass is not None:
    raise ValueError(
        "loss.as_given uses S as given: set loss.amount='alpha', not 'mass'"
    )
  if as_given:
    a = 1.0 if alpha is None else alpha
    keywords = {"alpha": a, "normalize": False}
  else:
    # neither alpha nor mass: the full similarity target (alpha = 1)
    keywords = {"alpha": 1.0 if mass is None and alpha is None else alpha}
    keywords |= {"mass": mass, "normalize": True}
  if form == "soft_target":
    return lambda logits, labels, s: losses.similarity_cross_entropy(
        logits, labels, s, **keywords
    )
  if form == "log_sum":
    return lambda logits, labels, s: losses.similarity_log_loss(
        logits, labels, s, **keywords
    )
  raise ValueError(
      f"unknown loss form {form!r} (config.loss.form); known: "
      "['soft_target', 'log_sum', 'hxe']"
  )


def make_schedule(
    cfg: ml_collections.ConfigDict, *, steps_per_epoch: int, total_steps: int
) -> optax.Schedule:
  """The learning rate of step t (0-based): warmup + cosine decay, constant, or step.

  schedule 'step' (no warmup) is Online Label Smoothing's CIFAR schedule: the
  learning rate times 0.1 from epoch ceil(E/2) and again from epoch ceil(3E/4)
  of the E epochs (its adjust_learning_rate).
  """
  warmup = int(round(cfg.warmup_epochs * steps_per_epoch))
  if cfg.schedule == "cosine":
    return optax.warmup_cosine_decay_schedule(
        0.0,
        cfg.learning_rate,
        warmup_steps=min(warmup, total_steps - 1) if warmup else 0,
        decay_steps=max(total_steps, 1),
        end_value=0.0,
    )
  if cfg.schedule == "constant":
    return optax.constant_schedule(cfg.learning_rate)
  if cfg.schedule == "step":
    epochs = max(total_steps // max(steps_per_epoch, 1), 1)
    scales = {}
    for fraction in (0.5, 0.75):
      boundary = math.ceil(fraction * epochs) * steps_per_epoch
      scales[boundary] = scales.get(boundary, 1.0) * 0.1
    return optax.piecewise_constant_schedule(cfg.learning_rate, scales)
  raise ValueError(
      f"unknown schedule {cfg.schedule!r} (config.optimizer.schedule); "
      "known: ['cosine', 'constant', 'step']"
  )


def make_optimizer(
    cfg: ml_collections.ConfigDict, *, steps_per_epoch: int, total_steps: int
) -> optax.GradientTransformation:
  """SGD (momentum, L2 weight decay on kernels) or AdamW, with make_schedule's learning rate."""
  lr = make_schedule(
      cfg, steps_per_epoch=steps_per_epoch, total_steps=total_steps
  )
  decay_mask = lambda params: jax.tree.map(lambda p: p.ndim > 1, params)
  if cfg.name == "sgd":
    core = [
        optax.add_decayed_weights(cfg.weight_decay, mask=decay_mask),
        optax.sgd(lr, momentum=cfg.momentum or None, nesterov=cfg.nesterov),
    ]
  elif cfg.name == "adamw":
    core = [
        optax.adamw(
            lr,
            b1=cfg.b1,
            b2=cfg.b2,
            weight_decay=cfg.weight_decay,
            mask=decay_mask,
        )
    ]
  else:
    raise ValueError(
        f"unknown optimizer {cfg.name!r} (config.optimizer.name); known: ['sgd', 'adamw']"
    )
  clip = (
      [optax.clip_by_global_norm(cfg.grad_clip_norm)]
      if cfg.grad_clip_norm > 0
      else []
  )
  return optax.chain(*clip, *core)


def normalize(
    images: jax.Array, mean: ChannelStats, std: ChannelStats
) -> jax.Array:
  """(x - mean) / std per channel; images [B,H,W,C] in [0,1]."""
  return (images - jnp.asarray(mean, images.dtype)) / jnp.asarray(
      std, images.dtype
  )


def apply_model(
    graphdef: nnx.GraphDef,
    params: nnx.State,
    model_state: nnx.State,
    images: jax.Array,
    *,
    train: bool,
    return_features: bool = False,
) -> tuple[Any, nnx.State]:
  """Runs the model; returns (output, new model_state). Output as the model's __call__."""
  model = nnx.merge(graphdef, params, model_state, copy=True)
  if not train:
    model = nnx.view(
        model,
        use_running_average=True,
        deterministic=True,
        raise_if_not_found=False,
    )
  out = model(images, return_features=return_features)
  _, _, new_state = nnx.split(model, nnx.Param, ...)
  return out, new_state


def make_train_step(
    graphdef: nnx.GraphDef,
    tx: optax.GradientTransformation,
    loss_fn: LossFn,
    *,
    mean: ChannelStats,
    std: ChannelStats,
    augmentation: str,
    track_epoch_stats: bool,
) -> TrainStep:
  """Builds the pure train step (jit it with the shardings of the caller's mesh).

  step(state, batch, key) -> (state, metrics) where metrics = {'loss', 'accuracy'}
  (global batch means, float32 scalars) and 'grad_norm' (global L2 norm of the
  loss gradient, before clipping and weight decay).
  """

  def step(
      state: State, batch: Batch, key: jax.Array
  ) -> tuple[State, StepMetrics]:
    rng = jax.random.fold_in(key, state["step"])
    images = augment_lib.augment(rng, batch["image"], augmentation)
    images = normalize(images, mean, std)
    labels = batch["label"]

    def objective(params):
      logits, model_state = apply_model(
          graphdef, params, state["model_state"], images, train=True
      )
      loss = loss_fn(logits, labels, state["similarity"]).mean()
      return loss, (logits, model_state)

    (loss, (logits, model_state)), grads = jax.value_and_grad(
        objective, has_aux=True
    )(state["params"])
    updates, opt_state = tx.update(grads, state["opt_state"], state["params"])
    params = optax.apply_updates(state["params"], updates)
    finite = jnp.isfinite(loss)
    first_bad = jnp.where(
        (state["nonfinite_step"] < 0) & ~finite,
        state["step"],
        state["nonfinite_step"],
    )
    new_state = dict(
        state,
        step=state["step"] + 1,
        params=params,
        model_state=model_state,
        opt_state=opt_state,
        nonfinite_step=first_bad,
    )
    if track_epoch_stats:
      stats = sim_lib.update_stats(
          stats_from_state(state["epoch_stats"]),
          jax.lax.stop_gradient(logits),
          labels,
      )
      new_state["epoch_stats"] = stats_to_state(stats)
    accuracy = jnp.mean(jnp.argmax(logits, -1) == labels)
    return new_state, {
        "loss": loss,
        "accuracy": accuracy,
        "grad_norm": optax.tree.norm(grads),
    }

  return step


def gather_batch(data: Batch, indices: jax.Array) -> Batch:
  """Rows `indices` [B] of a device-resident split {'image': uint8|float32, 'label'}.

  uint8 pixels become float32 exactly as simsoft.data's host path makes them
  (x * float32(1/255)), so both paths feed the step the same numbers.
  """
  images = data["image"][indices]
  if images.dtype == jnp.uint8:
    images = images.astype(jnp.float32) * jnp.float32(1.0 / 255.0)
  return {"image": images, "label": data["label"][indices]}


def make_device_steps(
    step: TrainStep, *, unroll: bool = False
) -> Callable[[State, Batch, jax.Array, jax.Array], tuple[State, StepMetrics]]:
  """Wraps a train step to read its batches from a device-resident split.

  Returns steps(state, data, indices [k, B], key) -> (state, metrics averaged
  over the k steps): k = 1 is one step per dispatch, k > 1 runs a lax.scan,
  fully unrolled if `unroll` (on XLA:CPU a rolled scan keeps the backward
  convolutions off the fast Eigen path, ~15x slower; see benchmarks/RESULTS.md).
  """

  def one(state, data, indices, key):
    return step(state, gather_batch(data, indices), key)

  def steps(state, data, indices, key):
    if indices.shape[0] == 1:
      return one(state, data, indices[0], key)
    state, metrics = jax.lax.scan(
        lambda s, idx: one(s, data, idx, key), state, indices, unroll=unroll
    )
    return state, jax.tree.map(jnp.mean, metrics)

  return steps


def stats_to_state(stats: sim_lib.SimilarityStats) -> dict[str, jax.Array]:
  """The SimilarityStats fields Online Label Smoothing needs, for the train state.

  (Orbax cannot save the zero-width feature_sum of feature-less statistics.)
  """
  return {
      k: getattr(stats, k)
      for k in (
          "confusion",
          "prob_sum",
          "prob_sum_correct",
          "count",
          "count_correct",
      )
  }


def stats_from_state(fields: dict[str, jax.Array]) -> sim_lib.SimilarityStats:
  c = fields["count"].shape[0]
  return sim_lib.SimilarityStats(
      **fields, feature_sum=jnp.zeros((c, 0), jnp.float32)
  )


def make_predict_fn(
    graphdef: nnx.GraphDef,
    *,
    mean: ChannelStats,
    std: ChannelStats,
    return_features: bool = False,
) -> Callable[[nnx.State, nnx.State, jax.Array], Any]:
  """predict(params, model_state, images in [0,1]) -> logits (, features); eval mode."""

  def predict(params, model_state, images):
    out, _ = apply_model(
        graphdef,
        params,
        model_state,
        normalize(images, mean, std),
        train=False,
        return_features=return_features,
    )
    return out

  return predict
