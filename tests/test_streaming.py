"""The streaming reader (grain over ArrayRecord): same data, same batches, exact resume.

A 63-image folder whose pixel (0, 0) names each image is prepared as
ArrayRecord shards; the streamed dataset must be the in-memory one, its
batches those of the in-memory iterators (one and two processes), a run on
it must train the model the in-memory path trains, resume exactly after an
interruption, and read disjoint shards from two processes.
"""

import json
import os
import signal
import socket
import subprocess
import sys

import numpy as np
import pytest

from simsoft import data as data_lib
from simsoft import errors
from simsoft import input_pipeline
from simsoft.augment import crop_flip
from simsoft.data import image_ops, prepare, records, streaming
from tests.helpers.streaming import image_id, make_folder, stream_config
from tests.helpers.tiny import ROOT, final_params


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
  root = tmp_path_factory.mktemp("stream")
  data_dir = make_folder(str(root / "folder"))
  records_dir = str(root / "records")
  prepare.prepare(data_dir, records_dir, shard_size=7)  # several shards a split
  return data_dir, records_dir


@pytest.fixture(scope="module")
def datasets(folder):
  memory = data_lib.from_config(stream_config(*folder, reader="memory").dataset)
  stream = data_lib.from_config(stream_config(*folder).dataset)
  return memory, stream


@pytest.fixture(scope="module")
def reference(folder, tmp_path_factory):
  """Model A's parameters and the workdir of an uninterrupted streamed run (all phases)."""
  workdir = str(tmp_path_factory.mktemp("reference") / "run")
  return final_params(stream_config(*folder), workdir), workdir


def _results(workdir):
  with open(os.path.join(workdir, "results.json")) as f:
    models = json.load(f)["models"]
  return {
      k: (m["clean"]["accuracy"], m["clean"]["nll"]) for k, m in models.items()
  }


def test_record_format_round_trip_and_foreign_bytes():
  assert records.decode(records.encode(7, b"\xff\xd8jpeg")) == (
      7,
      b"\xff\xd8jpeg",
  )
  with pytest.raises(ValueError, match="not a simsoft record"):
    records.decode(b"JUNKxxxxdata")


def test_prepared_copy_holds_the_in_memory_dataset(datasets):
  memory, stream = datasets
  assert (stream.mean, stream.std) == (memory.mean, memory.std)
  assert stream.image_shape == memory.image_shape == (8, 8, 3)
  assert stream.class_names == memory.class_names
  for split in ("train", "validation", "test"):
    a, b = memory.split(split), stream.split(split)
    assert len(b) == len(a) and np.array_equal(b.labels, a.labels)
    pixels = np.stack([b.read_eval(i)[0] for i in range(len(b))])
    np.testing.assert_array_equal(pixels, a.images, err_msg=split)


def test_prepare_refuses_bad_input_in_one_line(folder, tmp_path, capsys):
  out = tmp_path / "out"
  assert (
      prepare.main(["--data_dir", str(tmp_path / "nope"), "--out", str(out)])
      == 2
  )
  err = capsys.readouterr().err.strip().splitlines()
  assert len(err) == 1 and err[0].startswith("simsoft: error: ")
  assert "nope" in err[0] and not out.exists()
  assert prepare.main(["--data_dir", folder[0], "--out", folder[1]]) == 2
  assert "already holds a prepared copy" in capsys.readouterr().err
  assert (
      prepare.main(
          ["--data_dir", folder[0], "--out", str(out), "--name", "cifar10_jpeg"]
      )
      == 2
  )
  assert "expects the class folders" in capsys.readouterr().err
  assert not out.exists() and not list(tmp_path.glob("out.tmp-*"))


@pytest.mark.parametrize("processes", [1, 2])
def test_train_stream_reads_the_in_memory_batches(datasets, processes):
  memory, stream = datasets
  steps = 12  # 5 steps per epoch: crosses two epoch boundaries
  seen = []
  for p in range(processes):
    shard = dict(process_index=p, process_count=processes)
    got = streaming.train_dataset(
        stream.split("train"),
        global_batch_size=8,
        seed=3,
        num_steps=steps,
        **shard,
    )
    want = data_lib.train_batches(
        memory.split("train"), global_batch_size=8, seed=3, **shard
    )
    batches = list(got)
    assert len(batches) == steps
    for b, w in zip(batches, want):
      assert b["image"].dtype == np.uint8 and b["image"].shape == (
          8 // processes,
          8,
          8,
          3,
      )
      np.testing.assert_array_equal(streaming.as_float(b["image"]), w["image"])
      np.testing.assert_array_equal(b["label"], w["label"])
    seen.append([image_id(b["image"]) for b in batches[:5]])  # the first epoch
  epoch = np.concatenate([np.concatenate(s) for s in seen])
  assert (
      len(set(epoch)) == len(epoch) == 40
  )  # disjoint rows, 43 - 43 mod 8 examples


