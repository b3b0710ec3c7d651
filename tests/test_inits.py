"""Every registry model's initial weights, layer by layer, against its source's formula.

Each kernel's empirical standard deviation s must match the formula's sigma within
|s/sigma - 1| < 5/sqrt(2n), n the number of weights drawn (uniform draws also stay inside
their bound); biases and BatchNorm scales and offsets equal their constants. The formulas are
written here from the papers and reference implementations, apart from the library's tables,
and hold per shape, so large models are checked at narrow widths.
"""

import json
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cnn_cases import models
from cnn_cases.engine import defaults, loading, train
from cnn_cases.models import inception, lenet

# Narrow versions of the registry's models: the same module code, smaller layers.
NARROW = {"width_multiplier": 0.25}
CIFAR_NARROW = {"width": 8}
IMAGENET_RESNET = {"widths": (16, 32, 64, 128)}


# GoogLeNet's first module of stages 3 and 4, with a head on (4a): every kind of layer it has.
GOOGLENET_SHORT = {"stages": inception.SMOKE_STAGES, "aux_after": ("4a",)}


def narrow_kwargs(name):
    model = models.get_model(name)
    if isinstance(model, inception.GoogLeNet):
        short = GOOGLENET_SHORT if model.aux_logits else {"stages": inception.SMOKE_STAGES}
        return {**NARROW, **short}
    if hasattr(model, "width_multiplier"):
        return NARROW
    if name.startswith(("resnet", "plain")) and model.stem == "cifar":
        return CIFAR_NARROW
    if hasattr(model, "widths"):  # ImageNet ResNets: one block per stage but the third's two
        return {**IMAGENET_RESNET, "stage_sizes": (1, 1, 2, 1)}
    return {}


def fans(shape):
    receptive = math.prod(shape[:-2])
    return receptive * shape[-2], receptive * shape[-1]


def normal(sigma):
    return ("normal", sigma)


def uniform(bound):
    return ("uniform", bound)


def const(value):
    return ("const", value)


def family(name):
    for prefix in ("lenet5_1998", "lenet5", "alexnet", "vgg", "nin", "googlenet", "inception"):
        if name.startswith(prefix):
            return prefix
    return "resnet_cifar" if models.input_shape(name) == (32, 32, 3) else "resnet_imagenet"


HEADS = {"fc8", "head", "fc", "classifier", "output"}
BVLC_BIAS = 0.2  # bvlc_googlenet's convolution and auxiliary-FC biases


def expected(fam, path, shape):
    """The formula of one parameter of a model of family `fam`, from its source."""
    layer, leaf = path[-2], path[-1]
    if layer.startswith("bn") or layer.endswith("_bn"):  # BatchNorm: scale 1, offset 0
        return const(1.0) if leaf == "scale" else const(0.0)
    if layer in ("s2", "s4"):  # LeCun's subsampling: coefficient 1, bias 0
        return const(1.0) if leaf == "coeff" else const(0.0)
    # The classifier; GoogLeNet's auxiliary heads name their hidden FC layer "fc" too.
    head = layer == "classifier" or (layer in HEADS and not path[0].startswith("aux"))
    if leaf == "bias":
        if fam == "alexnet":
            return const(0.0)
        if fam in ("googlenet", "inception"):
            return const(0.0 if head else BVLC_BIAS)
        return const(0.0)
    fan_in, fan_out = fans(shape)
    if fam in ("lenet5_1998",):
        return uniform(2.4 / fan_in)
    if fam == "lenet5":  # Glorot & Bengio, as d2l
        return uniform(math.sqrt(6.0 / (fan_in + fan_out)))
    if fam in ("alexnet", "vgg"):
        if head:
            return normal(1 / math.sqrt(fan_in))
        if len(shape) == 2:
            return normal(math.sqrt(2 / fan_in))
        return normal(math.sqrt(2 / (fan_out if fam == "vgg" else fan_in)))
    if fam == "nin":
        return normal(math.sqrt(2 / fan_in))
    if fam in ("googlenet", "inception"):  # Caffe's xavier: U(+-sqrt(3/fan_in))
        return uniform(math.sqrt(3 / fan_in))
    if head:  # torchvision's Linear default
        return uniform(1 / math.sqrt(fan_in))
    return normal(math.sqrt(2 / (fan_out if fam == "resnet_imagenet" else fan_in)))


def check_leaf(fam, path, value):
    kind, arg = expected(fam, path, value.shape)
    w = np.asarray(value, np.float64).ravel()
    where = "/".join(path)
    if kind == "const":
        np.testing.assert_array_equal(np.asarray(value).ravel(), np.float32(arg), err_msg=where)
        return
    sigma = arg if kind == "normal" else arg / math.sqrt(3)
    s = w.std()
    assert abs(s / sigma - 1) < 5 / math.sqrt(2 * w.size), f"{where}: std {s:.4g}, want {sigma:.4g}"
    assert abs(w.mean()) < 5 * sigma / math.sqrt(w.size), where
    if kind == "uniform":
        assert np.abs(w).max() <= arg, where


