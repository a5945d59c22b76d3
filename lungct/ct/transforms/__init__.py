"""Dictionary transforms of the CT chain (MONAI's MapTransform contract), one concern per module.

Each transform works on the dict the chain passes along: "image" (channel first, its affine in RAS mm
under "image_affine"; a MetaTensor too when MONAI is loaded), label keys added by the steps ("body",
"lungs", "roi"), and "case", a dict of flags, warnings and measurements that ends up in the sidecar.
Recipes name them by class; lungct.recipes finds them here. They import nothing of MONAI, so CT
inference starts without MONAI's import (lungct.ct.transforms.common says why).
"""
from lungct.ct.transforms.body import BodyMaskd
from lungct.ct.transforms.intensity import CheckHUCalibrationd, HUWindowd, MaskOutsideROId
from lungct.ct.transforms.lungs import LungMaskd
from lungct.ct.transforms.mirror import MirrorROId
from lungct.ct.transforms.resample import Resampled
from lungct.ct.transforms.roi import LungROId

__all__ = ["BodyMaskd", "CheckHUCalibrationd", "HUWindowd", "MaskOutsideROId", "LungMaskd", "MirrorROId", "Resampled",
           "LungROId"]
