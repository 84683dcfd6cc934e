"""Networks as plain ``nn.Module``s: a 3D U-Net built from MONAI's BasicUNet blocks that exposes its
encoder levels, and SAR's heads (restoration, scale discrimination, adversarial modality discriminator).
"""

from __future__ import annotations

import torch
from monai.networks.layers import Conv
from monai.networks.nets.basic_unet import Down, TwoConv, UpCat
from torch import nn

from .config import NetConfig

ACT = ("LeakyReLU", {"negative_slope": 0.1, "inplace": True})


def _norm(name: str) -> tuple:
    return ("instance", {"affine": True}) if name == "instance" else (name, {})


class UNet3D(nn.Module):
    """A 3D U-Net (five encoder levels, four poolings) whose ``encode`` returns every level's features."""

    def __init__(self, in_channels: int, out_channels: int, net: NetConfig) -> None:
        super().__init__()
        f, norm, drop = net.features, _norm(net.norm), net.dropout
        self.features = tuple(f)
        self.encoder = nn.ModuleList(
            [TwoConv(3, in_channels, f[0], ACT, norm, True, drop)]
            + [Down(3, f[i - 1], f[i], ACT, norm, True, drop) for i in range(1, 5)]
        )
        self.decoder = nn.ModuleList(
            [UpCat(3, f[i], f[i - 1], f[i - 1], ACT, norm, True, drop) for i in (4, 3, 2)]
            + [UpCat(3, f[1], f[0], f[5], ACT, norm, True, drop, halves=False)]
        )
        self.head = Conv["conv", 3](f[5], out_channels, kernel_size=1)

    def encode(self, x: torch.Tensor) -> list[torch.Tensor]:
        levels = []
        for block in self.encoder:
            x = block(x)
            levels.append(x)
        return levels

    def decode(self, levels: list[torch.Tensor]) -> torch.Tensor:
        x = levels[-1]
        for block, skip in zip(self.decoder, reversed(levels[:-1])):
            x = block(x, skip)
        return self.head(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(x))


class PooledHead(nn.Module):
    """Classifier on the chosen encoder levels: per level a strided 3x3x3 conv and LeakyReLU, then
    global mean and max pooling, then an MLP.

    The conv comes first because the backbone's instance norm fixes each channel's mean and spread per
    sample: statistics pooled straight from its features are nearly constant and carry no scale or
    modality information.
    """

    def __init__(self, widths: list[int], hidden: int, classes: int) -> None:
        super().__init__()
        mixed = max(4, hidden // 2)
        self.convs = nn.ModuleList(
            nn.Sequential(nn.Conv3d(w, mixed, 3, stride=2, padding=1), nn.LeakyReLU(0.1, inplace=True)) for w in widths
        )
        self.mlp = nn.Sequential(
            nn.Linear(2 * mixed * len(widths), hidden), nn.LeakyReLU(0.1, inplace=True), nn.Linear(hidden, classes)
        )

    def forward(self, levels: list[torch.Tensor]) -> torch.Tensor:
        pooled = []
        for conv, level in zip(self.convs, levels):
            flat = conv(level).flatten(2).float()
            pooled += [flat.mean(dim=2), flat.amax(dim=2)]
        return self.mlp(torch.cat(pooled, dim=1))


class _ReverseGrad(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: float) -> torch.Tensor:  # type: ignore[override]
        ctx.weight = weight
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:  # type: ignore[override]
        return -ctx.weight * grad, None


def reverse_gradient(x: torch.Tensor, weight: float) -> torch.Tensor:
    """Identity forward; gradient times -``weight`` backward (Ganin & Lempitsky's gradient reversal)."""
    return _ReverseGrad.apply(x, weight)


class SARNet(nn.Module):
    """U-Net restoring corrupted cubes, a scale head on all encoder levels and, with two or more
    sources, a modality discriminator on the deepest level behind a gradient reversal layer.

    The discriminator learns to tell the source; through the reversal the encoder learns to fool it.
    """

    def __init__(self, in_channels: int, net: NetConfig, scales: int, sources: int) -> None:
        super().__init__()
        self.backbone = UNet3D(in_channels, in_channels, net)
        f = list(net.features[:5])
        self.scale_head = PooledHead(f, net.head_hidden, scales)
        self.discriminator = PooledHead(f[-1:], net.head_hidden, sources) if sources > 1 else None

    def forward(self, x: torch.Tensor, adv_weight: float = 0.0) -> dict[str, torch.Tensor]:
        levels = self.backbone.encode(x)
        out = {"restored": self.backbone.decode(levels), "scale_logits": self.scale_head(levels)}
        if self.discriminator is not None:
            out["source_logits"] = self.discriminator([reverse_gradient(levels[-1], adv_weight)])
        return out
