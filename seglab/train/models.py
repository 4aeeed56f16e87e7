"""DeepLabV3 and DeepLabV3+ on torchvision ResNets (the only networks seglab trains).

:func:`build_model` returns a module whose ``forward(x)`` gives ``{"out": logits}`` at the
input resolution, plus ``"aux"`` (an FCN head on layer3) when ``aux_loss`` is set, like
torchvision's segmentation models.

- **DeepLabV3** is torchvision's own: ``IntermediateLayerGetter`` + ``DeepLabHead``
  (+ ``FCNHead`` aux), so ``deeplabv3 / resnet50 / 21 classes / aux`` is exactly
  torchvision's ``deeplabv3_resnet50`` (42,004,074 parameters, same state-dict keys).
- **DeepLabV3+** puts torchvision's ``ASPP`` on layer4 and a decoder on top: a 48-channel
  1x1 projection of layer1, concatenated with the upsampled ASPP output, two 3x3 convs of
  256 channels, a 1x1 classifier, bilinear upsampling to the input size.

Output stride 8 replaces the stride of layer3 and layer4 with dilation
(``replace_stride_with_dilation=[False, True, True]``), 16 only that of layer4
(``[False, False, True]``). ASPP rates are (12, 24, 36) at stride 8 (torchvision's) and
(6, 12, 18) at stride 16 (the DeepLabV3 paper's). torchvision refuses dilation in
``BasicBlock`` (ResNet-18/34), so for those backbones the same change is made here in place:
a dilated layer's first block loses its stride, its first 3x3 conv keeps the previous
dilation and every later 3x3 conv gets the new one (the receptive field of the strided
network, as in DeepLab's dilated ResNets). Parameters are unchanged, so ImageNet weights
still load.

Pretrained backbone weights come only from a local file; nothing is ever downloaded.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import nn
from torch.nn import functional as F
from torchvision.models import resnet
from torchvision.models._utils import IntermediateLayerGetter
from torchvision.models.segmentation.deeplabv3 import ASPP, DeepLabHead, DeepLabV3
from torchvision.models.segmentation.fcn import FCNHead

if TYPE_CHECKING:
    from seglab.recipes import ModelConfig

_BUILDERS = {
    "resnet18": (resnet.resnet18, resnet.ResNet18_Weights),
    "resnet34": (resnet.resnet34, resnet.ResNet34_Weights),
    "resnet50": (resnet.resnet50, resnet.ResNet50_Weights),
    "resnet101": (resnet.resnet101, resnet.ResNet101_Weights),
}
_DILATION = {8: [False, True, True], 16: [False, False, True]}
_ASPP_RATES = {8: (12, 24, 36), 16: (6, 12, 18)}
DECODER_LOW_LEVEL_CHANNELS = 48
DECODER_CHANNELS = 256


class PretrainedWeightsError(RuntimeError):
    """The pretrained backbone file is missing or does not fit the backbone."""


class DeepLabV3Plus(nn.Module):
    """DeepLabV3+: ASPP on layer4 and a decoder that refines it with layer1 features."""

    def __init__(
        self,
        backbone: nn.Module,
        in_channels: int,
        low_level_channels: int,
        num_classes: int,
        atrous_rates: Sequence[int],
        *,
        aux_classifier: nn.Module | None = None,
    ) -> None:
        super().__init__()
        self.backbone = backbone
        self.aspp = ASPP(in_channels, atrous_rates, DECODER_CHANNELS)
        self.project = nn.Sequential(
            nn.Conv2d(low_level_channels, DECODER_LOW_LEVEL_CHANNELS, 1, bias=False),
            nn.BatchNorm2d(DECODER_LOW_LEVEL_CHANNELS),
            nn.ReLU(),
        )
        fused = DECODER_CHANNELS + DECODER_LOW_LEVEL_CHANNELS
        self.decoder = nn.Sequential(
            nn.Conv2d(fused, DECODER_CHANNELS, 3, padding=1, bias=False),
            nn.BatchNorm2d(DECODER_CHANNELS),
            nn.ReLU(),
            nn.Conv2d(DECODER_CHANNELS, DECODER_CHANNELS, 3, padding=1, bias=False),
            nn.BatchNorm2d(DECODER_CHANNELS),
            nn.ReLU(),
        )
        self.classifier = nn.Conv2d(DECODER_CHANNELS, num_classes, 1)
        self.aux_classifier = aux_classifier

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Logits at the input resolution: ``out`` (and ``aux`` with the aux head)."""
        size = x.shape[-2:]
        features = self.backbone(x)
        low = self.project(features["low"])
        high = self.aspp(features["out"])
        high = F.interpolate(high, size=low.shape[-2:], mode="bilinear", align_corners=False)
        logits = self.classifier(self.decoder(torch.cat([high, low], dim=1)))
        result: dict[str, torch.Tensor] = OrderedDict()
        result["out"] = F.interpolate(logits, size=size, mode="bilinear", align_corners=False)
        if self.aux_classifier is not None:
            aux = self.aux_classifier(features["aux"])
            result["aux"] = F.interpolate(aux, size=size, mode="bilinear", align_corners=False)
        return result