def leaves(tree, prefix=()):
    for key, value in tree.items():
        if isinstance(value, dict):
            yield from leaves(value, (*prefix, key))
        else:
            yield (*prefix, key), value


def init_params(name, **kwargs):
    model = models.get_model(name, num_classes=10, kernels="xla", **kwargs)
    size = max(32, getattr(model, "min_input_size", 32))
    channels = models.input_shape(name)[-1]
    x = jnp.zeros((1, size, size, channels))
    key = jax.random.key(0, impl="rbg")
    return model.init({"params": key, "dropout": key}, x, train=True)["params"]


# ResNet-1202 is ResNet-20's code with more blocks; its 1,200 layers would take a minute here.
REGISTRY = [n for n in models.MODELS if n != "resnet1202"]
# By family, so that one process draws every model of a family: the eager init's per-shape
# programs are compiled once for all of them.
FAMILIES = sorted({family(n) for n in REGISTRY})


def check_model(name):
    params = init_params(name, **narrow_kwargs(name))
    fam = family(name)
    if fam == "lenet5_1998":  # C3's maps each see their own fan-in: 75, 100 or 150
        c3 = jax.device_get(params).pop("c3")
        np.testing.assert_array_equal(c3["bias"], 0.0)
        bounds = [np.full(len(col), 2.4 / (25 * len(col))) for col in lenet.C3_TABLE]
        scaled = (np.asarray(c3["kernel"]) / np.concatenate(bounds)).ravel()  # U(-1, 1)
        assert abs(scaled.std() * math.sqrt(3) - 1) < 5 / math.sqrt(2 * scaled.size)
        assert np.abs(scaled).max() <= 1
        params = {k: v for k, v in params.items() if k != "c3"}
    for path, value in leaves(jax.device_get(params)):
        check_leaf(fam, path, value)


def test_every_registry_model_is_in_a_family():
    assert len(REGISTRY) == len(models.MODELS) - 1
    assert set(FAMILIES) == {
        "lenet5", "lenet5_1998", "alexnet", "vgg", "nin", "googlenet", "inception",
        "resnet_cifar", "resnet_imagenet",
    }  # fmt: skip


@pytest.mark.parametrize("fam", FAMILIES)
def test_initial_weights_follow_the_formula(fam):
    for name in REGISTRY:
        if family(name) == fam:
            check_model(name)


def test_alexnet_paper_init_has_its_biases():
    params = init_params("alexnet_cifar", width_multiplier=0.25, weight_init="paper")
    for layer in ("conv1", "conv2", "conv3", "conv4", "conv5", "fc6", "fc7", "fc8"):
        bias = 1.0 if layer in ("conv2", "conv4", "conv5", "fc6", "fc7") else 0.0
        np.testing.assert_array_equal(params[layer]["bias"], bias)
        w = np.asarray(params[layer]["kernel"]).ravel()
        assert abs(w.std() / 0.01 - 1) < 5 / math.sqrt(2 * w.size), layer


def test_flax_init_is_the_old_default():
    params = init_params("vgg16_cifar", width_multiplier=0.25, weight_init="flax")
    w = np.asarray(params["conv3_1"]["kernel"])
    sigma = 1 / math.sqrt(fans(w.shape)[0])
    assert abs(w.std() / sigma - 1) < 5 / math.sqrt(2 * w.size)


@pytest.mark.parametrize(
    ("name", "init"), [("googlenet", "paper"), ("nin", "paper"), ("resnet20", "kaiming")]
)
def test_an_init_the_source_does_not_state_is_one_line(name, init):
    config = defaults.default_config()
    config.model, config.init = name, init
    with pytest.raises(ValueError, match=rf"init.*{init}.*valid") as e:
        defaults.validate(config)
    assert "\n" not in str(e.value)


def old_workdir(tmp_path, config):
    """A run directory as a run made before the models had their papers' inits left it."""
    stored = json.loads(config.to_json())
    for key in ("init", "grad_clip_norm"):
        del stored[key]
    workdir = tmp_path / "old"
    workdir.mkdir()
    (workdir / "config.json").write_text(json.dumps(stored))
    return str(workdir)


def test_a_run_under_the_old_init_is_refused_in_one_line(tmp_path):
    config = defaults.default_config()
    config.update(dataset="synthetic", num_steps=2, batch_size=8, verbose=False)
    workdir = old_workdir(tmp_path, config)
    for reuse in (
        lambda: train.train(config, workdir),
        lambda: loading.stored_results(config, workdir),
    ):
        with pytest.raises(ValueError, match=r"init: 'flax' -> 'reference'") as e:
            reuse()
        assert "\n" not in str(e.value)
    config.init = "flax"  # the same run, resumed as it began
    assert loading.stored_results(config, workdir) is None
