"""The case studies' ImageNet recipes, each as its paper trained it, streamed from disk.

    python -m experiments.imagenet --config=experiments/imagenet.py:resnet50 \\
        --config.data_dir=/data/tfds --workdir=runs/imagenet_resnet50
    python -m experiments.imagenet --config=experiments/imagenet.py:resnet50 \\
        --config.accumulate_steps=4     # the batch of 256 as 4 micro-batches of 64

Presets: alexnet, vgg16, resnet50, resnet50_bf16, googlenet (their docstrings below cite the
paper's section and the errors it reports), and smoke (tests). `imagenet2012` is read through
TFDS, which needs its archives downloaded by hand (TFDS's manual_dir) and prepared once, as
ArrayRecord (this project prepares datasets as ArrayRecord; a copy already prepared as
TFRecord is converted once with `python -m scripts.convert_array_record`). Batches are read
by grain (`--config.data_workers`, by default all cores but two), and each process reads its
own rows; every checkpoint holds the pipeline's position, so a run resumes at the next batch.

Common to every preset: random-resized crops of 224 (8-100 % of the area, aspect 3/4-4/3) and
flips for training; the shorter side resized to 256 and the centre 224 for evaluation; the
channel mean and std of ImageNet; top-1 and top-5 error on the whole validation split at the
end, and on 10,000 of its images every epoch. Where the devices cannot hold a preset's
batch, `--config.accumulate_steps=K` runs it as K micro-batches with one update: the recipe
stays, BatchNorm sees micro-batches. None of these presets has been run to the end here.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import ml_collections

from experiments import common, presets
from experiments import train as train_launcher

PRESETS = ("alexnet", "vgg16", "resnet50", "resnet50_bf16", "googlenet", "smoke")
TRAIN_EXAMPLES = 1_281_167  # imagenet2012 train
VALIDATION_EXAMPLES = 50_000


def _epochs(epochs: float, batch_size: int) -> int:
    """Steps of `epochs` passes over the training set (each epoch drops its remainder)."""
    return round(epochs * (TRAIN_EXAMPLES // batch_size))


def _recipe(
    model: str,
    *,
    batch_size: int,
    epochs: int,
    lr: float,
    decays_at: Sequence[int],
    weight_decay: float,
    **knobs: object,
) -> dict:
    """A preset's keys: SGD with momentum 0.9, lr divided by 10 at the epochs `decays_at`."""
    per_epoch = TRAIN_EXAMPLES // batch_size
    return dict(
        model=model,
        batch_size=batch_size,
        num_steps=_epochs(epochs, batch_size),
        learning_rate=lr,
        lr_boundaries=tuple(_epochs(e, batch_size) for e in decays_at),
        weight_decay=weight_decay,
        eval_every=per_epoch,
        log_every=max(1, per_epoch // 20),
        checkpoint_every=max(1, per_epoch // 4),
        **knobs,
    )


def alexnet() -> dict:
    """AlexNet, Krizhevsky, Sutskever and Hinton 2012.

    Sec. 5: SGD, batch 128, momentum 0.9, weight decay 5e-4, lr 0.01 divided by 10 when the
    validation error stopped improving (three times), about 90 epochs. Sec. 4.2: dropout 0.5
    in the first two FC layers (the model's default). Here the three decreases fall at
    epochs 30, 60 and 80. Sec. 4.1 crops 224 from images resized to 256 and adds PCA
    lighting noise; this preset takes random-resized crops and no lighting noise.
    Reported (Table 2, ILSVRC-2012 validation, one CNN): 40.7 % top-1, 18.2 % top-5 error.
    """
    return _recipe(
        "alexnet", batch_size=128, epochs=90, lr=0.01, decays_at=(30, 60, 80), weight_decay=5e-4
    )


def vgg16() -> dict:
    """VGG-16 (configuration D), Simonyan and Zisserman 2015.

    Sec. 3.1: batch 256, momentum 0.9, weight decay 5e-4, dropout 0.5 in the first two FC
    layers, lr 0.01 divided by 10 three times when validation accuracy stopped improving,
    stopped after 370K iterations (74 epochs). Here the decreases fall at epochs 30, 50 and
    65. The paper crops 224 from images rescaled to S = 256 (or S in [256, 512]) with colour
    shifts, and initialises D from a shallower net; this preset takes random-resized crops
    and initialises from scratch (the model's initialisation), with the gradient clipped to a
    global norm of 1: without it, at 1/8 width, the loss fell to 0.44 and then blew up back to
    chance within 60 steps (`scripts/learns.py`).
    Reported (Table 3, single scale, S = Q = 256): 27.0 % top-1, 8.8 % top-5 error.
    """
    return _recipe(
        "vgg16",
        batch_size=256,
        epochs=74,
        lr=0.01,
        decays_at=(30, 50, 65),
        weight_decay=5e-4,
        grad_clip_norm=1.0,
    )


def resnet50() -> dict:
    """ResNet-50, He et al. 2016, as torchvision's reference recipe trains it.

    Sec. 3.4: SGD, batch 256, momentum 0.9, weight decay 1e-4, no dropout, lr 0.1 divided by
    10 when the error plateaus, up to 600K iterations, scale augmentation (shorter side in
    [256, 480]) with 224 crops and flips. torchvision's reference (`references/
    classification`, the recipe of its IMAGENET1K_V1 weights) fixes the plateaus: 90 epochs,
    lr /10 every 30, random-resized crops; this preset follows it.
    Reported: He et al. Table 3 (10-crop testing) 22.85 % top-1, 6.71 % top-5 error;
    torchvision's weights, one centre crop, 23.87 % and 7.14 %.
    """
    return _recipe(
        "resnet50", batch_size=256, epochs=90, lr=0.1, decays_at=(30, 60), weight_decay=1e-4
    )


def resnet50_bf16() -> dict:
    """ResNet-50 as `resnet50`, computing in bfloat16 (parameters, optimiser state and
    BatchNorm statistics stay float32). No paper number: expected close to float32's."""
    return {**resnet50(), "dtype": "bfloat16"}


def googlenet() -> dict:
    """GoogLeNet with its two auxiliary classifiers, Szegedy et al. 2015.

    Sec. 6: SGD with momentum 0.9 (asynchronous, on many machines), the learning rate
    decreased by 4 % every 8 epochs, Polyak averaging for the final model; crops of 8-100 %
    of the area with aspect 3/4-4/3 (random-resized crops) and photometric distortions.
    Sec. 5: auxiliary losses weighted 0.3, dropout 0.7 in the auxiliary heads and 0.4 before
    the main classifier (the model's defaults). The paper gives neither the batch, the
    initial rate, the weight decay nor the length of training; this preset takes batch 256,
    lr 0.04, weight decay 2e-4 and 120 epochs, synchronous SGD, and no Polyak averaging.
    BatchNorm after every convolution, as torchvision's GoogLeNet (the paper's net has none):
    without it the 22 layers did not learn at all in `scripts/learns.py`'s check.
    Reported (Table 3, one model, one crop): 10.07 % top-5 error (no top-1 given).
    """
    c = _recipe("googlenet", batch_size=256, epochs=120, lr=0.04, decays_at=(), weight_decay=2e-4)
    return {
        **c,
        "lr_decay": 0.96,
        "lr_decay_every": _epochs(8, 256),
        "aux_loss_weight": 0.3,
        "model_kwargs": {"batch_norm": True},
    }


RECIPES = {
    "alexnet": alexnet,
    "vgg16": vgg16,
    "resnet50": resnet50,
    "resnet50_bf16": resnet50_bf16,
    "googlenet": googlenet,
}


def get_config(preset: str | None = None) -> ml_collections.ConfigDict:
    """The config of `preset` (default resnet50); see the module docstring and each recipe.

    smoke: resnet50's recipe, 3 steps of 16 at 64x64 (tests; any dataset via --config.dataset).
    """
    c = presets.base_config(
        dataset="imagenet2012",
        train_split="train",
        test_split="validation",
        pipeline="stream",
        preprocess="imagenet",
        image_size=224,
        eval_resize=256,
        augment=True,
        mean_subtract=True,
        data_workers=max(0, (os.cpu_count() or 1) - 2),
        eval_batch_size=500,
        curve_eval_examples=10_000,
        final_train_eval_examples=10_000,
        keep_checkpoints=2,
    )
    c.preset = presets.check_preset(preset, PRESETS) or "resnet50"
    recipe = RECIPES.get(c.preset, resnet50)()
    c.update(recipe)
    if c.preset == "smoke":
        c.update(image_size=64, eval_resize=73, data_workers=0)
        presets.smoke(c)
    c.expected_minutes = 0.0
    return c


main = train_launcher.main  # the same program; only the configs differ


if __name__ == "__main__":
    _, parse = common.define_flags(__file__, get_config, "runs/imagenet")
    common.run(main, flags_parser=parse)