def test_eval_stream_pads_and_masks_as_in_memory(datasets):
  memory, stream = datasets
  for p in range(2):
    kw = dict(global_batch_size=8, process_index=p, process_count=2)
    got = list(data_lib.eval_batches(stream.split("test"), **kw))
    want = list(data_lib.eval_batches(memory.split("test"), **kw))
    assert len(got) == len(want) == 2  # 15 examples: the last batch holds 7
    for g, w in zip(got, want):
      assert g.keys() == w.keys()
      for key in w:
        np.testing.assert_array_equal(g[key], w[key], err_msg=key)


def test_host_transforms():
  rng = np.random.default_rng(0)
  image = rng.integers(0, 256, (6, 5, 3), dtype=np.uint8)
  # pad_crop_flip draws (dy, dx) then the flip, and computes augment.crop_flip.
  for seed in range(6):
    draws = np.random.default_rng(seed)
    offsets = draws.integers(0, 9, size=2)
    flip = bool(draws.integers(0, 2))
    want = crop_flip(image[None], offsets[None], np.array([flip]), padding=4)[0]
    got = image_ops.pad_crop_flip(image, np.random.default_rng(seed))
    np.testing.assert_array_equal(got, np.asarray(want))
  # The whole square image at scale 1, ratio 1, resized to its own size: itself.
  square = image[:5]
  whole = image_ops.random_resized_crop(
      square, rng, 5, scale=(1.0, 1.0), ratio=(1.0, 1.0)
  )
  np.testing.assert_array_equal(whole, square)
  crop = image_ops.random_resized_crop(image, np.random.default_rng(1), 4)
  assert crop.shape == (4, 4, 3) and crop.dtype == np.uint8
  # 4 x 8 -> shorter side 2 (fraction 1): 2 x 4, central 2 x 2 = columns 1, 2.
  wide = np.repeat(np.arange(8, dtype=np.uint8)[None, :, None] * 30, 4, axis=0)
  wide = np.repeat(wide, 3, axis=2)
  center = image_ops.resize_center_crop(wide, 2, fraction=1.0)
  assert center.shape == (2, 2, 3)
  np.testing.assert_array_equal(
      center, image_ops._resize(wide, (0, 0, 8, 4), (4, 2))[:, 1:3]
  )
  with pytest.raises(ValueError, match="unknown train transform 'zoom'"):
    image_ops.train_transform("zoom", image, rng, 0)


def test_streamed_run_reads_its_seeds_batches(folder, datasets, tmp_path):
  """The loop's stream (loop._stream_input) follows config.seed: with seed 5 its
  batches are default_rng([5, epoch])'s, the in-memory order, not seed 0's."""
  from simsoft import loop, sharding
  from simsoft.run import Run

  memory, stream = datasets
  c = stream_config(*folder)
  c.seed = 5
  run = Run(
      config=c, workdir=str(tmp_path), mesh=sharding.make_mesh(), dataset=stream
  )
  feeder = loop._stream_input(run, lambda *a: a, 7, None)
  try:
    got = [image_id(next(feeder._grain)["image"]) for _ in range(7)]
  finally:
    feeder.close()
  train = memory.split("train")
  for seed, same in ((5, True), (0, False)):
    want = data_lib.train_batches(train, global_batch_size=8, seed=seed)
    ids = [image_id(next(want)["image"]) for _ in range(7)]
    assert all(np.array_equal(g, w) for g, w in zip(got, ids)) == same, seed


def test_worker_processes_and_iterator_state(datasets):
  """Batches do not depend on the number of grain workers; a restored state resumes."""
  stream = datasets[1].split("train")
  kw = dict(
      global_batch_size=8, seed=1, num_steps=8, process_index=0, process_count=1
  )
  alone = [b["image"] for b in streaming.train_dataset(stream, workers=0, **kw)]
  it = iter(streaming.train_dataset(stream, workers=2, **kw))
  first = [next(it)["image"] for _ in range(3)]
  state = it.get_state()
  rest = [b["image"] for b in it]
  it.set_state(state)  # back to step 3: the same batches again
  again = [b["image"] for b in it]
  it.close()
  assert len(first + rest) == len(alone) and len(again) == len(rest)
  for got, want in zip(first + rest, alone):
    np.testing.assert_array_equal(got, want)
  for got, want in zip(again, rest):
    np.testing.assert_array_equal(got, want)


