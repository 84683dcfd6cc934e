"""What SAR's scale head reads (``scale_view``) and the discriminator's accuracy as a progress metric.

1. The setting: its default, the values it takes, bad values named.
2. The network: the scale head reads the view it is given through the shared encoder (gradients reach
   the encoder from the clean view), while restoration and the discriminator keep reading the input.
3. The views: the default draws nothing from the generator (default runs stay bit for bit), the clean
   view is the restoration target, the light one a deterministic intensity map of it.
4. Pretraining with a view is reproducible and reports ``scale_acc`` and ``disc_acc`` in every step
   event, and a job's history keeps both beside the losses.
"""

from __future__ import annotations

import io
import json
from contextlib import redirect_stdout
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from sarseg import phantom
from sarseg.config import PretrainConfig, from_dict, pretrain_config, to_dict
from sarseg.core.errors import BadInput
from sarseg.core.progress import ProgressReader
from sarseg.data import Source
from sarseg.nets import SARNet
from sarseg.pretrain import Pretraining, pretrain, scale_input
from sarseg.proxy import ProxyBatch
from sarseg.train import Distributed

CPU = torch.device("cpu")


@pytest.fixture(autouse=True)
def seeded():
    torch.manual_seed(0)


# ---------------------------------------------------------------- 1. the setting


def test_scale_view_defaults_to_the_corrupted_input_and_round_trips() -> None:
    assert PretrainConfig().scale_view == "corrupted" and pretrain_config("tiny").scale_view == "corrupted"
    for view in ("corrupted", "clean", "light"):
        config = pretrain_config("tiny", {"scale_view": view})
        assert from_dict(to_dict(config)).scale_view == view


@pytest.mark.parametrize("value, problem", [("blurred", "scale_view is one of corrupted, clean, light"),
                                            (1, "scale_view must be str")])
def test_a_bad_scale_view_is_named(value, problem: str) -> None:
    with pytest.raises(BadInput, match=problem):
        pretrain_config("tiny", {"scale_view": value}, where="cfg.json")


# ---------------------------------------------------------------- 2. the network


def tiny_net(sources: int = 2) -> SARNet:
    return SARNet(1, pretrain_config("tiny").net, scales=3, sources=sources)


def test_the_scale_head_reads_its_view_and_the_rest_the_input() -> None:
    net = tiny_net().eval()
    x, view = torch.rand(2, 1, 16, 32, 32), torch.rand(2, 1, 16, 32, 32)
    with torch.no_grad():
        plain, same, other = net(x), net(x, scale_input=x), net(x, scale_input=view)
        alone = net.scale_head(net.backbone.encode(view))
    assert other["scale_logits"].shape == (2, 3) and other["restored"].shape == x.shape
    torch.testing.assert_close(same["scale_logits"], plain["scale_logits"])  # the input as its own view: as before
    torch.testing.assert_close(other["scale_logits"], alone)  # the view through the same encoder
    assert not torch.allclose(other["scale_logits"], plain["scale_logits"])
    torch.testing.assert_close(other["restored"], plain["restored"])
    torch.testing.assert_close(other["source_logits"], plain["source_logits"])


def test_the_clean_view_trains_the_shared_encoder() -> None:
    """The scale loss on the clean view reaches the encoder, and only through the clean view's pass."""
    net = tiny_net()
    x, clean = torch.rand(2, 1, 16, 32, 32), torch.rand(2, 1, 16, 32, 32, requires_grad=True)
    first = net.backbone.encoder[0].conv.unit0.conv.weight
    F.cross_entropy(net(x, scale_input=clean)["scale_logits"], torch.tensor([0, 2])).backward()
    assert first.grad is not None and first.grad.abs().sum() > 0
    assert clean.grad is not None and clean.grad.abs().sum() > 0
    grad_from_view = first.grad.clone()
    net.zero_grad()
    F.cross_entropy(net(x)["scale_logits"], torch.tensor([0, 2])).backward()  # the head on the input instead
    assert not torch.allclose(first.grad, grad_from_view)


# ---------------------------------------------------------------- 3. the views


