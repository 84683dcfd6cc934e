"""Volumes matched to model channels by name (``SARSegmentationLib.channels``), never by scene order;
the last test runs the module's channel selectors on a real MRML scene (``slicer-core``)."""

from __future__ import annotations

import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT / "SARSegmentation") not in sys.path:  # as Slicer puts it on sys.path
    sys.path.insert(0, str(ROOT / "SARSegmentation"))

from SARSegmentationLib.channels import (ChannelMatch, channel_sequence, display_name, match_channels,  # noqa: E402
                                         sequences, words)


def lines(channels, volumes, **kwargs) -> list[str]:
    return [match.line for match in match_channels(channels, volumes, **kwargs)]


def chosen(channels, volumes) -> list:
    return [match.volume for match in match_channels(channels, volumes)]


@pytest.mark.parametrize("name, expected", [
    ("BraTS18_2013_2_1_flair", {"flair"}),
    ("BraTS18_2013_2_1_t1", {"t1"}),
    ("BraTS18_2013_2_1_t1ce", {"t1c"}),
    ("BraTS-GLI-00000-000-t2f", {"flair"}),  # BraTS 2023 names
    ("BraTS-GLI-00000-000-t1n", {"t1"}),
    ("BraTS-GLI-00000-000-t2w", {"t2"}),
    ("T1 post contrast", {"t1c"}),
    ("post-contrast T1", {"t1c"}),
    ("T1Gd", {"t1c"}),
    ("T1+C", {"t1c"}),
    ("t1_weighted", {"t1"}),
    ("T2-FLAIR", {"flair"}),  # FLAIR, not T2
    ("t2flair_1", {"flair"}),
    ("MRBrainTumor1", {"mr"}),  # camel case: MR, Brain, Tumor1
    ("MRHead", {"mr"}),
    ("CTChest", {"ct"}),
    ("CTACardio", {"ct"}),
    ("lung_ct", {"ct"}),
    ("pat3_PET_SUV", {"pet"}),
    ("pat1_notes", set()),  # "t1" inside "pat1" is no T1
    ("pet1", set()),
    ("case_0001_0000", set()),
    ("Contrast CT", {"ct"}),  # a contrast word makes only a T1 into T1c
])
def test_sequences_named(name, expected):
    assert sequences(name) == expected


def test_words_and_channel_names():
    assert words("MRBrainTumor1") == ["mr", "brain", "tumor1"]
    assert words("BraTS18_t1ce.nii") == ["bra", "ts18", "t1ce", "nii"]
    assert [channel_sequence(c) for c in ("flair", "t1ce", "T1Gd", "t2", "ct_lung", "mr", "default", "adc")] == [
        "flair", "t1c", "t1c", "t2", "ct", "mr", None, None]
    assert [display_name(c) for c in ("flair", "t1ce", "t2", "mr", "ct_lung", "default")] == [
        "FLAIR", "T1c", "T2", "MR", "ct_lung", "default"]
    assert ChannelMatch("flair", "v", "pat1_flair", "name match").line == "FLAIR <- 'pat1_flair' (name match)"
    assert ChannelMatch("t1c").line == "T1c: no volume named like it; choose one"


def test_brats_volumes_in_any_order():
    volumes = ["BraTS18_2013_2_1_t2", "BraTS18_2013_2_1_t1ce", "BraTS18_2013_2_1_flair", "BraTS18_2013_2_1_t1"]
    assert chosen(["flair", "t1", "t1c", "t2"], volumes) == [volumes[2], volumes[3], volumes[1], volumes[0]]
    assert lines(["flair", "t1c"], volumes) == ["FLAIR <- 'BraTS18_2013_2_1_flair' (name match)",
                                               "T1c <- 'BraTS18_2013_2_1_t1ce' (name match)"]
    # the issue's swap: scene order [T1c, FLAIR] no longer lands in [FLAIR, T1c]
    assert chosen(["flair", "t1c"], ["T1 post contrast", "pat1_flair"]) == ["pat1_flair", "T1 post contrast"]


def test_t1_is_not_t1c_and_t2_is_not_flair():
    assert chosen(["t1"], ["pat_t1ce", "pat_T1Gd", "T1 post contrast"]) == [None]
    assert chosen(["t1c"], ["pat_t1", "pat_t1w"]) == [None]
    assert chosen(["t2"], ["pat_t2flair", "T2-FLAIR"]) == [None]
    assert chosen(["flair", "t2"], ["pat_t2", "T2-FLAIR"]) == ["T2-FLAIR", "pat_t2"]


def test_ambiguous_channels_are_left_to_the_user():
    assert lines(["flair", "t1c"], ["pat1_flair", "pat2_flair", "pat1_t1ce"]) == [
        "FLAIR: 2 volumes named like it ('pat1_flair', 'pat2_flair'); choose one",
        "T1c <- 'pat1_t1ce' (name match)"]
    # a name that says only what the channel is beats one that says more (registered to another)
    assert chosen(["flair", "t1"], ["flair_reg_t1", "pat_t1"]) == ["flair_reg_t1", "pat_t1"]
    # two channels of the same name and one volume: it goes to one channel only
    assert lines(["mr", "mr"], ["MRHead"]) == ["MR <- 'MRHead' (name match)", "MR: no volume named like it; choose one"]
    # two equal MR channels and two MR volumes: which is which is the user's call
    assert chosen(["mr", "mr"], ["MRHead", "MRBrainTumor1"]) == [None, None]


