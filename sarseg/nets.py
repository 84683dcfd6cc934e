"""Networks as plain ``nn.Module``s: a residual 3D U-Net (MONAI's UNet, laid out flat so its encoder
levels are reachable) and SAR's heads (restoration, scale discrimination, adversarial modality
discriminator).
"""

from __future__ import annotations

import torch
from monai.networks.blocks import Convolution, ResidualUnit
from torch import nn

from .config import NetConfig

ACT = ("LeakyReLU", {"negative_slope": 0.1, "inplace": True})


def _norm(name: str) -> tuple:
    return ("instance", {"affine": True}) if name == "instance" else (name, {})


class UNet3D(nn.Module):
    """MONAI's residual U-Net with its blocks in lists: four strided residual units down, a bottleneck
    unit, and transposed-convolution + residual-unit levels up, the top one (``head``) giving the outputs.

    Nothing runs at full resolution but the first strided convolution and the head. On 2 CPU cores a
    training step at 64^3, batch 2, took 0.15 s with widths 8..128 against 0.58 s for the U-Net of
    full-resolution double convolutions it replaced (a tenth of the parameters), which on BraTS also
    learned slower. ``encode`` returns every level (1/2 .. 1/16 resolution) for SAR's heads.
    """

    def __init__(self, in_channels: int, out_channels: int, net: NetConfig) -> None:
        super().__init__()
        c, units = net.features, net.res_units
        blocks = {"act": ACT, "norm": _norm(net.norm), "dropout": net.dropout}
        self.encoder = nn.ModuleList(
            ResidualUnit(3, c[i - 1] if i else in_channels, c[i], strides=2 if i < 4 else 1, subunits=units, **blocks)
            for i in range(5)
        )

        def up(i: int, out: int, top: bool) -> nn.Sequential:
            below = c[4] if i == 3 else c[i]  # the bottleneck keeps its resolution; the others were upsampled
            return nn.Sequential(
                Convolution(3, c[i] + below, out, strides=2, is_transposed=True, **blocks),
                ResidualUnit(3, out, out, strides=1, subunits=1, last_conv_only=top, **blocks),
            )

        self.decoder = nn.ModuleList(up(i, c[i - 1], False) for i in (3, 2, 1))
        self.head = up(0, out_channels, True)

    def encode(self, x: torch.Tensor) -> list[torch.Tensor]:
        levels = []
        for block in self.encoder:
            x = block(x)
            levels.append(x)
        return levels

    def decode(self, levels: list[torch.Tensor]) -> torch.Tensor:
        x = levels[-1]
        for block, skip in zip([*self.decoder, self.head], reversed(levels[:-1])):
            x = block(torch.cat([skip, x], dim=1))
        return x

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
            nn.Sequential(nn.GroupNorm(1, w, affine=False), nn.Conv3d(w, mixed, 3, stride=2, padding=1),
                          nn.LeakyReLU(0.1, inplace=True))
            for w in widths
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
        f = list(net.features)
        self.scale_head = PooledHead(f, net.head_hidden, scales)
        self.discriminator = PooledHead(f[-1:], net.head_hidden, sources) if sources > 1 else None

    def forward(self, x: torch.Tensor, adv_weight: float = 0.0, scale_input: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """Restoration and discrimination read ``x``; the scale head reads ``scale_input`` through the same
        encoder when given (another view of the same cubes, e.g. uncorrupted), else ``x``."""
        levels = self.backbone.encode(x)
        scale_levels = levels if scale_input is None else self.backbone.encode(scale_input)
        out = {"restored": self.backbone.decode(levels), "scale_logits": self.scale_head(scale_levels)}
        if self.discriminator is not None:
            out["source_logits"] = self.discriminator([reverse_gradient(levels[-1], adv_weight)])
        return out
