r"""ImageNet (ILSVRC 2012) through the streaming reader: ResNet-50 on a TPU pod.

1.28 M train images of varying size (about 140 GB of JPEG) do not fit one
host, so the data are streamed (dataset.reader='grain',
simsoft.data.streaming): TFDS's ArrayRecord files read by `tfds.data_source`
from dataset.data_dir (a gs:// bucket on a pod), each process reading only
its rows of every batch, JPEG decoding and the Inception crop + flip in
grain worker processes, evaluation on the 50,000 'validation' images
(resize to 256, central 224). 'validation' of this run is 2 % of TFDS's
train split (25,623 images, seeded; S is estimated on it).

Recipe (Goyal et al. 2017 / Flax's ImageNet example): ResNet-50 (v1.5,
25,557,032 parameters), bfloat16 compute, SGD momentum 0.9 (Nesterov), lr
0.1 x batch / 256 with 5 warm-up epochs and a cosine decay, weight decay
1e-4, batch 1024, 90 epochs per phase.

  # once: TFDS's ImageNet in ArrayRecord format (needs the manual download of
  # ILSVRC2012_img_{train,val}.tar in <data_dir>/downloads/manual)
  tfds build imagenet2012 --data_dir gs://BUCKET/tensorflow_datasets --file_format array_record
  # a v4-32 slice: every worker runs the same command (launch/tpu_pod.sh)
  bash launch/tpu_pod.sh up configs/imagenet2012.py \
      --config.dataset.data_dir=gs://BUCKET/tensorflow_datasets in1k_r50
  # or one host
  python -m simsoft.main --config configs/imagenet2012.py \
      --config.dataset.data_dir=/data/tensorflow_datasets --workdir W

Not run here (no ImageNet on these machines); the pipeline is tested under
tfds.testing.mock_data (tests/test_streaming.py). What a host must decode
and crop per second to keep its chips fed, against what one core does:
benchmarks/RESULTS.md, "Streaming input".
"""

from simsoft import config as config_lib


def get_config(arg=None):
  c = config_lib.base_config()
  c.dataset.name = "imagenet2012"
  c.dataset.reader = "grain"
  c.dataset.validation_fraction = 0.02
  c.dataset.grain.image_size = 224
  c.dataset.grain.train_transform = "random_resized_crop"
  c.dataset.grain.eval_transform = "resize_center_crop"
  c.model.name = "resnet50"
  c.model.dtype = "bfloat16"
  c.batch_size = 1024
  c.eval_batch_size = 1024
  c.optimizer.learning_rate = 0.1 * c.batch_size / 256
  c.optimizer.nesterov = True
  c.optimizer.weight_decay = 1e-4
  c.optimizer.warmup_epochs = 5.0
  c.estimate.epochs = c.retrain.epochs = 90
  c.checkpoint.every_steps = 2000
  c.log_every_steps = 100
  c.input.grain_workers = 32
  c.input.grain_threads = 4
  c.input.grain_buffer = 4
  # The corruptions on a 10,000-image subset of the 50,000 (each cell is a
  # full pass through ResNet-50), at severities 1, 3, 5.
  c.evaluate.evaluators.corruptions.examples = 10_000
  config_lib.set_severities(c, (1, 3, 5))
  return config_lib.apply_args(c, arg)
