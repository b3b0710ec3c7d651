"""Registry models equal their PyTorch counterparts as functions, with the weights copied.

torchvision's models with random weights and random BatchNorm statistics, converted by
`cnn_cases.interop.pretrained`, in eval mode on the same random images: logits equal to 1e-5 of the
largest. The CIFAR nets against `cnn_cases.interop.pytorch` the same way.
"""

import numpy as np
import pytest
import torch

from cnn_cases import models
from cnn_cases.interop import pretrained, pytorch

torchvision = pytorch.import_torchvision()


def _randomise_bn_statistics(net, seed: int = 0) -> None:
    g = torch.Generator().manual_seed(seed)
    for m in net.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(m.weight.shape, generator=g) + 0.5)
            m.bias.data.copy_(torch.randn(m.bias.shape, generator=g) * 0.1)


def _state(net) -> dict[str, np.ndarray]:
    return {k: v.detach().numpy() for k, v in net.state_dict().items()}


def _compare(name: str, net, hw: int, batch: int = 2) -> float:
    """Max |logits difference| / max |logit| of `net` and registry model `name`."""
    net.eval()
    _randomise_bn_statistics(net)
    x = np.random.default_rng(1).normal(size=(batch, hw, hw, 3)).astype(np.float32)
    with torch.no_grad():
        want = net(torch.from_numpy(x.transpose(0, 3, 1, 2).copy())).numpy()
    variables = pretrained.to_flax(name, _state(net))
    got = np.asarray(models.get_model(name).apply(variables, x, train=False))
    assert got.shape == want.shape
    return float(np.max(np.abs(got - want)) / np.max(np.abs(want)))


TORCHVISION = [
    ("alexnet_torchvision", 224),
    *((f"vgg{d}{bn}", 64) for d in (11, 13, 16, 19) for bn in ("", "_bn")),
    *((f"resnet{d}", 64) for d in (18, 34, 50, 101, 152)),
]


@pytest.mark.parametrize(("name", "hw"), TORCHVISION, ids=[n for n, _ in TORCHVISION])
def test_registry_model_equals_torchvision(name, hw):
    torch.manual_seed(0)
    net = getattr(torchvision.models, pretrained.TORCHVISION[name])()
    assert _compare(name, net, hw) < 1e-5


@pytest.mark.parametrize("name", ["resnet20", "plain20", "resnet32"])
def test_cifar_nets_equal_the_pytorch_reference(name):
    torch.manual_seed(0)
    assert _compare(name, pytorch.cifar_net(name), 32, batch=4) < 1e-5


def test_even_input_stride_two_is_symmetric():
    # The case Flax's "SAME" got wrong: a stride-2 3x3 conv on an even input. One block.
    torch.manual_seed(0)
    net = torchvision.models.resnet18()
    assert _compare("resnet18", net, 32) < 1e-5


def test_wrong_model_or_file_is_one_line(tmp_path):
    torch.manual_seed(0)
    state = _state(torchvision.models.resnet18())
    with pytest.raises(ValueError, match=r"^tensor 'layer1.0.conv1.weight' has shape") as err:
        pretrained.to_flax("resnet50", state)
    assert "\n" not in str(err.value) and "torchvision resnet50" in str(err.value)
    with pytest.raises(ValueError, match=r"no tensor 'layer1.2.bn1.bias'"):
        pretrained.to_flax("resnet34", state)
    with pytest.raises(ValueError, match=r"no PyTorch counterpart for model 'lenet5'"):
        pretrained.to_flax("lenet5", state)
    extra = {**state, "head.weight": state["fc.weight"]}
    with pytest.raises(ValueError, match=r"tensor 'head.weight' has no place in resnet18"):
        pretrained.to_flax("resnet18", extra)
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match=r"junk.pth' is not a readable .pth") as err:
        pretrained.read_state_dict(str(junk))
    assert "\n" not in str(err.value)
    with pytest.raises(ValueError, match=r"does not exist"):
        pretrained.read_state_dict(str(tmp_path / "missing.pth"))


