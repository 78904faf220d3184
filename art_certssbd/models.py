"""Reference architectures: the RAB / official Cert-SSB MNIST CNN, small and CIFAR/ImageNet-size networks.

Every model is a plain :class:`torch.nn.Module` taking channels-first input ``(N, C, H, W)`` and returning logits
``(N, nb_classes)``. BatchNorm does not work under :func:`torch.func.vmap` (the ensemble's batched training path),
so the residual networks default to GroupNorm; ``norm="batch"`` is there for parity with the official code and can
only be trained with the ensemble's loop path. :class:`MnistCNN`, :class:`DigitsCNN` and :class:`BinaryLogitAdapter`
have no normalisation layers at all.

Official architectures (read from NcepuQiaoTing/Cert-SSB ``modelloader.py``, identical to RAB's
``mnist_cnn_model.py`` / ``cifar10_cnn_model.py`` / ``imagenet_dnn_model.py``): MNIST is :class:`MnistCNN` with one
output logit; CIFAR-10 is a small pre-activation ResNet (16/32/64 filters, 3 stages of 5 blocks, BatchNorm, one
logit), available here as :class:`RabCifarResNet`; the 224 px model is an ImageNet-*pretrained* torchvision
ResNet-18 followed by ``Linear(1000, 1)``. :class:`ResNet18` uses torchvision's parameter names (so a torchvision
state dict loads into ``ResNet18(nb_classes=1000, norm="batch")``) but is randomly initialised: nothing is downloaded.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import torch
from torch import nn

logger = logging.getLogger(__name__)

NORMS = ("group", "batch", "none")


def _check(norm: object = "none", **positive: object) -> None:
    """Raise ``ValueError`` naming the parameter for a bad ``norm`` or a non-positive integer argument."""
    if norm not in NORMS:
        raise ValueError(f"norm must be one of {NORMS}, got {norm!r}")
    for name, value in positive.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")


def _norm_layer(norm: str, channels: int) -> nn.Module:
    """GroupNorm (32 groups, fewer when ``channels`` is not a multiple of 32), BatchNorm2d or identity."""
    if norm == "group":
        groups = 32 if channels % 32 == 0 else (8 if channels % 8 == 0 else 1)
        return nn.GroupNorm(groups, channels)
    if norm == "batch":
        return nn.BatchNorm2d(channels)
    return nn.Identity()


def _conv(in_ch: int, out_ch: int, kernel: int, stride: int, norm: str) -> nn.Conv2d:
    """Conv without bias when a norm layer follows or precedes it (norm ``"none"`` keeps the bias)."""
    return nn.Conv2d(in_ch, out_ch, kernel, stride=stride, padding=kernel // 2, bias=norm == "none")


def _resnet18_stages(block: type[nn.Module], norm: str) -> list[nn.Sequential]:
    """The four ResNet-18 stages: two blocks each, 64/128/256/512 channels, strides 1/2/2/2."""
    stages, in_ch = [], 64
    for out_ch, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
        stages.append(nn.Sequential(block(in_ch, out_ch, stride, norm), block(out_ch, out_ch, 1, norm)))
        in_ch = out_ch
    return stages


class MnistCNN(nn.Module):
    """The RAB / official Cert-SSB MNIST CNN: two 5x5 convolutions with max pooling, then two linear layers.

    With ``nb_classes=1`` the state-dict keys (``conv1.*``, ``conv2.*``, ``fc.*``, ``output.*``) are those of the
    official checkpoints; wrap it in :class:`BinaryLogitAdapter` to get two-class logits.

    :param nb_classes: Number of output logits.
    :param in_channels: Input channels.
    :param input_size: Input height and width (28 for MNIST); the flatten size follows from it.
    """

    def __init__(self, nb_classes: int = 2, in_channels: int = 1, input_size: int = 28) -> None:
        super().__init__()
        _check(nb_classes=nb_classes, in_channels=in_channels, input_size=input_size)
        side = ((input_size - 4) // 2 - 4) // 2
        if input_size < 12 or side < 1:
            raise ValueError(f"input_size must be at least 12 for MnistCNN, got {input_size}")
        self.conv1 = nn.Conv2d(in_channels, 16, kernel_size=5)
        self.conv2 = nn.Conv2d(16, 32, kernel_size=5)
        self.max_pool = nn.MaxPool2d(kernel_size=2, stride=2)
        self.fc = nn.Linear(32 * side * side, 512)
        self.output = nn.Linear(512, nb_classes)
        self.relu = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.max_pool(self.relu(self.conv1(x)))
        x = self.max_pool(self.relu(self.conv2(x)))
        return self.output(self.relu(self.fc(x.flatten(1))))


class BinaryLogitAdapter(nn.Module):
    """Turn a one-logit model ``z`` into two-class logits ``[0, z]``.

    ``softmax([0, z]) == [1 - sigmoid(z), sigmoid(z)]``, so class 1 is the official positive label. This is how the
    official single-logit checkpoints plug into a ``nb_classes=2`` estimator. The wrapped model is the attribute
    ``model``, so its state-dict keys get the prefix ``"model."``. Works under ``torch.func.vmap``.

    :param module: Model returning ``(N, 1)`` or ``(N,)`` logits.
    """

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        if not isinstance(module, nn.Module):
            raise ValueError(f"module must be a torch.nn.Module, got {type(module).__name__}")
        self.model = module

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.model(x)
        if z.dim() == 1:
            z = z.unsqueeze(-1)
        if z.shape[-1] != 1:
            raise ValueError(f"BinaryLogitAdapter needs a one-logit model, got output shape {tuple(z.shape)}")
        return torch.cat([torch.zeros_like(z), z], dim=-1)


class DigitsCNN(nn.Module):
    """A tiny CNN for the 8x8 scikit-learn digits (about 17k parameters; > 90 % accuracy in a few epochs).

    :param nb_classes: Number of output logits.
    :param in_channels: Input channels.
    :param input_size: Input height and width (even).
    """

    def __init__(self, nb_classes: int = 10, in_channels: int = 1, input_size: int = 8) -> None:
        super().__init__()
        _check(nb_classes=nb_classes, in_channels=in_channels, input_size=input_size)
        side = input_size // 2
        if side < 1:
            raise ValueError(f"input_size must be at least 2 for DigitsCNN, got {input_size}")
        self.conv = nn.Conv2d(in_channels, 16, kernel_size=3, padding=1)
        self.pool = nn.MaxPool2d(2)
        self.fc = nn.Linear(16 * side * side, 64)
        self.output = nn.Linear(64, nb_classes)
        self.relu = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(self.relu(self.conv(x)))
        return self.output(self.relu(self.fc(x.flatten(1))))


class _PreActBlock(nn.Module):
    """Pre-activation basic block (He et al. 2016): norm-ReLU-conv twice, identity or 1x1 projection shortcut."""

    def __init__(self, in_ch: int, out_ch: int, stride: int, norm: str) -> None:
        super().__init__()
        self.bn1 = _norm_layer(norm, in_ch)
        self.conv1 = _conv(in_ch, out_ch, 3, stride, norm)
        self.bn2 = _norm_layer(norm, out_ch)
        self.conv2 = _conv(out_ch, out_ch, 3, 1, norm)
        self.shortcut = None
        if stride != 1 or in_ch != out_ch:
            self.shortcut = nn.Conv2d(in_ch, out_ch, 1, stride=stride, bias=norm == "none")
        self.relu = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(x))
        shortcut = self.shortcut(out) if self.shortcut is not None else x
        out = self.conv1(out)
        out = self.conv2(self.relu(self.bn2(out)))
        return out + shortcut


class PreActResNet18(nn.Module):
    """CIFAR pre-activation ResNet-18 (He et al., "Identity Mappings in Deep Residual Networks", 2016).

    3x3 stem, four stages of two pre-activation blocks (64/128/256/512 channels, strides 1/2/2/2), a final
    norm-ReLU, global average pooling and a linear head. Any input size of at least 8 px works.

    :param nb_classes: Number of output logits.
    :param norm: ``"group"`` (default, works under vmap), ``"batch"`` (loop path only) or ``"none"``.
    :param in_channels: Input channels.
    """

    def __init__(self, nb_classes: int = 10, norm: str = "group", in_channels: int = 3) -> None:
        super().__init__()
        _check(norm, nb_classes=nb_classes, in_channels=in_channels)
        self.conv1 = _conv(in_channels, 64, 3, 1, norm)
        self.layer1, self.layer2, self.layer3, self.layer4 = _resnet18_stages(_PreActBlock, norm)
        self.bn = _norm_layer(norm, 512)
        self.relu = nn.ReLU()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.linear = nn.Linear(512, nb_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.layer4(self.layer3(self.layer2(self.layer1(self.conv1(x)))))
        return self.linear(self.pool(self.relu(self.bn(x))).flatten(1))


class RabCifarResNet(nn.Module):
    """The RAB / official Cert-SSB CIFAR-10 network: a 16/32/64-filter pre-activation ResNet, 3 stages of 5 blocks.

    Parameter names follow the official ``CifarCnnModel`` (``init_conv``, ``layer1..3``, ``out_bn``, ``output``), so
    with ``norm="batch"`` and ``nb_classes=1`` an official checkpoint loads as is. The first block of ``layer1``
    applies its norm-ReLU before the shortcut; the others add the raw input (as in the official code).

    :param nb_classes: Number of output logits (the official model has 1).
    :param norm: ``"group"`` (default), ``"batch"`` (official, loop path only) or ``"none"``.
    :param in_channels: Input channels.
    """

    def __init__(self, nb_classes: int = 2, norm: str = "group", in_channels: int = 3) -> None:
        super().__init__()
        _check(norm, nb_classes=nb_classes, in_channels=in_channels)
        self.init_conv = nn.Conv2d(in_channels, 16, kernel_size=3, padding=1)
        self.layer1 = self._make_layer(16, 16, 1, True, norm)
        self.layer2 = self._make_layer(16, 32, 2, False, norm)
        self.layer3 = self._make_layer(32, 64, 2, False, norm)
        self.out_bn = _norm_layer(norm, 64)
        self.relu = nn.ReLU()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.output = nn.Linear(64, nb_classes)
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")

    @staticmethod
    def _make_layer(in_ch: int, out_ch: int, stride: int, activate_first: bool, norm: str) -> nn.Sequential:
        blocks = [_RabBlock(in_ch, out_ch, stride, activate_first, norm)]
        blocks += [_RabBlock(out_ch, out_ch, 1, False, norm) for _ in range(4)]
        return nn.Sequential(*blocks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.layer3(self.layer2(self.layer1(self.init_conv(x))))
        return self.output(self.pool(self.relu(self.out_bn(x))).flatten(1))


class _RabBlock(nn.Module):
    """The official CIFAR block (``Block`` in the official code), with a choice of normalisation."""

    def __init__(self, in_ch: int, out_ch: int, stride: int, activate_before_res: bool, norm: str) -> None:
        super().__init__()
        self.activate_before_res = activate_before_res
        self.bn1 = _norm_layer(norm, in_ch)
        self.conv1 = nn.Conv2d(in_ch, out_ch, kernel_size=3, stride=stride, padding=1)
        self.bn2 = _norm_layer(norm, out_ch)
        self.conv2 = nn.Conv2d(out_ch, out_ch, kernel_size=3, padding=1)
        self.downsample = None
        if stride != 1 or in_ch != out_ch:
            self.downsample = nn.Sequential(nn.Conv2d(in_ch, out_ch, 1, stride=stride), _norm_layer(norm, out_ch))
        self.relu = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.activate_before_res:
            x = self.relu(self.bn1(x))
            residual = x
        else:
            residual = x
            x = self.relu(self.bn1(x))
        x = self.conv2(self.relu(self.bn2(self.conv1(x))))
        if self.downsample is not None:
            residual = self.downsample(residual)
        return x + residual


class _BasicBlock(nn.Module):
    """torchvision's ResNet basic block (post-activation), with a choice of normalisation."""

    def __init__(self, in_ch: int, out_ch: int, stride: int, norm: str) -> None:
        super().__init__()
        self.conv1 = _conv(in_ch, out_ch, 3, stride, norm)
        self.bn1 = _norm_layer(norm, out_ch)
        self.conv2 = _conv(out_ch, out_ch, 3, 1, norm)
        self.bn2 = _norm_layer(norm, out_ch)
        self.relu = nn.ReLU()
        self.downsample = None
        if stride != 1 or in_ch != out_ch:
            self.downsample = nn.Sequential(_conv(in_ch, out_ch, 1, stride, norm), _norm_layer(norm, out_ch))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        return self.relu(self.bn2(self.conv2(out)) + identity)


