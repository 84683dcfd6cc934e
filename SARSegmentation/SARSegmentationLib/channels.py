"""Which volume goes into which model channel: the model's channel (modality) names matched against
the volume names, never the scene's order, and each choice said to the user in a line of text.

A volume name tells its sequence by words such as ``flair``, ``t1``, ``t1ce``/``t1gd``/``T1 post
contrast``, ``t2``, ``ct``, ``pet``, ``mr``; words are split at non-alphanumerics and camel case
(``MRBrainTumor1`` -> mr, brain, tumor1), so ``t1`` never matches inside ``pat1`` or ``t1ce``.
``T2-FLAIR`` (``t2flair``, BraTS 2023's ``t2f``) is FLAIR, not T2; a T1 named with a contrast word
(``c``, ``ce``, ``gd``, ``post``, ``contrast``...) is T1c. An MR channel takes an MR sequence
(FLAIR, T1, T1c, T2) when no volume is named MR. A name ending in ``_0000``, ``_0001``... (nnU-Net's
channel suffix) gives the channel by its number when its words say nothing. Each volume goes to one
channel at most; a channel that several volumes fit equally, or none, is left empty for the user.

Standard library only.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

# words (of a lowercased, split name) that name each sequence
WORDS: dict[str, frozenset[str]] = {
    "flair": frozenset({"flair", "t2flair", "t2f"}),
    "t1c": frozenset({"t1c", "t1ce", "t1gd", "t1gad", "t1post", "t1pc", "t1wce", "t1contrast", "t1postcontrast"}),
    "t1": frozenset({"t1", "t1w", "t1n", "mprage"}),
    "t2": frozenset({"t2", "t2w"}),
    "ct": frozenset({"ct", "cta"}),
    "pet": frozenset({"pet", "suv"}),
    "mr": frozenset({"mr", "mri"}),
}
CONTRAST_WORDS = frozenset({"c", "ce", "gd", "gad", "gado", "contrast", "postcontrast", "post", "enhanced"})
MR_SEQUENCES = frozenset({"flair", "t1c", "t1", "t2"})
DISPLAY = {"flair": "FLAIR", "t1c": "T1c", "t1": "T1", "t2": "T2", "ct": "CT", "pet": "PET", "mr": "MR"}

NAME_MATCH = "name match"
MR_MATCH = "an MR sequence by its name"
NUMBER_MATCH = "channel number {number} in the name"
ONLY_VOLUME = "the only volume"
NO_MATCH = "no volume named like it; choose one"

_CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])")
_CHANNEL_SUFFIX = re.compile(r"_(\d{4})$")


def words(name: str) -> list[str]:
    """The lowercase words of a name: split at anything not a letter or digit, and at camel case."""
    return [w for w in re.split(r"[^a-z0-9]+", _CAMEL.sub(" ", name).lower()) if w]


def sequences(name: str) -> set[str]:
    """The sequences (keys of :data:`WORDS`) a name says it is: T1 with a contrast word is T1c, and
    T2 beside FLAIR is FLAIR (T2-FLAIR)."""
    found = {key for w in words(name) for key, known in WORDS.items() if w in known}
    if "t1" in found and CONTRAST_WORDS & set(words(name)):
        found = (found - {"t1"}) | {"t1c"}
    if "flair" in found:
        found.discard("t2")
    return found


def channel_sequence(channel: str) -> str | None:
    """The one sequence a channel name stands for (``"t1ce"`` -> ``"t1c"``), None when it names none
    (``"default"``, ``"adc"``): such a channel matches volumes by its own words."""
    found = sequences(channel)
    if len(found) > 1:
        found -= {"mr"}
    return next(iter(found)) if len(found) == 1 else None


def display_name(channel: str) -> str:
    """How the user reads a channel: ``FLAIR``, ``T1c``... for a plain sequence name, else as given."""
    key = channel_sequence(channel)
    plain = key is not None and "".join(words(channel)) in WORDS[key]
    return DISPLAY[key] if plain else channel


def _score(channel: str, index: int, volume: str) -> tuple[int, str]:
    """How well a volume name fits a channel (3: by name alone; 2: by name among other sequences;
    1: an MR sequence for an MR channel; 0: only by its channel number) and why; (-1, "") when not."""
    key, found = channel_sequence(channel), sequences(volume)
    if key is None:
        wanted, have = words(channel), words(volume)
        if wanted and any(have[i:i + len(wanted)] == wanted for i in range(len(have))):
            return 3, NAME_MATCH
    elif key in found:
        related = MR_SEQUENCES if key == "mr" else {"mr"} if key in MR_SEQUENCES else set()
        return (3 if found - {key} <= related else 2), NAME_MATCH
    elif key == "mr" and found & MR_SEQUENCES and not found & {"ct", "pet"}:
        return 1, MR_MATCH
    suffix = _CHANNEL_SUFFIX.search(volume)
    if not found and suffix and int(suffix.group(1)) == index:
        return 0, NUMBER_MATCH.format(number=suffix.group(1))
    return -1, ""


@dataclass(frozen=True)
class ChannelMatch:
    """The volume chosen for one channel (None: the user chooses) and why, as the user reads it."""

    channel: str
    volume: Any = None
    volume_name: str = ""
    how: str = NO_MATCH

    @property
    def line(self) -> str:
        """``FLAIR <- 'pat1_flair' (name match)``, or ``T1c: no volume named like it; choose one``."""
        label = display_name(self.channel)
        return f"{label} <- '{self.volume_name}' ({self.how})" if self.volume is not None else f"{label}: {self.how}"


def match_channels(channels: Sequence[str], volumes: Sequence[Any], name_of: Callable[[Any], str] = str,
                   chosen: Mapping[int, ChannelMatch] | None = None) -> list[ChannelMatch]:
    """One :class:`ChannelMatch` per channel: the volume (of ``volumes``, named by ``name_of``) named
    like it. ``chosen`` (channel index -> match) are kept as they are and their volumes not offered.

    The best fits are decided first; a volume goes to one channel at most; a channel that several
    free volumes fit equally well is left empty (the line names them), as is one that none fits. A
    single channel whose name names no sequence takes the scene's only volume."""
    chosen = dict(chosen or {})
    names = [name_of(volume) for volume in volumes]
    taken = [match.volume for match in chosen.values() if match.volume is not None]
    free = [i for i, volume in enumerate(volumes) if not any(volume is other for other in taken)]
    result: dict[int, ChannelMatch] = dict(chosen)
    scores = {(c, v): _score(channel, c, names[v]) for c, channel in enumerate(channels) for v in free}
    for level in (3, 2, 1, 0):
        changed = True
        while changed:  # a volume taken at this level may leave another channel a single fit
            changed = False
            for c, channel in enumerate(channels):
                fits = [v for v in free if scores[c, v][0] == level]
                if c not in result and len(fits) == 1:
                    v = fits[0]
                    result[c] = ChannelMatch(channel, volumes[v], names[v], scores[c, v][1])
                    free.remove(v)
                    changed = True
        for c, channel in enumerate(channels):
            fits = [v for v in free if scores[c, v][0] == level]
            if c not in result and len(fits) > 1:
                listed = ", ".join(f"'{names[v]}'" for v in fits)
                result[c] = ChannelMatch(channel, how=f"{len(fits)} volumes named like it ({listed}); choose one")
    if len(channels) == 1 and 0 not in result and channel_sequence(channels[0]) is None and len(free) == 1:
        result[0] = ChannelMatch(channels[0], volumes[free[0]], names[free[0]], ONLY_VOLUME)
    return [result.get(c, ChannelMatch(channel)) for c, channel in enumerate(channels)]