def test_pth_safetensors_msgpack_and_orbax_give_the_same_variables(tmp_path):
    from safetensors.torch import save_file

    torch.manual_seed(0)
    net = torchvision.models.resnet18()
    torch.save(net.state_dict(), tmp_path / "w.pth")
    save_file(net.state_dict(), str(tmp_path / "w.safetensors"))
    a = pretrained.load(str(tmp_path / "w.pth"), "resnet18")
    b = pretrained.load(str(tmp_path / "w.safetensors"), "resnet18")
    pretrained.save(a, str(tmp_path / "w.msgpack"))
    pretrained.save(a, str(tmp_path / "w_orbax"))
    c = pretrained.load(str(tmp_path / "w.msgpack"), "resnet18")
    d = pretrained.load(str(tmp_path / "w_orbax"), "resnet18")
    flat = lambda v: {"/".join(k): np.asarray(x) for k, x in _flatten(v)}
    fa = flat(a)
    for other in (b, c, d):
        fo = flat(other)
        assert fo.keys() == fa.keys()
        for k in fa:
            np.testing.assert_array_equal(fo[k], fa[k])
    with pytest.raises(ValueError, match=r"w.msgpack' does not fit resnet34"):
        pretrained.load(str(tmp_path / "w.msgpack"), "resnet34")


def _flatten(tree, prefix=()):
    for k, v in tree.items():
        if isinstance(v, dict):
            yield from _flatten(v, (*prefix, k))
        else:
            yield (*prefix, k), v


def test_preprocessing_is_torchvision_s(tmp_path):
    from PIL import Image

    from cnn_cases.interop import imagenet

    rng = np.random.default_rng(0)
    for size in ((300, 400), (500, 333)):  # landscape and portrait, odd crops
        path = tmp_path / f"{size[0]}x{size[1]}.png"
        Image.fromarray(rng.integers(0, 256, (*size, 3), dtype=np.uint8)).save(path)
        for weights in (
            torchvision.models.ResNet50_Weights.IMAGENET1K_V1,
            torchvision.models.ResNet50_Weights.IMAGENET1K_V2,
        ):
            resize = imagenet.resize_for(weights.url)
            want = weights.transforms()(Image.open(path).convert("RGB")).numpy().transpose(1, 2, 0)
            got = imagenet.preprocess(str(path), resize=resize)
            assert got.shape == want.shape == (224, 224, 3)
            np.testing.assert_allclose(got, want, atol=1e-5)
    assert imagenet.resize_for("resnet50-11ad3fa6.pth") == 232  # V2's file name
    assert imagenet.resize_for("my_weights.pth") == 256


def test_classify_top5_agrees_with_torchvision(tmp_path):
    from PIL import Image

    from cnn_cases.interop import imagenet
    from experiments import classify

    torch.manual_seed(0)
    net = torchvision.models.resnet18().eval()
    _randomise_bn_statistics(net)
    torch.save(net.state_dict(), tmp_path / "r18.pth")
    pretrained.save(
        pretrained.load(str(tmp_path / "r18.pth"), "resnet18"), str(tmp_path / "r.msgpack")
    )
    rng = np.random.default_rng(0)
    paths = []
    for i in range(2):
        paths.append(str(tmp_path / f"{i}.jpg"))
        Image.fromarray(rng.integers(0, 256, (240, 320, 3), dtype=np.uint8)).save(paths[-1])
    tops = classify.classify("resnet18", str(tmp_path / "r.msgpack"), paths)
    weights = torchvision.models.ResNet18_Weights.IMAGENET1K_V1
    with torch.no_grad():
        x = torch.stack([weights.transforms()(Image.open(p)) for p in paths])
        probs = torch.softmax(net(x), -1).numpy()
    for top, p in zip(tops, probs, strict=True):
        assert [i for i, _ in top] == list(np.argsort(-p)[:5])
        np.testing.assert_allclose([q for _, q in top], np.sort(p)[::-1][:5], rtol=1e-4)
    text = imagenet.format_top_k(paths[0], tops[0])
    assert text.count("\n") == 7 and imagenet.synsets()[tops[0][0][0]] in text
    with pytest.raises(ValueError, match=r"is not an image"):
        (tmp_path / "x.jpg").write_text("no")
        classify.classify("resnet18", str(tmp_path / "r.msgpack"), [str(tmp_path / "x.jpg")])
    with pytest.raises(ValueError, match=r"does not fit resnet34"):
        classify.classify("resnet34", str(tmp_path / "r.msgpack"), paths)