class ResNet18(nn.Module):
    """ImageNet-style ResNet-18 for 224 px inputs: 7x7 stride-2 stem, max pool, four stages, average pool, ``fc``.

    Randomly initialised (nothing is downloaded). Parameter names match torchvision's ``resnet18``.

    :param nb_classes: Number of output logits.
    :param norm: ``"group"`` (default, works under vmap), ``"batch"`` (torchvision parity, loop path only) or
        ``"none"``.
    :param in_channels: Input channels.
    """

    def __init__(self, nb_classes: int = 2, norm: str = "group", in_channels: int = 3) -> None:
        super().__init__()
        _check(norm, nb_classes=nb_classes, in_channels=in_channels)
        self.conv1 = _conv(in_channels, 64, 7, 2, norm)
        self.bn1 = _norm_layer(norm, 64)
        self.relu = nn.ReLU()
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.layer1, self.layer2, self.layer3, self.layer4 = _resnet18_stages(_BasicBlock, norm)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(512, nb_classes)
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(self.avgpool(x).flatten(1))


MODELS: dict[str, Callable[..., nn.Module]] = {
    "mnist-cnn": MnistCNN,
    "digits-cnn": DigitsCNN,
    "preact-resnet18": PreActResNet18,
    "rab-cifar-resnet": RabCifarResNet,
    "resnet18": ResNet18,
}


def build_model(name: str, nb_classes: int, **kwargs) -> nn.Module:
    """Build a reference architecture by name.

    :param name: One of ``"mnist-cnn"``, ``"digits-cnn"``, ``"preact-resnet18"``, ``"rab-cifar-resnet"``,
        ``"resnet18"``.
    :param nb_classes: Number of output logits.
    :param kwargs: Passed to the model's constructor (``in_channels``, ``input_size``, ``norm``, ...).
    :return: A freshly initialised module.
    """
    if name not in MODELS:
        raise ValueError(f"name must be one of {sorted(MODELS)}, got {name!r}")
    return MODELS[name](nb_classes=nb_classes, **kwargs)
