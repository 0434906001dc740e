r"""Imagenette (10 easy ImageNet classes, full size) through the streaming reader.

9,469 train / 3,925 validation images of varying size, read by
`tfds.data_source` (TFDS's ArrayRecord files; dataset.reader='grain',
simsoft.data.streaming) with the ImageNet pipeline at 128 x 128: Inception
crop + flip for training, resize to 146 and central 128 crop for evaluation
(TFDS's 'validation' split is the test split here; this run's 'validation'
is 10 % of train, seeded). A small stand-in for ImageNet that one host
trains: ResNet-50 (the ImageNet model, stride-2 stem and max-pool), SGD
momentum 0.9, lr 0.1, cosine, weight decay 5e-4, batch 128, 60 epochs per
phase.

  tfds build imagenette --file_format array_record     # once (downloads 1.5 GB)
  python -m simsoft.main --config configs/imagenette.py --workdir /tmp/simsoft/imagenette
  python -m simsoft.main --config configs/imagenette.py:model=resnet18,epochs=90 --workdir W
  python -m simsoft.main --config configs/imagenette.py:runlocal --workdir W

Not run here (TFDS downloads fail on these machines); tested under
tfds.testing.mock_data (tests/test_streaming.py).
"""

from simsoft import config as config_lib


def get_config(arg=None):
  c = config_lib.cifar_recipe(config_lib.base_config(), "imagenette")
  c.dataset.reader = "grain"
  c.dataset.grain.image_size = 128
  c.dataset.grain.train_transform = "random_resized_crop"
  c.dataset.grain.eval_transform = "resize_center_crop"
  c.model.name = "resnet50"
  c.eval_batch_size = 500
  c.estimate.epochs = c.retrain.epochs = 60
  c.checkpoint.every_steps = 500
  c.input.grain_workers = 4
  config_lib.set_severities(c, (1, 3, 5))
  return config_lib.apply_args(c, arg)
