"""``sarseg finetune --promptable``: what training a promptable (interactive) lesion model adds to
fine-tuning. The network is the fine-tuning U-Net with the guidance channels (``clicks.guidance``: positive
and negative clicks, box) after the image channels. From a SAR-pretrained model, or any model without
them, the first convolutions take the image channels as fine-tuning does and start at zero on the
guidance channels, so training starts from the pretrained features and learns what prompts add; from
an earlier promptable model everything is taken as it is.

Each step simulates prompts as DeepGrow and DeepEdit train: per patch one lesion (a connected part of the
label, drawn by size) is the target; its first prompt is a click inside it or a box around it with
jittered sides; then 0..``max_corrections`` rounds (drawn per step) in which the network's own
prediction, without gradients, gets a corrective click in its largest error region; the loss is that of
the prediction from all these prompts against that lesion alone (other lesions in the patch are
background: one prompt, one lesion). Validation scores the Dice after 1 and 3 simulated clicks on crops
around the validation cases' largest lesions; the folder keeps the model best after 3 clicks.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from scipy import ndimage

from .clicks import VoxelPrompts, correction, first_prompt, guidance, largest_component, simulate
from .config import PromptableConfig
from .finetune import Finetuning, fill_state, init_prefix
from .nets import UNet3D
from .prompted import predict_prompted

VALIDATION_CLICKS = 3


def with_guidance_inputs(state: dict[str, torch.Tensor], own: dict[str, torch.Tensor], prefix: str,
                         image_channels: int) -> dict[str, torch.Tensor]:
    """``state`` with the first convolutions of a model that has no guidance channels widened to take
    them: the image channels as :func:`sarseg.finetune.fill_state` adapts them (copied, or one channel's
    kernels shared among ``image_channels``), the guidance channels' kernels zero."""
    out = dict(state)
    for key, value in own.items():
        source = state.get(prefix + key)
        if (key.startswith("encoder.0.") and source is not None and source.dim() == 5 and source.shape[1] in (1, image_channels)
                and value.shape[1] > source.shape[1] and source.shape[0] == value.shape[0] and source.shape[2:] == value.shape[2:]):
            widened = torch.zeros_like(value)
            widened[:, :image_channels] = source.expand(-1, image_channels, -1, -1, -1) / (image_channels if source.shape[1] == 1 else 1)
            out[prefix + key] = widened
    return out


def pick_lesion(target: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One connected part of a patch's lesion mask, drawn with probability proportional to its size
    (an empty mask when the patch holds none)."""
    components, count = ndimage.label(target)
    if count == 0:
        return np.zeros(target.shape, dtype=bool)
    sizes = np.bincount(components.ravel())[1:].astype(np.float64)
    return components == 1 + int(rng.choice(count, p=sizes / sizes.sum()))


class PromptTraining(Finetuning):
    """Fine-tuning with simulated prompts (see the module's description)."""

    config: PromptableConfig

    def build(self) -> UNet3D:
        config = self.config
        net = UNet3D(config.in_channels, config.labels.outputs, config.net)
        if self.init_state:
            own, prefix = net.state_dict(), init_prefix(self.init_meta)
            self.transfer = fill_state(own, with_guidance_inputs(self.init_state, own, prefix, len(config.modalities)), prefix)
            net.load_state_dict(own)
        return net

    def start_fields(self) -> dict:
        return {**super().start_fields(), "prompts": self.config.prompts.to_dict()}

    def batch(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        image, target = super().batch(step)
        config = self.config
        rng = np.random.default_rng([config.seed, self.dist.rank, step])
        lesions = [pick_lesion(t[0] > 0, rng) for t in target.cpu().numpy()]
        prompts = [first_prompt(lesion, rng, config.box_probability, config.box_jitter) for lesion in lesions]
        for _ in range(int(rng.integers(0, config.max_corrections + 1))):
            for i, (lesion, predicted) in enumerate(zip(lesions, self._predict(image, prompts))):
                fix = correction(lesion, predicted, rng=rng) if prompts[i] else None
                if fix is not None:
                    prompts[i] = prompts[i].add(*fix)
        dtype = torch.float32 if config.labels.mode == "regions" else torch.int64
        return (torch.cat([image, self._guidance(prompts, image.shape[2:])], dim=1),
                torch.from_numpy(np.stack(lesions)[:, None]).to(self.device, dtype))

    def _guidance(self, prompts: Sequence[VoxelPrompts], shape: Sequence[int]) -> torch.Tensor:
        return torch.from_numpy(np.stack([guidance(p, shape, self.config.prompts) for p in prompts])).to(self.device)

    @torch.no_grad()
    def _predict(self, image: torch.Tensor, prompts: Sequence[VoxelPrompts]) -> list[np.ndarray]:
        """The network's masks for the patches from the prompts so far (no gradients)."""
        self.net.eval()
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.config.amp and self.device.type == "cuda"):
            logits = self.net(torch.cat([image, self._guidance(prompts, image.shape[2:])], dim=1))
        self.net.train()
        probs = self.config.labels.activate(logits.float()).cpu()
        return [self.config.labels.to_label_map(p) > 0 for p in probs]

    def validate(self, step: int) -> None:
        config = self.config
        if not self.validation_due(step):
            return
        curves = []
        for case in self.val_cases:
            image, label, body = self.crops[case]
            lesion = largest_component(config.labels.masks(label)[0])
            if lesion.any():
                curves.append(simulate(lambda prompts: self._segment(image, body, prompts), lesion, VALIDATION_CLICKS,
                                       self.loaded[case]["spacing"]).dice)
        self.net.train()
        if not curves:
            return
        dice = [float(d) for d in np.mean(curves, axis=0)]
        per_label = {config.labels.names[0]: dice[-1]}
        if dice[-1] > self.best["dice"]:
            self.best.update(dice=dice[-1], step=step, per_label=per_label, dice_per_click=dice)
            self.write_model(step)
        self.progress.event("validation", step=step, dice=dice[-1], dice_per_click=dice, per_label=per_label,
                            best_dice=self.best["dice"], best_step=self.best["step"])

    def _segment(self, image: torch.Tensor, body: np.ndarray, prompts: VoxelPrompts) -> np.ndarray:
        config = self.config
        region, probs = predict_prompted(self.net, image, prompts, config.prompts, config.patch_zyx, config.labels,
                                         config.inference, self.device, body=body)
        mask = np.zeros(image.shape[1:], dtype=bool)
        mask[region] = config.labels.to_label_map(probs) > 0
        return mask