def test_streamed_run_trains_the_in_memory_model(folder, reference, tmp_path):
  params, workdir = reference
  memory_dir = str(tmp_path / "memory")
  memory = final_params(stream_config(*folder, reader="memory"), memory_dir)
  assert params.keys() == memory.keys() and params
  for name in params:
    np.testing.assert_allclose(params[name], memory[name], rtol=1e-5, atol=1e-6)
  got, want = _results(workdir), _results(memory_dir)
  assert got.keys() == want.keys() == {"A", "B"}
  for key in want:
    np.testing.assert_allclose(got[key], want[key], rtol=1e-5)
  for name in (
      "similarity.npy",
  ):  # S estimated by streaming the validation split
    np.testing.assert_allclose(
        np.load(os.path.join(workdir, "estimate", name)),
        np.load(os.path.join(memory_dir, "estimate", name)),
        rtol=1e-5,
    )
  steps = os.listdir(os.path.join(workdir, "estimate", "checkpoints"))
  item = os.path.join(workdir, "estimate", "checkpoints", max(steps, key=int))
  assert {"state", "iter"} <= set(
      os.listdir(item)
  )  # the iterator: its own item


def test_interrupted_streamed_run_resumes_exactly(
    folder, reference, tmp_path, monkeypatch
):
  """Stopped at step 3 (checkpoints every 2): resumes from 2 with the iterator at 2."""
  from simsoft import train

  run = input_pipeline.StreamInput.run
  calls = []

  def stop_at_step_3(self, state, key, num_steps):
    calls.append(1)
    if len(calls) == 3:
      signal.raise_signal(signal.SIGINT)  # the loop stops after this step
    return run(self, state, key, num_steps)

  config = stream_config(*folder)
  workdir = str(tmp_path / "run")
  with monkeypatch.context() as m:
    m.setattr(input_pipeline.StreamInput, "run", stop_at_step_3)
    with pytest.raises(errors.InterruptedRun, match="at step 3 of 5"):
      train.train_and_evaluate(config, workdir)
  params = final_params(config, workdir)
  for name in reference[0]:
    np.testing.assert_allclose(
        params[name], reference[0][name], rtol=1e-6, atol=1e-7
    )
  got, want = _results(workdir), _results(reference[1])
  for key in want:
    np.testing.assert_allclose(got[key], want[key], rtol=1e-6)


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


def test_two_processes_read_disjoint_shards_and_train_like_one(
    folder, reference, datasets, tmp_path
):
  port = str(_free_port())
  outs = [tmp_path / f"out{i}.npz" for i in range(2)]
  env = {**os.environ, "PYTHONPATH": ROOT}
  procs = [
      subprocess.Popen(
          [
              sys.executable,
              "-m",
              "tests.helpers.streaming_worker",
              port,
              str(i),
              *folder,
              str(tmp_path / "multi"),
              str(outs[i]),
          ],
          cwd=ROOT,
          env=env,
          stdout=subprocess.PIPE,
          stderr=subprocess.STDOUT,
          text=True,
      )
      for i in range(2)
  ]
  logs = [p.communicate(timeout=300)[0] for p in procs]
  for p, log in zip(procs, logs):
    assert p.returncode == 0, log[-3000:]
  first, second = (dict(np.load(o)) for o in outs)
  train_ids = image_id(datasets[0].split("train").images)
  # One epoch of train batches: disjoint shards whose union is the epoch's 40.
  a, b = first.pop("train_ids"), second.pop("train_ids")
  assert len(a) == len(b) == 20 and not set(a) & set(b)
  assert set(a) | set(b) <= set(train_ids) and len(set(a) | set(b)) == 40
  # The evaluation pass: disjoint, and the union is the whole split.
  a, b = first.pop("eval_ids"), second.pop("eval_ids")
  assert not set(a) & set(b) and sorted(np.concatenate([a, b])) == sorted(
      train_ids
  )
  for name in reference[0]:
    np.testing.assert_array_equal(first[name], second[name], err_msg=name)
    np.testing.assert_allclose(
        first[name], reference[0][name], rtol=1e-4, atol=1e-5
    )
  got, want = _results(str(tmp_path / "multi")), _results(reference[1])
  for key in want:  # the streamed test pass, its rows read by two processes
    np.testing.assert_allclose(got[key], want[key], rtol=1e-4)