def test_mr_channel_takes_a_named_mr_volume_first_then_a_sequence():
    assert lines(["mr"], ["pat_t1", "MRBrainTumor1"]) == ["MR <- 'MRBrainTumor1' (name match)"]
    assert lines(["mr"], ["CTChest", "pat_t1"]) == ["MR <- 'pat_t1' (an MR sequence by its name)"]
    assert lines(["mr"], ["pat_t1", "pat_t2"]) == ["MR: 2 volumes named like it ('pat_t1', 'pat_t2'); choose one"]
    assert chosen(["ct", "pet"], ["pat1_PET", "MRHead", "pat1_CT"]) == ["pat1_CT", "pat1_PET"]
    assert lines(["ct", "pet"], ["MRHead"]) == ["CT: no volume named like it; choose one",
                                                "PET: no volume named like it; choose one"]


def test_nnunet_channel_numbers_and_other_names():
    volumes = ["case_0001_0001", "case_0001_0000"]
    assert lines(["flair", "t1c"], volumes) == ["FLAIR <- 'case_0001_0000' (channel number 0000 in the name)",
                                                "T1c <- 'case_0001_0001' (channel number 0001 in the name)"]
    # a name's words win over its number
    assert chosen(["flair", "t1c"], ["x_t1ce_0000", "case_0000"]) == ["case_0000", "x_t1ce_0000"]
    # channels named by no known sequence match by their own words
    assert chosen(["adc", "dwi"], ["pat1_DWI", "pat1_ADC_map"]) == ["pat1_ADC_map", "pat1_DWI"]
    # one channel without a sequence name takes the only volume, but never one of many
    assert lines(["default"], ["Volume"]) == ["default <- 'Volume' (the only volume)"]
    assert chosen(["default"], ["Volume", "Volume_1"]) == [None]
    assert chosen(["mr"], ["Volume"]) == [None]  # the name says nothing: the user says it is MR


def test_chosen_channels_are_kept_and_their_volumes_not_offered_again():
    kept = ChannelMatch("flair", "pat2_flair", "pat2_flair", "your choice")
    matches = match_channels(["flair", "t1c"], ["pat1_flair", "pat2_flair", "pat2_t1ce"], chosen={0: kept})
    assert matches[0] is kept and matches[1].volume == "pat2_t1ce"
    nodes = [SimpleNamespace(name="a_flair"), SimpleNamespace(name="a_flair")]  # same name, two nodes
    matches = match_channels(["flair"], nodes, name_of=lambda n: n.name, chosen={})
    assert matches[0].volume is None and "2 volumes" in matches[0].how


# ---------------------------------------------------------------------------- on a real MRML scene


def test_channel_selectors_match_scene_volumes_added_in_a_misleading_order():
    slicer = pytest.importorskip("slicer", reason="slicer-core (Slicer's MRML for plain Python) is not installed")
    from sarseg import mrml, phantom
    from SARSegmentationLib.widgethelpers import ChannelSelectors, scene_volumes

    scene = slicer.vtkMRMLScene()
    shape = (8, 16, 16)
    images, _ = phantom.make_case(0, shape)
    geometry = phantom.geometry(shape)
    for name in ("BraTS18_2013_2_1_t2", "T1 post contrast", "MRBrainTumor1", "pat1_flair"):  # not channel order
        mrml.add_volume_node(scene, images["mr"], name, geometry)
    labelmap = scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode", "flair tumor label")  # never an input
    assert labelmap is not None and len(scene_volumes(scene)) == 4

    class Selector:
        def __init__(self, name, tooltip):
            self.node = None

        def currentNode(self):
            return self.node

        def setCurrentNode(self, node):
            self.node = node

        def connect(self, signal, slot):
            pass

    class Layout:
        def __init__(self):
            self.rows = []

        def rowCount(self):
            return len(self.rows)

        def removeRow(self, index):
            del self.rows[index]

        def addRow(self, *row):
            self.rows.append(row)

    note = SimpleNamespace(text="")
    selectors = ChannelSelectors(Layout(), lambda: None, "{name}", make=Selector, make_note=lambda: note,
                                 volumes=lambda: scene_volumes(scene))
    selectors.rebuild(["flair", "t1c", "t2", "t1"])
    assert [node.GetName() if node else None for node in selectors.nodes()] == [
        "pat1_flair", "T1 post contrast", "BraTS18_2013_2_1_t2", None]
    assert note.text.splitlines() == [
        "FLAIR <- 'pat1_flair' (name match)", "T1c <- 'T1 post contrast' (name match)",
        "T2 <- 'BraTS18_2013_2_1_t2' (name match)", "T1: no volume named like it; choose one"]
    selectors.rebuild(["mr"])
    assert selectors.nodes()[0].GetName() == "MRBrainTumor1"
