"""Texts shown in Slicer's module help (shared by both SAR modules), and the Slicer version check.

Standard library only: the modules import this first and check the Slicer version before anything else.
"""

import logging

CONTRIBUTORS = ["SARExtension developers"]

HOMEPAGE = "https://github.com/sar-extension/SlicerSAR"

# The oldest Slicer the modules run in (also CMakeLists.txt's find_package): 5.10 ships Python 3.12 (the
# engine needs 3.10+) and has vtkMRMLMarkupsROINode in MRML Core, where these modules import it from.
MINIMUM_SLICER = "5.10"
_reported = []  # the message, once it was logged (once per Slicer session, however many modules check)


def slicer_too_old(major: int, minor: int, minimum: str = MINIMUM_SLICER) -> str:
    """What to tell the user when Slicer ``major.minor`` is older than ``minimum``; empty when it is not."""
    wanted = tuple(int(part) for part in minimum.split("."))
    if (int(major), int(minor)) >= wanted:
        return ""
    return (f"SAR needs 3D Slicer {minimum} or newer; this is Slicer {major}.{minor}. Please install a newer "
            "Slicer release from https://download.slicer.org and the SAR extension again in it.")


def check_slicer(major: int, minor: int) -> str:
    """The requirements paragraph of the module help for Slicer ``major.minor`` (``slicer.app.majorVersion``,
    ``minorVersion``). In an older Slicer than :data:`MINIMUM_SLICER` it says so in bold, and the same
    message is logged as an error once: the modules call this first when Slicer loads them, so an old
    Slicer gets this message rather than an ImportError from deep inside."""
    problem = slicer_too_old(major, minor)
    if problem and problem not in _reported:
        logging.error(problem)
        _reported.append(problem)
    return f"<p>Requires 3D Slicer {MINIMUM_SLICER} or newer.</p>" + (f"<p><b>{problem}</b></p>" if problem else "")


CITATION = (
    "Xiaoman Zhang, Shixiang Feng, Yuhang Zhou, Ya Zhang, Yanfeng Wang. "
    "<i>SAR: Scale-Aware Restoration Learning for 3D Tumor Segmentation.</i> "
    "Medical Image Computing and Computer Assisted Intervention (MICCAI) 2021, LNCS 12902, pp. 124-133."
)

GENESIS_CITATION = (
    "Zongwei Zhou, Vatsal Sodha, Md Mahfuzur Rahman Siddiquee, Ruibin Feng, Nima Tajbakhsh, "
    "Michael B. Gotway, Jianming Liang. <i>Models Genesis: Generic Autodidactic Models for 3D Medical "
    "Image Analysis.</i> MICCAI 2019, LNCS 11767, pp. 384-393."
)

ACKNOWLEDGEMENT = (
    "This extension implements self-supervised Scale-Aware Restoration (SAR) pretraining and tumor "
    f"segmentation. Please cite:<br>{CITATION}<br><br>The restoration proxy task builds on Models Genesis:"
    f"<br>{GENESIS_CITATION}<br><br>Built on PyTorch, MONAI, SimpleITK and 3D Slicer."
)
