"""What the assembled pipeline computes, checked by value (issue 17).

The other pipeline tests compare runs of the same code with each other; these
compare the wiring of train.py, train_step.py and evaluation.py with values
computed here independently: numpy forwards of the saved parameters, closed
forms of the losses, their gradients and the optimizers, and the class-mean
softmax updates written out. Runs are tiny (digits, 96-128 training examples,
a few steps), so a test costs seconds.
"""

import functools
import json
import os
from types import SimpleNamespace

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from flax import nnx

from simsoft import checkpoint as ckpt
from simsoft import data as data_lib
from simsoft import evaluation
from simsoft import loop
from simsoft import models as models_lib
from simsoft import phases
from simsoft import sharding
from simsoft import train
from simsoft import train_step as step_lib
from simsoft.run import Run
from tests.helpers.tiny import load_config

C = 10
ALPHA = 0.3


# ----------------------------------------------------------------------------
# numpy references
# ----------------------------------------------------------------------------


def _log_softmax(z):
  z = np.asarray(z, np.float64)
  z = z - z.max(-1, keepdims=True)
  return z - np.log(np.exp(z).sum(-1, keepdims=True))


def _rownorm(s):
  s = np.asarray(s, np.float64)
  return s / s.sum(1, keepdims=True)


def _soft_target_loss(z, y, s, alpha):
  """Per-example loss and d(mean loss)/dz of CE against (1-a) onehot + a rownorm(S)[y]."""
  logp = _log_softmax(z)
  t = (1 - alpha) * np.eye(s.shape[0])[y] + alpha * _rownorm(s)[y]
  return -(t * logp).sum(1), (np.exp(logp) - t) / len(y)


def _log_sum_loss(z, y, s, alpha):
  """-log sum_j W[y,j] p_j with W = (1-a) I + a rownorm(S) (the documented weights), and its gradient."""
  p = np.exp(_log_softmax(z))
  w = ((1 - alpha) * np.eye(s.shape[0]) + alpha * _rownorm(s))[y]
  mass = (w * p).sum(1)
  return -np.log(mass), (p - w * p / mass[:, None]) / len(y)


LOSSES = {"soft_target": _soft_target_loss, "log_sum": _log_sum_loss}


def _flat(images, mean, std):
  x = (np.asarray(images, np.float64) - np.asarray(mean)) / np.asarray(std)
  return x.reshape(len(x), -1)


def _mlp_logits(params, images, mean, std):
  """The MLP of simsoft.models from a raw-restored params tree (one hidden layer or none)."""
  v = lambda node: np.asarray(
      node["value"] if isinstance(node, dict) else node, np.float64
  )
  x = _flat(images, mean, std)
  for _, layer in sorted(params["layers"].items()):
    x = np.maximum(x @ v(layer["kernel"]) + v(layer["bias"]), 0.0)
  return x @ v(params["head"]["kernel"]) + v(params["head"]["bias"])


def _class_mean_softmax(logits, labels, correct_only, fallback):
  """Row y: mean softmax over class-y examples (correct ones only); `fallback[y]` if none."""
  p = np.exp(_log_softmax(logits))
  keep = (
      (logits.argmax(1) == labels)
      if correct_only
      else np.ones(len(labels), bool)
  )
  out = np.array(fallback, np.float64)
  for y in range(out.shape[0]):
    rows = keep & (labels == y)
    if rows.any():
      out[y] = p[rows].mean(0)
  return out


def _restore(workdir, phase, step=None):
  """The raw (numpy) train state a phase saved at `step` (default: the latest)."""
  manager = ckpt.make_manager(
      os.path.join(workdir, phase, "checkpoints"), every_steps=1, keep=100
  )
  state = manager.restore(manager.latest_step() if step is None else step)
  manager.close()
  return state


def _digits(config):
  return data_lib.get_dataset(
      "digits",
      validation_fraction=config.dataset.validation_fraction,
      split_seed=config.dataset.split_seed,
      train_examples=config.dataset.train_examples,
  )


def _tiny(arg, train_examples):
  c = load_config(arg)
  c.model.mlp.hidden = (32,)
  c.batch_size = 32
  c.dataset.train_examples = train_examples
  c.evaluate.evaluators = {"clean": {"type": "clean"}}
  c.checkpoint.every_steps, c.checkpoint.keep = 1, 10
  c.log_every_steps = 100
  return c


# ----------------------------------------------------------------------------
# 1 + 2: the train step's loss and update against closed forms
# ----------------------------------------------------------------------------