def torch_home() -> Path:
    """``$TORCH_HOME``, defaulting as torch does to ``$XDG_CACHE_HOME/torch``."""
    if os.environ.get("TORCH_HOME"):
        return Path(os.environ["TORCH_HOME"])
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache) / "torch"


def pretrained_path(value: str) -> Path:
    """The weights file a recipe's ``pretrained_backbone`` names (absolute or TORCH_HOME)."""
    path = Path(value).expanduser()
    return path if path.is_absolute() else torch_home() / path


def weights_files(backbone: str) -> dict[str, str]:
    """torchvision's ImageNet weights for `backbone`: ``{"ResNet50_Weights.IMAGENET1K_V1":
    "resnet50-0676ba61.pth", ...}`` (the file names torch hub caches them under)."""
    enum = _BUILDERS[backbone][1]
    return {f"{enum.__name__}.{w.name}": str(w.url).rsplit("/", 1)[-1] for w in enum}


def _load_backbone_weights(net: resnet.ResNet, backbone: str, value: str) -> None:
    path = pretrained_path(value)
    if not path.is_file():
        known = " or ".join(f"{name} ({file})" for name, file in weights_files(backbone).items())
        raise PretrainedWeightsError(
            f"pretrained backbone weights not found: {path} (model.pretrained_backbone "
            f"{value!r}; relative paths are under TORCH_HOME={torch_home()}). Place "
            f"torchvision's {known} file there (torch hub caches it as "
            f"TORCH_HOME/hub/checkpoints/<file>); seglab never downloads weights."
        )
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (OSError, RuntimeError, ValueError) as exc:
        raise PretrainedWeightsError(f"cannot read pretrained weights {path}: {exc}") from exc
    if isinstance(state, dict):
        for key in ("state_dict", "model"):
            if isinstance(state.get(key), dict):
                state = state[key]
    if not isinstance(state, dict):
        raise PretrainedWeightsError(f"{path} does not hold a state dict")
    result = net.load_state_dict(state, strict=False)
    missing = [k for k in result.missing_keys if not k.startswith("fc.")]
    if missing or result.unexpected_keys:
        raise PretrainedWeightsError(
            f"{path} does not fit a torchvision {backbone}: "
            f"missing {missing[:5]}, unexpected {result.unexpected_keys[:5]}"
        )


def dilate_basic_layers(net: resnet.ResNet, replace: Sequence[bool]) -> None:
    """Trade the stride of layer2..4 for dilation where `replace` says, in BasicBlock nets."""
    dilation = 1
    for layer, dilate in zip((net.layer2, net.layer3, net.layer4), replace, strict=True):
        previous = dilation
        if dilate:
            dilation *= 2
        for index, block in enumerate(layer):
            if not isinstance(block, resnet.BasicBlock):
                raise TypeError(f"expected BasicBlock layers, got {type(block).__name__}")
            if dilate and index == 0:
                block.conv1.stride = (1, 1)
                if block.downsample is not None:
                    block.downsample[0].stride = (1, 1)
            first = previous if index == 0 else dilation
            for conv, rate in ((block.conv1, first), (block.conv2, dilation)):
                conv.dilation = (rate, rate)
                conv.padding = (rate, rate)


def build_backbone(cfg: ModelConfig) -> resnet.ResNet:
    """The torchvision ResNet of `cfg` at its output stride, with local weights if any."""
    builder = _BUILDERS[cfg.backbone][0]
    replace = _DILATION[cfg.output_stride]
    if cfg.backbone in ("resnet18", "resnet34"):
        net = builder(weights=None)
        dilate_basic_layers(net, replace)
    else:
        net = builder(weights=None, replace_stride_with_dilation=replace)
    if cfg.pretrained_backbone:
        _load_backbone_weights(net, cfg.backbone, cfg.pretrained_backbone)
    return net


def _channels(net: resnet.ResNet) -> tuple[int, int, int]:
    """Output channels of layer1, layer3 and layer4."""
    expansion = 4 if isinstance(net.layer1[0], resnet.Bottleneck) else 1
    return 64 * expansion, 256 * expansion, 512 * expansion


def build_model(cfg: ModelConfig, num_classes: int) -> nn.Module:
    """The segmentation network of `cfg`, predicting `num_classes` classes."""
    if num_classes < 1:
        raise ValueError(f"num_classes must be positive, got {num_classes}")
    net = build_backbone(cfg)
    low_ch, aux_ch, out_ch = _channels(net)
    rates = _ASPP_RATES[cfg.output_stride]
    aux = FCNHead(aux_ch, num_classes) if cfg.aux_loss else None
    layers = {"layer4": "out"}
    if cfg.aux_loss:
        layers["layer3"] = "aux"
    if cfg.arch == "deeplabv3":
        backbone = IntermediateLayerGetter(net, return_layers=layers)
        model: nn.Module = DeepLabV3(backbone, DeepLabHead(out_ch, num_classes, rates), aux)
        return model
    layers["layer1"] = "low"
    backbone = IntermediateLayerGetter(net, return_layers=layers)
    return DeepLabV3Plus(backbone, out_ch, low_ch, num_classes, rates, aux_classifier=aux)


class LogitsOnly(nn.Module):
    """Wraps a segmentation model to return only the ``out`` logits (for export)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The ``out`` logits of the wrapped model."""
        out: torch.Tensor = self.model(x)["out"]
        return out
