"""The ImageNet recipes: every preset trains a few steps on `tfds.testing.mock_data`'s
imagenet2012 (random JPEGs of random sizes), streamed, at a tiny image size."""

import pytest
import tensorflow_datasets as tfds

from cnn_cases.engine import train
from cnn_cases.models import inception
from experiments import imagenet

# Near the smallest input each model takes (its min_input_size), and narrow layers, so that the
# step is cheap on a CPU; the recipe's optimiser, schedule and preprocessing stay, and so does
# the depth, but for GoogLeNet's: its stem, modules (3a) and (4a) only, a head on each.
TINY = {"alexnet": 72, "vgg16": 32, "resnet50": 32, "resnet50_bf16": 32, "googlenet": 80}
NARROW = {
    "alexnet": {"width_multiplier": 1 / 16},
    "vgg16": {"width_multiplier": 1 / 16},
    "resnet50": {"widths": (8, 16, 32, 64)},
    "resnet50_bf16": {"widths": (8, 16, 32, 64)},
    "googlenet": {
        "width_multiplier": 1 / 8,
        "stages": inception.SMOKE_STAGES,
        "aux_after": ("3a", "4a"),
    },
}


@pytest.mark.parametrize("preset", sorted(imagenet.RECIPES))
def test_every_imagenet_preset_trains_on_mock_imagenet(tmp_path, preset):
    c = imagenet.get_config(preset)
    assert c.dataset == "imagenet2012" and c.preprocess == "imagenet" and c.image_size == 224
    assert c.num_steps > 100_000 and c.test_split == "validation"
    c.update(
        image_size=TINY[preset],
        eval_resize=TINY[preset] + 8,
        batch_size=8,
        eval_batch_size=8,
        num_steps=2,
        log_every=1,
        eval_every=0,
        checkpoint_every=0,
        final_train_eval_examples=8,
        final_test_eval_examples=12,  # a padded last batch of 4
        data_workers=0,
        data_dir=str(tmp_path / "tfds"),
        verbose=False,
    )
    c.model_kwargs = {**c.model_kwargs.to_dict(), **NARROW[preset]}
    with tfds.testing.mock_data(num_examples=24, policy=tfds.testing.MockPolicy.USE_CODE):
        (result,) = train.train(c, str(tmp_path / "run"))
    assert result.steps == 2 and result.test_top5_error is not None
    assert 0 <= result.test_top5_error <= result.test_error <= 1