def _optimizer_config(name):
  return ml_collections.ConfigDict(
      dict(
          name=name,
          learning_rate=0.5 if name == "sgd" else 0.05,
          momentum=0.9,
          nesterov=False,
          weight_decay=0.1,
          warmup_epochs=1.0,
          schedule="cosine",
          grad_clip_norm=0.0,
          b1=0.9,
          b2=0.99,
      )
  )


def _learning_rates(cfg, steps, warmup, total):
  """Linear warmup 0 -> lr over `warmup` steps, then cosine to 0 at `total`."""
  lr = cfg.learning_rate
  return [
      lr * t / warmup
      if t < warmup
      else lr * 0.5 * (1 + np.cos(np.pi * (t - warmup) / (total - warmup)))
      for t in range(steps)
  ]


def _reference_steps(cfg, kernel, bias, x, y, s, form, lrs):
  """The losses and final (kernel, bias) of len(lrs) steps, all in numpy.

  SGD: g += wd * kernel (kernel only); m = mu m + g; p -= lr m.
  AdamW: Adam moments with bias correction; p -= lr (m^ / (sqrt(v^) + eps) + wd p), wd on the kernel only.
  """
  params = {
      "kernel": kernel.astype(np.float64),
      "bias": bias.astype(np.float64),
  }
  decay = {"kernel": cfg.weight_decay, "bias": 0.0}
  m = {k: np.zeros_like(v) for k, v in params.items()}
  v2 = {k: np.zeros_like(v) for k, v in params.items()}
  losses = []
  for t, lr in enumerate(lrs, start=1):
    loss, dz = LOSSES[form](x @ params["kernel"] + params["bias"], y, s, ALPHA)
    losses.append(loss.mean())
    grads = {"kernel": x.T @ dz, "bias": dz.sum(0)}
    for k in params:
      if cfg.name == "sgd":
        m[k] = cfg.momentum * m[k] + grads[k] + decay[k] * params[k]
        params[k] = params[k] - lr * m[k]
      else:
        m[k] = cfg.b1 * m[k] + (1 - cfg.b1) * grads[k]
        v2[k] = cfg.b2 * v2[k] + (1 - cfg.b2) * grads[k] ** 2
        mhat, vhat = m[k] / (1 - cfg.b1**t), v2[k] / (1 - cfg.b2**t)
        params[k] = params[k] - lr * (
            mhat / (np.sqrt(vhat) + 1e-8) + decay[k] * params[k]
        )
  return losses, params


@pytest.mark.parametrize(
    "form,optimizer",
    [("soft_target", "sgd"), ("log_sum", "sgd"), ("soft_target", "adamw")],
)
def test_train_step_loss_and_update_match_closed_forms(form, optimizer):
  """Items 1 and 2: the step's reported loss uses S and alpha; its update is the configured optimizer."""
  rng = np.random.default_rng(0)
  images = rng.uniform(size=(8, 4, 4, 1)).astype(np.float32)
  labels = np.array([0, 1, 2, 3, 0, 1, 2, 3], np.int32)
  s = rng.uniform(0.05, 1.0, size=(4, 4)).astype(
      np.float32
  )  # asymmetric, non-identity
  mean, std = (0.4,), (0.3,)
  model = models_lib.create_model(
      "mlp", num_classes=4, input_shape=(4, 4, 1), rngs=nnx.Rngs(1), hidden=()
  )
  graphdef, params, rest = nnx.split(model, nnx.Param, ...)
  cfg = _optimizer_config(optimizer)
  steps, steps_per_epoch, total = (
      4,
      2,
      8,
  )  # warmup 2 steps: lr 0, lr/2, lr, cosine
  tx = step_lib.make_optimizer(
      cfg, steps_per_epoch=steps_per_epoch, total_steps=total
  )
  step = jax.jit(
      step_lib.make_train_step(
          graphdef,
          tx,
          step_lib.make_loss_fn(form, ALPHA),
          mean=mean,
          std=std,
          augmentation="none",
          track_epoch_stats=False,
      )
  )
  state = {
      "step": jnp.zeros((), jnp.int32),
      "params": params,
      "model_state": rest,
      "opt_state": tx.init(params),
      "similarity": jnp.asarray(s),
      "nonfinite_step": jnp.full((), -1, jnp.int32),
  }
  batch = {"image": jnp.asarray(images), "label": jnp.asarray(labels)}
  kernel0, bias0 = np.asarray(params["head"]["kernel"][...]), np.asarray(
      params["head"]["bias"][...]
  )
  reported = []
  for _ in range(steps):
    state, metrics = step(state, batch, jax.random.key(0))
    reported.append(float(metrics["loss"]))

  lrs = _learning_rates(cfg, steps, warmup=steps_per_epoch, total=total)
  expected, final = _reference_steps(
      cfg,
      kernel0,
      bias0,
      _flat(images, mean, std),
      labels,
      s.astype(np.float64),
      form,
      lrs,
  )
  np.testing.assert_allclose(
      reported, expected, rtol=1e-5, err_msg="reported loss"
  )
  got = state["params"]["head"]
  np.testing.assert_allclose(
      np.asarray(got["kernel"][...]),
      final["kernel"],
      rtol=1e-4,
      atol=1e-6,
      err_msg="kernel after the optimizer steps",
  )
  np.testing.assert_allclose(
      np.asarray(got["bias"][...]),
      final["bias"],
      rtol=1e-4,
      atol=1e-6,
      err_msg="bias after the optimizer steps",
  )
  # The check can tell: without S, without alpha, the loss differs.
  assert (
      abs(
          LOSSES[form](
              _flat(images, mean, std) @ kernel0 + bias0,
              labels,
              np.eye(4),
              ALPHA,
          )[0].mean()
          - expected[0]
      )
      > 1e-3
  )
  assert (
      abs(
          LOSSES[form](
              _flat(images, mean, std) @ kernel0 + bias0, labels, s, 0.0
          )[0].mean()
          - expected[0]
      )
      > 1e-3
  )


