"""Networks (``sarseg.nets``): the residual 3D U-Net per preset (output shapes, parameter counts, encoder
levels), SAR's heads, and the gradient reversal behind the modality discriminator."""

from __future__ import annotations

import pytest
import torch

from sarseg.config import NetConfig, pretrain_config
from sarseg.nets import PooledHead, SARNet, UNet3D, reverse_gradient

PRESETS = ("tiny", "small", "genesis")
# parameters per preset: U-Net 1 -> 1 channel, U-Net 4 -> 3 channels, SARNet with 3 scales and 3 sources,
# and with one source (no discriminator). A change here breaks loading every saved model folder.
PARAMETERS = {
    "tiny": (613_487, 615_871, 696_421, 668_442),
    "small": (4_807_951, 4_812_495, 5_482_965, 5_257_394),
    "genesis": (19_219_967, 19_228_831, 24_813_829, 22_977_666),
}


@pytest.fixture(autouse=True)
def seeded():
    torch.manual_seed(0)


def count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def net_of(preset: str) -> NetConfig:
    return pretrain_config(preset).net


@pytest.mark.parametrize("preset", PRESETS)
def test_parameter_counts(preset: str) -> None:
    net = net_of(preset)
    counts = (count(UNet3D(1, 1, net)), count(UNet3D(4, 3, net)), count(SARNet(1, net, 3, 3)), count(SARNet(1, net, 3, 1)))
    assert counts == PARAMETERS[preset]


@pytest.mark.parametrize("preset", PRESETS)
def test_unet_output_and_encoder_levels(preset: str) -> None:
    net = net_of(preset)
    unet = UNet3D(2, 3, net).eval()
    x = torch.rand(1, 2, 16, 32, 48)  # (B, C, Z, Y, X): every side a multiple of 16
    with torch.no_grad():
        levels = unet.encode(x)
        out = unet(x)
    assert out.shape == (1, 3, 16, 32, 48)
    strides = (2, 4, 8, 16, 16)  # four strided levels, then the bottleneck at the last one's resolution
    assert [tuple(level.shape) for level in levels] == [(1, c, 16 // s, 32 // s, 48 // s)
                                                       for c, s in zip(net.features, strides)]
    torch.testing.assert_close(unet.decode(levels), out)


def test_unet_is_fully_convolutional() -> None:
    unet = UNet3D(1, 2, net_of("tiny")).eval()
    with torch.no_grad():
        assert unet(torch.rand(2, 1, 32, 16, 64)).shape == (2, 2, 32, 16, 64)


@pytest.mark.parametrize("preset", PRESETS)
def test_sar_heads(preset: str) -> None:
    net = net_of(preset)
    x = torch.rand(2, 1, 16, 32, 32)
    with torch.no_grad():
        out = SARNet(1, net, scales=3, sources=4).eval()(x, adv_weight=0.5)
        alone = SARNet(1, net, scales=2, sources=1).eval()(x)
    assert out["restored"].shape == x.shape
    assert out["scale_logits"].shape == (2, 3) and out["source_logits"].shape == (2, 4)
    assert set(alone) == {"restored", "scale_logits"} and alone["scale_logits"].shape == (2, 2)  # one source: no discriminator


def test_pooled_head_reads_every_level_it_is_given() -> None:
    head = PooledHead([8, 16], hidden=12, classes=5)
    levels = [torch.rand(3, 8, 8, 16, 16), torch.rand(3, 16, 4, 8, 8)]
    logits = head(levels)
    assert logits.shape == (3, 5)
    for i in range(2):
        other = [torch.rand_like(level) if j == i else level for j, level in enumerate(levels)]
        assert not torch.allclose(head(other), logits)


def test_gradient_reversal() -> None:
    x = torch.rand(4, 3, requires_grad=True)
    y = reverse_gradient(x, 0.3)
    assert torch.equal(y, x)  # identity forward
    (y * torch.arange(3.0)).sum().backward()
    torch.testing.assert_close(x.grad, -0.3 * torch.arange(3.0).expand(4, 3))


def test_the_discriminator_pushes_the_encoder_the_other_way() -> None:
    """The source loss trains the discriminator as usual but reaches the encoder times -weight."""
    net = SARNet(1, net_of("tiny"), scales=2, sources=2)
    x, sources = torch.rand(2, 1, 16, 32, 32), torch.tensor([0, 1])
    first = next(net.backbone.encoder[0].parameters())
    last = net.discriminator.mlp[-1].weight

    def grads(logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        net.zero_grad()
        torch.nn.functional.cross_entropy(logits, sources).backward()
        return first.grad.clone(), last.grad.clone()

    plain_encoder, plain_head = grads(net.discriminator([net.backbone.encode(x)[-1]]))  # no reversal
    encoder, head = grads(net(x, adv_weight=0.4)["source_logits"])
    assert plain_encoder.abs().sum() > 0
    torch.testing.assert_close(encoder, -0.4 * plain_encoder)
    torch.testing.assert_close(head, plain_head)