def test_tfds_data_source_end_to_end_under_mock_data(tmp_path):
  """imagenette (images of varying size) through tfds.data_source: crop, train, S, evaluate."""
  import tensorflow_datasets as tfds

  from tests.helpers.tiny import load_config, tiny_config

  c = tiny_config("epochs=1", batch_size=8)
  full = load_config("", "imagenette")
  c.dataset, c.input.grain_workers = full.dataset, 0
  c.dataset.grain.image_size = 16
  c.dataset.grain.stats_examples = 8
  c.eval_batch_size = 8
  with tfds.testing.mock_data(num_examples=24):
    ds = data_lib.from_config(c.dataset)
    assert ds.image_shape == (16, 16, 3) and ds.num_classes == 10
    assert {s: len(ds.split(s)) for s in ds.splits} == {
        "train": 22,
        "validation": 2,
        "test": 24,
    }
    from simsoft import train

    train.train_and_evaluate(c, str(tmp_path / "run"))
  results = json.loads((tmp_path / "run" / "results.json").read_text())
  assert 0.0 <= results["models"]["B"]["clean"]["accuracy"] <= 1.0
  assert np.load(tmp_path / "run" / "estimate" / "similarity.npy").shape == (
      10,
      10,
  )


def test_bad_streaming_config_is_one_clear_error(folder, tmp_path):
  from simsoft import train, validate

  c = stream_config(*folder)
  c.dataset.reader = "tape"
  with pytest.raises(
      errors.ConfigError, match=r"dataset.reader.*\['grain', 'memory'\]"
  ):
    validate.check_values(c)
  c = stream_config(*folder)
  c.dataset.grain.image_size = 224  # with train_transform='device'
  with pytest.raises(errors.ConfigError, match="needs a host train transform"):
    validate.check_values(c)
  c = stream_config(*folder)
  c.dataset.grain.eval_transform = "squash"
  with pytest.raises(
      errors.ConfigError, match="unknown eval transform 'squash'"
  ):
    validate.check_values(c)
  c = stream_config(folder[0], str(tmp_path / "none"))
  with pytest.raises(
      errors.MissingInputError, match="python -m simsoft.data.prepare"
  ):
    train.load_dataset(c)
  c = stream_config(*folder)
  c.dataset.split_seed = 1  # the copy was prepared with 0
  with pytest.raises(errors.ConfigError, match="prepared with split_seed=0"):
    train.load_dataset(c)


def test_streamed_evaluators_score_as_in_memory(datasets):
  """Clean and corrupted metrics (noise keyed by batch index, [0, 1] pixels) match."""
  import jax
  import jax.numpy as jnp

  from simsoft import evaluators
  from simsoft.sharding import make_mesh

  weights = jax.random.normal(jax.random.key(0), (8 * 8 * 3, 3))
  predict = jax.jit(lambda x: x.reshape(x.shape[0], -1) @ weights - jnp.mean(x))
  entries = {
      "clean": {"type": "clean"},
      "corruptions": {
          "type": "corruptions",
          "corruptions": ("gaussian_noise",),  # its noise: fold_in(key, batch)
          "severities": (2,),
          "examples": 10,  # a prefix of the split: StreamSplit.head
      },
  }
  out = []
  for ds in datasets:
    test = ds.split("test")
    data = evaluators.EvalData(
        images=test if ds is datasets[1] else test.images,
        labels=test.labels,
        num_classes=3,
        batch_size=8,
        key=jax.random.key(17),
        mesh=make_mesh(),
    )
    metrics = {}
    for evaluator in evaluators.from_config(entries, data).values():
      metrics.update(evaluator.run(predict, lambda name: None))
    out.append(metrics)
  memory, stream = out
  assert stream["clean"]["correct_bits"] == memory["clean"]["correct_bits"]
  for cell in ("clean", "clean_on_corrupted_images"):
    assert stream[cell]["accuracy"] == memory[cell]["accuracy"]
    assert stream[cell]["nll"] == pytest.approx(memory[cell]["nll"], rel=1e-6)
  got, want = (
      m["corruptions"]["gaussian_noise"]["2"] for m in (stream, memory)
  )
  assert got["accuracy"] == want["accuracy"]
  assert got["nll"] == pytest.approx(want["nll"], rel=1e-5)
