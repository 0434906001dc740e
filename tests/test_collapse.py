"""The log-sum form's vanishing gradient on confident mistakes (simsoft.collapse), by hand."""

import jax
import jax.numpy as jnp
import numpy as np

from simsoft import collapse
from simsoft.losses import similarity_target_matrix


def test_log_sum_gradient_closed_form_and_vanishing_pull():
  # Label smoothing weights at mass 0.3 over 3 classes: W_yy = 0.7, W_yk = 0.15.
  w = similarity_target_matrix(jnp.ones((3, 3)), mass=0.3)
  labels = jnp.array([0, 0, 0])
  # Increasingly confident predictions of class 1 for an example of class 0.
  logits = jnp.array([[0.0, 2.0, 0.0], [0.0, 6.0, 0.0], [0.0, 12.0, 0.0]])
  g_log, g_ce = collapse.logit_gradients(logits, labels, w)
  p = np.asarray(jax.nn.softmax(logits))
  wy = np.asarray(w)[0]
  expect = p - wy * p / (p @ wy)[:, None]  # d/dz_j -log sum_k W_yk p_k
  np.testing.assert_allclose(g_log, expect, rtol=1e-5, atol=1e-7)
  np.testing.assert_allclose(
      g_ce, p - np.eye(3)[[0, 0, 0]], rtol=1e-5, atol=1e-7
  )
  norms_log = np.linalg.norm(np.asarray(g_log), axis=1)
  norms_ce = np.linalg.norm(np.asarray(g_ce), axis=1)
  # By hand at z = (0, 12, 0): p_y = e^-12 / (1 + 2 e^-12) ~ 6.1e-6; the true-class pull is
  # p_y (W_yy / W_yk - 1) ~ 5.7e-5 under SimLoss but 1 - p_y ~ 1 under cross-entropy.
  assert abs(float(g_log[2, 0]) + 6.144e-6 * (0.7 / 0.15 - 1)) < 1e-6
  assert norms_log[2] < 1e-4 < 1.0 < norms_ce[2]
  assert (
      norms_log[0] > norms_log[1] > norms_log[2]
  )  # the pull fades as the mistake firms up
