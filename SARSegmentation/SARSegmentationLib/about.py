"""Texts shown in Slicer's module help (shared by both SAR modules)."""

CONTRIBUTORS = ["SARExtension developers"]

HOMEPAGE = "https://github.com/sar-extension/SARExtension"

# The oldest Slicer the modules run in (also CMakeLists.txt's find_package): 5.10 ships Python 3.12 (the
# engine needs 3.10+) and has vtkMRMLMarkupsROINode in MRML Core, where these modules import it from.
MINIMUM_SLICER = "5.10"
REQUIREMENTS = f"<p>Requires 3D Slicer {MINIMUM_SLICER} or newer.</p>"

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
