"""Reference architectures: shapes, parameter counts, the one-logit adapter, vmap parity, the registry."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from torch.func import functional_call, stack_module_state

from art_certssbd.models import (
    MODELS,
    BinaryLogitAdapter,
    DigitsCNN,
    MnistCNN,
    PreActResNet18,
    RabCifarResNet,
    ResNet18,
    build_model,
)


def _count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def _vmap_vs_loop(make, x: torch.Tensor, nb_models: int = 3) -> None:
    """Stack ``nb_models`` independently initialised copies; vmap(functional_call) must equal a Python loop."""
    torch.manual_seed(0)
    models = [make().eval() for _ in range(nb_models)]
    params, buffers = stack_module_state(models)
    base = copy.deepcopy(models[0]).to("meta")

    def call(p, b, inputs):
        return functional_call(base, (p, b), (inputs,))

    batched = torch.vmap(call, in_dims=(0, 0, None))(params, buffers, x)
    looped = torch.stack([m(x) for m in models])
    assert batched.shape == looped.shape
    torch.testing.assert_close(batched, looped, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("nb_classes", [1, 2, 10])
def test_mnist_cnn_shape_and_parameter_counts(nb_classes):
    model = MnistCNN(nb_classes=nb_classes)
    assert model(torch.rand(4, 1, 28, 28)).shape == (4, nb_classes)
    counts = {name: _count(getattr(model, name)) for name in ("conv1", "conv2", "fc", "output")}
    assert counts == {"conv1": 416, "conv2": 12832, "fc": 262656, "output": 513 * nb_classes}
    assert _count(model) == 416 + 12832 + 262656 + 513 * nb_classes


def test_mnist_cnn_official_keys_and_other_sizes():
    keys = set(MnistCNN(nb_classes=1).state_dict())
    assert keys == {f"{layer}.{kind}" for layer in ("conv1", "conv2", "fc", "output") for kind in ("weight", "bias")}
    model = MnistCNN(nb_classes=3, in_channels=3, input_size=32)  # (32-4)/2=14, (14-4)/2=5 -> 32*5*5
    assert model.fc.in_features == 800
    assert model(torch.rand(2, 3, 32, 32)).shape == (2, 3)
    with pytest.raises(ValueError, match="input_size"):
        MnistCNN(input_size=10)
    with pytest.raises(ValueError, match="nb_classes"):
        MnistCNN(nb_classes=0)


def test_binary_logit_adapter_softmax_is_sigmoid():
    torch.manual_seed(1)
    inner = MnistCNN(nb_classes=1).eval()
    adapter = BinaryLogitAdapter(inner).eval()
    x = torch.rand(5, 1, 28, 28)
    z = inner(x).squeeze(1)
    logits = adapter(x)
    assert logits.shape == (5, 2)
    torch.testing.assert_close(logits[:, 0], torch.zeros(5))
    expected = torch.stack([1 - torch.sigmoid(z), torch.sigmoid(z)], dim=1)
    torch.testing.assert_close(torch.softmax(logits, dim=1), expected, rtol=1e-6, atol=1e-6)
    assert set(adapter.state_dict()) == {f"model.{k}" for k in inner.state_dict()}


def test_binary_logit_adapter_rejects_bad_input():
    with pytest.raises(ValueError, match="module"):
        BinaryLogitAdapter("not a module")
    with pytest.raises(ValueError, match="one-logit"):
        BinaryLogitAdapter(MnistCNN(nb_classes=2))(torch.rand(1, 1, 28, 28))


def test_vmap_equals_loop_mnist_cnn():
    _vmap_vs_loop(lambda: MnistCNN(nb_classes=2), torch.rand(4, 1, 28, 28))


def test_vmap_equals_loop_digits_cnn():
    _vmap_vs_loop(lambda: DigitsCNN(nb_classes=10), torch.rand(6, 1, 8, 8))


def test_vmap_equals_loop_adapter():
    _vmap_vs_loop(lambda: BinaryLogitAdapter(MnistCNN(nb_classes=1)), torch.rand(4, 1, 28, 28))


def test_vmap_equals_loop_groupnorm_resnet():
    _vmap_vs_loop(lambda: PreActResNet18(nb_classes=2), torch.rand(2, 3, 16, 16), nb_models=2)


def test_digits_cnn_trains_above_90_percent():
    datasets = pytest.importorskip("sklearn.datasets")
    digits = datasets.load_digits()
    x = torch.tensor(digits.images / 16.0, dtype=torch.float32).unsqueeze(1)
    y = torch.tensor(digits.target)
    rng = np.random.default_rng(0)
    order = torch.tensor(rng.permutation(len(y)))
    train, test = order[:1400], order[1400:]
    torch.manual_seed(0)
    model = DigitsCNN(nb_classes=10)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(5):
        for batch in train.split(64):
            optimizer.zero_grad()
            torch.nn.functional.cross_entropy(model(x[batch]), y[batch]).backward()
            optimizer.step()
    with torch.no_grad():
        accuracy = (model(x[test]).argmax(1) == y[test]).float().mean().item()
    assert accuracy > 0.9


@pytest.mark.parametrize("norm", ["group", "batch", "none"])
def test_preact_resnet18_shapes(norm):
    model = PreActResNet18(nb_classes=10, norm=norm).eval()
    assert model(torch.rand(2, 3, 32, 32)).shape == (2, 10)
    has_bn = any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())
    has_gn = any(isinstance(m, torch.nn.GroupNorm) for m in model.modules())
    assert (has_bn, has_gn) == (norm == "batch", norm == "group")


def test_resnet18_shapes_and_torchvision_names():
    model = ResNet18(nb_classes=2).eval()
    assert model(torch.rand(1, 3, 32, 32)).shape == (1, 2)
    keys = set(ResNet18(nb_classes=1000, norm="batch").state_dict())
    for key in ("conv1.weight", "bn1.running_mean", "layer2.0.downsample.0.weight", "layer4.1.bn2.bias", "fc.weight"):
        assert key in keys
    assert "conv1.bias" not in keys
    assert _count(ResNet18(nb_classes=1000, norm="batch")) == 11689512  # torchvision resnet18


def test_rab_cifar_resnet_official_layout():
    model = RabCifarResNet(nb_classes=1, norm="batch").eval()
    assert model(torch.rand(2, 3, 32, 32)).shape == (2, 1)
    keys = set(model.state_dict())
    for key in ("init_conv.weight", "layer1.0.bn1.running_var", "layer2.0.downsample.1.weight", "out_bn.weight"):
        assert key in keys
    assert "layer1.0.downsample.0.weight" not in keys
    assert sum(name.endswith("conv1.weight") for name in keys) == 15


def test_build_model_registry():
    assert isinstance(build_model("mnist-cnn", 2), MnistCNN)
    assert isinstance(build_model("digits-cnn", 10), DigitsCNN)
    assert isinstance(build_model("preact-resnet18", 10, norm="none"), PreActResNet18)
    assert isinstance(build_model("resnet18", 2, in_channels=1), ResNet18)
    assert set(MODELS) >= {"mnist-cnn", "digits-cnn", "preact-resnet18", "resnet18"}
    with pytest.raises(ValueError, match="name must be one of .*'vgg16'"):
        build_model("vgg16", 2)
    with pytest.raises(ValueError, match="norm"):
        build_model("resnet18", 2, norm="layer")