# ----------------------------------------------------------------------------
# 1 + 4: one whole run (estimate S with the softmax source, retrain, evaluate)
# ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def softmax_run(tmp_path_factory):
  """estimate -> retrain -> evaluate on 128 digits, 4 steps per phase, the logged losses recorded."""
  c = _tiny(
      f"epochs=1,similarity=softmax,form=soft_target,alpha={ALPHA}",
      train_examples=128,
  )
  c.similarity.softmax.correct_only = False
  reference = np.random.default_rng(1).uniform(
      0.0, 0.9, size=(C, C)
  )  # asymmetric
  np.fill_diagonal(reference, 1.0)
  path = str(tmp_path_factory.mktemp("reference") / "reference.npy")
  np.save(path, reference)
  c.evaluate.reference_similarity_path = path
  c.log_every_steps = (
      1  # a logging window of one step: the logged mean is that step's loss
  )
  workdir = str(tmp_path_factory.mktemp("softmax_run"))
  logged = []

  class Recording(loop.Progress):

    def update(self, step, scalars):
      logged.append((self.phase, step, dict(scalars)))
      super().update(step, scalars)

  with pytest.MonkeyPatch.context() as mp:
    mp.setattr(loop, "Progress", Recording)
    train.train_and_evaluate(c, workdir)
  return SimpleNamespace(
      config=c,
      workdir=workdir,
      ds=_digits(c),
      logged=logged,
      reference=reference,
  )


def _expected_similarity(run, split):
  a = _restore(run.workdir, "estimate")["params"]
  images, labels = run.ds.split(split).images, run.ds.split(split).labels
  return _class_mean_softmax(
      _mlp_logits(a, images, run.ds.mean, run.ds.std),
      labels,
      correct_only=False,
      fallback=np.eye(C),
  )


def test_estimate_uses_the_validation_split(softmax_run):
  """Item 4: S and its sample count come from the held-out validation split."""
  run = softmax_run
  expected = _expected_similarity(run, "validation")
  assert (
      np.abs(expected - _expected_similarity(run, "train")).max() > 1e-3
  )  # splits tell apart
  doc = json.loads(
      open(os.path.join(run.workdir, "estimate", "similarity.json")).read()
  )
  num_samples, num_validation = doc["metadata"]["num_samples"], len(
      run.ds.split("validation")
  )
  assert (
      num_samples == num_validation
  ), "S was not estimated on the validation split"
  np.testing.assert_allclose(
      np.load(os.path.join(run.workdir, "estimate", "similarity.npy")),
      expected,
      rtol=1e-4,
      atol=1e-6,
  )