def batch_of(b: int = 3) -> ProxyBatch:
    targets = torch.rand(b, 1, 8, 16, 16) * 4 - 1
    return ProxyBatch(targets.flip(2), targets, torch.zeros(b, dtype=torch.long), torch.zeros(b, dtype=torch.long))


def test_the_views() -> None:
    batch = batch_of()
    generator = torch.Generator().manual_seed(7)
    state = generator.get_state()
    assert scale_input("corrupted", batch, generator) is None
    assert scale_input("clean", batch, generator) is batch.targets
    assert torch.equal(generator.get_state(), state)  # neither draws: a default run's random stream is untouched
    light = scale_input("light", batch, generator)
    again = scale_input("light", batch, torch.Generator().manual_seed(7))
    torch.testing.assert_close(light, again)  # the same seed, the same view
    assert light.shape == batch.targets.shape and not torch.allclose(light, batch.targets)
    low = batch.targets.flatten(1).amin(1)[:, None] - 1e-6
    high = batch.targets.flatten(1).amax(1)[:, None] + 1e-6
    assert bool(((light.flatten(1) >= low) & (light.flatten(1) <= high)).all())  # each cube's own range


# ---------------------------------------------------------------- 4. pretraining with a view


@pytest.fixture(scope="module")
def cases(tmp_path_factory) -> list[dict[str, str]]:
    return phantom.write_cases(tmp_path_factory.mktemp("phantoms"), 2)


def run(out: Path, cases: list[dict], view: str) -> list[dict]:
    config = pretrain_config("tiny", {"steps": 4, "log_every": 1, "seed": 3, "scale_view": view, "eval_cubes": 8})
    sources = [Source("mr", (cases[0]["mr"], cases[1]["mr"])), Source("ct", (cases[0]["ct"],))]
    stdout = io.StringIO()
    with redirect_stdout(stdout):
        pretrain(config, sources, out, CPU, progress_mode="json")
    (out / "progress.jsonl").write_text(stdout.getvalue())
    return [json.loads(line) for line in stdout.getvalue().splitlines()]


@pytest.mark.parametrize("view", ["clean", "light"])
def test_pretraining_with_a_view_is_reproducible_and_reports_both_accuracies(tmp_path: Path, cases, view: str) -> None:
    first, second = run(tmp_path / "a", cases, view), run(tmp_path / "b", cases, view)
    steps = [e for e in first if e["event"] == "step"]
    keys = ("loss", "loss_scale", "scale_acc", "disc_acc")
    assert [[e[k] for k in keys] for e in steps] == [[e[k] for k in keys] for e in second if e["event"] == "step"]
    assert len(steps) == 4
    # with batch 4 each step's accuracy is a count of right guesses out of 4
    assert all(e["disc_acc"] * 4 == round(e["disc_acc"] * 4) and e["scale_acc"] * 4 == round(e["scale_acc"] * 4)
               for e in steps)
    evaluation = next(e for e in first if e["event"] == "evaluation")
    assert evaluation["cubes"] == 8 and {"scale_acc", "disc_acc"} <= set(evaluation)
    reader = ProgressReader(tmp_path / "a" / "progress.jsonl", history=True)
    reader.update()
    assert reader.history["disc_acc"] == [(float(e["step"]), e["disc_acc"]) for e in steps]
    assert reader.history["scale_acc"] == [(float(e["step"]), e["scale_acc"]) for e in steps]
    assert reader.summary["disc_acc"] == steps[-1]["disc_acc"]  # what `sarseg jobs show` prints


def test_disc_acc_is_the_share_of_sources_told_right() -> None:
    config = pretrain_config("tiny")
    job = Pretraining(config, [Source("mr", ("a",)), Source("ct", ("b",))], [], Path("unused"), CPU, Distributed(), "none")
    batch = batch_of(4)
    batch.sources[:] = torch.tensor([0, 1, 1, 0])
    outputs = {"restored": batch.targets.clone(), "scale_logits": torch.tensor([[1.0, 0, 0]] * 4),
               "source_logits": torch.tensor([[2.0, 0.0], [0.0, 2.0], [2.0, 0.0], [2.0, 0.0]])}  # 3 of 4 right
    _, metrics = job.loss(outputs, batch, 0)
    assert metrics["disc_acc"] == 0.75 and metrics["scale_acc"] == 1.0
