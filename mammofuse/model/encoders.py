"""Encoders: a one-channel image backbone (a small CNN or a torchvision ResNet), one token per clinical field."""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path

import torch
from torch import nn

from mammofuse.errors import MammofuseError, check_openable, reading
from mammofuse.interrupts import load_torch

_WEIGHTS = {"resnet18": "ResNet18_Weights", "resnet34": "ResNet34_Weights", "resnet50": "ResNet50_Weights"}


def one_channel_stem(conv: nn.Conv2d) -> nn.Conv2d:
    """The same first convolution for grayscale input: RGB filters summed (as timm's adapt_input_conv)."""
    stem = nn.Conv2d(1, conv.out_channels, conv.kernel_size, conv.stride, conv.padding, bias=conv.bias is not None)
    with torch.no_grad():
        stem.weight.copy_(conv.weight.sum(dim=1, keepdim=True))
    return stem


def resnet_backbone(name: str, pretrained: str | None = None) -> tuple[nn.Module, int]:
    """A ResNet without pooling and classifier, one input channel; returns (module, channels).

    ``pretrained="imagenet"`` loads torchvision's ImageNet weights from a local file only (see
    :func:`imagenet_state_dict`); nothing is downloaded and nothing is unpickled.
    """
    load_torch(vision=True)  # held back from a Ctrl-C while it loads; the import below finds it loaded
    import torchvision

    if pretrained not in (None, "imagenet"):
        raise MammofuseError(f"unknown pretrained weights {pretrained!r}; use 'imagenet' or none")
    net = getattr(torchvision.models, name)(weights=None)
    if pretrained == "imagenet":
        path, state = imagenet_state_dict(name)
        try:
            net.load_state_dict(state)
        except RuntimeError as exc:
            raise MammofuseError(f"{path}: not {name} ImageNet weights ({str(exc).splitlines()[0]})") from None
    net.conv1 = one_channel_stem(net.conv1)
    channels = net.fc.in_features
    names = ("conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4")
    body = nn.Sequential(OrderedDict((n, getattr(net, n)) for n in names))
    return body, channels


SMALL_CNN_WIDTHS = {"cnn4": (16, 32, 64, 128)}


def small_cnn(name: str) -> tuple[nn.Module, int]:
    """A plain CNN for training from random weights on small crops: blocks ``layer1``..``layerN``.

    Each block is two 3x3 convolutions with BatchNorm and ReLU, then 2x2 max pooling, so a 64 px
    crop gives a 4x4 map (16 image tokens). Block names follow ResNet's, so Grad-CAM's default
    layer (``backbone.layer4``) is the last block.
    """
    blocks: OrderedDict[str, nn.Module] = OrderedDict()
    channels = 1
    for k, width in enumerate(SMALL_CNN_WIDTHS[name], start=1):
        blocks[f"layer{k}"] = nn.Sequential(
            nn.Conv2d(channels, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU(inplace=True),
            nn.Conv2d(width, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
        )
        channels = width
    return nn.Sequential(blocks), channels


def image_backbone(name: str, pretrained: str | None = None) -> tuple[nn.Module, int]:
    """The backbone ``name`` (``cnn4`` or a ResNet) and its output channels; ``imagenet`` only for ResNets."""
    if name in SMALL_CNN_WIDTHS:
        if pretrained == "imagenet":
            raise MammofuseError(f"{name} has no ImageNet weights; use a resnet or a backbone from `mammofuse pretrain`")
        return small_cnn(name)
    return resnet_backbone(name, pretrained if pretrained == "imagenet" else None)


def imagenet_state_dict(name: str) -> tuple[Path, dict[str, torch.Tensor]]:
    """torchvision's ImageNet weights for ``name`` from ``<torch hub dir>/checkpoints``.

    The file is torchvision's own (``resnet50-11ad3fa6.pth``, read with ``weights_only=True``) or
    the same tensors as ``<that stem>.safetensors`` (preferred). torchvision's loader would unpickle
    the cached file with ``weights_only=False``, so a planted file could run code: it is not used.
    """
    load_torch(vision=True)  # held back from a Ctrl-C while it loads; the import below finds it loaded
    import torchvision

    url = getattr(torchvision.models, _WEIGHTS[name]).DEFAULT.url
    folder = Path(torch.hub.get_dir()) / "checkpoints"
    stem = Path(url.rsplit("/", 1)[-1]).stem
    safetensors_file, torch_file = folder / f"{stem}.safetensors", folder / f"{stem}.pth"
    with reading(folder):  # a folder that cannot be searched
        path = next((p for p in (safetensors_file, torch_file) if p.is_file()), None)
    if path is None:
        raise MammofuseError(
            f"ImageNet weights for {name} are not on this machine: put {torch_file.name} (from {url}) or "
            f"{safetensors_file.name} in {folder}, or train without --pretrained"
        )
    check_openable(path)
    try:
        if path == safetensors_file:
            from safetensors.torch import load_file

            return path, load_file(str(path))
        return path, torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # weights_only refuses anything but tensors; safetensors its own format
        raise MammofuseError(f"{path}: refused as ImageNet weights ({type(exc).__name__}: {str(exc).splitlines()[0][:120]})") from None


class ClinicalTokens(nn.Module):
    """One d-dimensional token per clinical field: each field's block has its own projection."""

    def __init__(self, field_sizes: list[int], dim: int) -> None:
        super().__init__()
        self.field_sizes = list(field_sizes)
        self.proj = nn.ModuleList(nn.Linear(n, dim) for n in field_sizes)
        self.field_embedding = nn.Parameter(torch.zeros(len(field_sizes), dim))
        nn.init.normal_(self.field_embedding, std=0.02)

    def forward(self, clinical: torch.Tensor) -> torch.Tensor:
        blocks = torch.split(clinical, self.field_sizes, dim=1)
        tokens = torch.stack([proj(block) for proj, block in zip(self.proj, blocks)], dim=1)
        return tokens + self.field_embedding