def test_retrain_loss_sees_the_estimated_s_and_config_alpha(softmax_run):
  """Item 1: model B's state carries the estimated S, and its logged loss is the
  soft-target loss with that S and config.loss.alpha, recomputed from its saved parameters.
  """
  run = softmax_run
  s = np.load(os.path.join(run.workdir, "estimate", "similarity.npy")).astype(
      np.float64
  )
  np.testing.assert_allclose(
      _restore(run.workdir, "retrain")["similarity"], s, rtol=1e-6
  )
  phase, last, scalars = [r for r in run.logged if r[0] == "retrain"][-1]
  before = _restore(run.workdir, "retrain", last - 1)[
      "params"
  ]  # parameters of the last step
  split = run.ds.split("train")
  idx = next(
      data_lib.train_indices(
          len(split),
          global_batch_size=run.config.batch_size,
          seed=run.config.seed,
          start_step=last - 1,
      )
  )
  logits = _mlp_logits(before, split.images[idx], run.ds.mean, run.ds.std)
  expected = _soft_target_loss(
      logits, split.labels[idx], s, run.config.loss.alpha
  )[0].mean()
  assert scalars["loss"] == pytest.approx(expected, rel=1e-5)
  for wrong in (
      _soft_target_loss(logits, split.labels[idx], s, 0.0)[0].mean(),
      _soft_target_loss(logits, split.labels[idx], np.eye(C), ALPHA)[0].mean(),
  ):
    assert abs(wrong - expected) > 1e-3  # the check can tell


def test_clean_results_are_the_test_split(softmax_run):
  """Item 4: clean metrics count exactly the test split and equal numpy's on it (A and B),
  including the mistake severity read as R[truth, prediction]."""
  run = softmax_run
  results = json.loads(open(os.path.join(run.workdir, "results.json")).read())
  test = run.ds.split("test")
  n = len(test)
  rn = run.reference / np.diag(run.reference)[:, None]
  for key, phase in (("A", "estimate"), ("B", "retrain")):
    logits = _mlp_logits(
        _restore(run.workdir, phase)["params"],
        test.images,
        run.ds.mean,
        run.ds.std,
    )
    pred, clean = logits.argmax(1), results["models"][key]["clean"]
    wrong = pred != test.labels
    assert (
        clean["count"] == n
    ), f"model {key}: clean metrics did not count the test split"
    assert clean["accuracy"] == pytest.approx(np.mean(~wrong), abs=1e-6), key
    assert clean["nll"] == pytest.approx(
        -_log_softmax(logits)[np.arange(len(test)), test.labels].mean(),
        rel=1e-5,
    ), key
    assert clean["mistake_severity"] == pytest.approx(
        np.mean(1 - rn[test.labels[wrong], pred[wrong]]), rel=1e-5
    ), key


# ----------------------------------------------------------------------------
# 3: the online source inside the loop
# ----------------------------------------------------------------------------


def test_online_similarity_is_each_epochs_correct_only_class_mean(tmp_path):
  """Item 3: after each epoch S is that epoch's correct-only class-mean softmax
  (rows without a correct example keep the previous S), and the statistics restart at zero.
  """
  c = _tiny("epochs=2,similarity=online,phases=retrain", train_examples=96)
  c.optimizer.warmup_epochs = 0.0
  train.train_and_evaluate(c, str(tmp_path))
  ds = _digits(c)
  split = ds.split("train")
  steps = len(split) // c.batch_size  # 3 per epoch
  eps = c.similarity.online.initial_smoothing
  previous = (1 - eps) * np.eye(C) + eps / C
  init = models_lib.create_model(
      "mlp",
      num_classes=C,
      input_shape=ds.image_shape,
      rngs=nnx.Rngs(c.seed),
      hidden=(32,),
  )
  params_at = {
      0: jax.tree.map(np.asarray, nnx.to_pure_dict(nnx.state(init, nnx.Param)))
  }
  indices = data_lib.train_indices(
      len(split), global_batch_size=c.batch_size, seed=c.seed
  )
  for epoch in range(2):
    logits, labels = [], []
    for t in range(epoch * steps, (epoch + 1) * steps):
      params = (
          params_at[t]
          if t in params_at
          else _restore(str(tmp_path), "retrain", t)["params"]
      )
      idx = next(indices)
      logits.append(_mlp_logits(params, split.images[idx], ds.mean, ds.std))
      labels.append(split.labels[idx])
    logits, labels = np.concatenate(logits), np.concatenate(labels)
    expected = _class_mean_softmax(
        logits, labels, correct_only=True, fallback=previous
    )
    all_examples = _class_mean_softmax(
        logits, labels, correct_only=False, fallback=previous
    )
    assert np.abs(expected - all_examples).max() > 1e-3  # the check can tell
    saved = _restore(str(tmp_path), "retrain", (epoch + 1) * steps)
    np.testing.assert_allclose(
        saved["similarity"],
        expected,
        rtol=1e-4,
        atol=1e-6,
        err_msg=f"S after epoch {epoch + 1}",
    )
    for name, value in saved["epoch_stats"].items():
      assert not np.any(
          np.asarray(value)
      ), f"epoch_stats[{name!r}] not reset after epoch {epoch + 1}"
    previous = expected


# ----------------------------------------------------------------------------
# 5: evaluation runs BatchNorm models in inference mode
# ----------------------------------------------------------------------------


class TinyBN(nnx.Module):
  """flatten -> Dense -> BatchNorm -> ReLU -> head; the smallest model with batch statistics."""

  def __init__(self, rngs):
    self.dense = nnx.Linear(64, 16, rngs=rngs)
    self.bn = nnx.BatchNorm(16, epsilon=1e-5, rngs=rngs)
    self.head = nnx.Linear(16, C, rngs=rngs)

  def __call__(self, images, return_features=False):
    h = nnx.relu(self.bn(self.dense(images.reshape(images.shape[0], -1))))
    logits = self.head(h)
    return (logits, h) if return_features else logits


def _bn_logits(model, images, mean, std):
  """TinyBN with its running averages (inference mode), in numpy."""
  v = lambda x: np.asarray(x[...], np.float64)
  h = _flat(images, mean, std) @ v(model.dense.kernel) + v(model.dense.bias)
  h = (h - v(model.bn.mean)) / np.sqrt(v(model.bn.var) + 1e-5) * v(
      model.bn.scale
  ) + v(model.bn.bias)
  return np.maximum(h, 0.0) @ v(model.head.kernel) + v(model.head.bias)


def test_evaluation_uses_batchnorm_running_averages(tmp_path):
  """Item 5: an example's logits do not depend on the rest of its batch; the evaluator's clean
  metrics and the similarity pass equal numpy's inference-mode forward."""
  rng = np.random.default_rng(2)
  model = TinyBN(nnx.Rngs(0))
  model.bn.mean[...] = jnp.asarray(rng.normal(size=16), jnp.float32)
  model.bn.var[...] = jnp.asarray(rng.uniform(0.5, 2.0, size=16), jnp.float32)
  graphdef, params, rest = nnx.split(model, nnx.Param, ...)
  c = load_config("")
  c.evaluate.evaluators = {"clean": {"type": "clean"}}
  c.eval_batch_size = 8
  ds = _digits(c)
  test, val = ds.split("test"), ds.split("validation")

  predict = jax.jit(
      step_lib.make_predict_fn(graphdef, mean=ds.mean, std=ds.std)
  )
  one = predict(params, rest, test.images[:8])[0]
  other = predict(
      params, rest, np.concatenate([test.images[:1], test.images[100:107]])
  )[0]
  np.testing.assert_allclose(one, other, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(
      one,
      _bn_logits(model, test.images[:1], ds.mean, ds.std)[0],
      rtol=1e-4,
      atol=1e-5,
  )

  run = Run(
      config=c, workdir=str(tmp_path), mesh=sharding.make_mesh(), dataset=ds
  )
  state = {"params": params, "model_state": rest}
  predict_a = functools.partial(predict, params, rest)
  clean = evaluation.evaluate_models(
      {"A": predict_a}, evaluation.build_evaluators(c, ds, run.mesh)
  )["models"]["A"]["clean"]
  logits = _bn_logits(model, test.images, ds.mean, ds.std)
  n = len(test)
  assert clean["count"] == n, "clean metrics did not count the test split"
  assert clean["accuracy"] == pytest.approx(
      np.mean(logits.argmax(1) == test.labels), abs=1e-6
  )
  assert clean["nll"] == pytest.approx(
      -_log_softmax(logits)[np.arange(len(test)), test.labels].mean(), rel=1e-5
  )

  stats, n = phases.validation_stats(run, graphdef, state, with_features=False)
  p = np.exp(_log_softmax(_bn_logits(model, val.images, ds.mean, ds.std)))
  num_validation = len(val)
  assert n == num_validation
  np.testing.assert_allclose(
      np.asarray(stats.prob_sum),
      np.eye(C)[val.labels].T @ p,
      rtol=1e-4,
      atol=1e-4,
  )
