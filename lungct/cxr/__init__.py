"""Chest radiographs: reading (PNG/JPEG/TIFF, 16-bit, DICOM CR/DX), telling them from CT, the 256 x 256
preprocessing chain of pipelines/cxr-2d.yaml, post-processing back to the radiograph's own pixels with
right/left labels and areas, and training pairs. Arrays are (rows, cols) as displayed."""
from lungct.cxr.dataset import (cxr_pairs, cxr_training_split, find_split_file, load_cxr_pair, read_cxr_mask,
                                read_split_file)
from lungct.cxr.modality import check_modality, detect_modality, modality_mismatch
from lungct.cxr.postprocess import (LABELS, CxrResult, field_areas_cm2, finish_cxr, lung_mask, postprocess_cxr,
                                    split_fields)
from lungct.cxr.prepare import DEFAULT_RECIPE, cxr_recipe, prepare_cxr, to_original
from lungct.cxr.reading import CT_VOLUME_REFUSAL, Radiograph, load_radiograph
from lungct.cxr.writing import write_cxr_mask

__all__ = [
    "Radiograph", "load_radiograph", "detect_modality", "modality_mismatch", "check_modality", "CT_VOLUME_REFUSAL",
    "cxr_recipe", "prepare_cxr", "to_original", "DEFAULT_RECIPE",
    "postprocess_cxr", "lung_mask", "split_fields", "field_areas_cm2", "finish_cxr", "CxrResult", "LABELS",
    "cxr_pairs", "cxr_training_split", "find_split_file", "read_split_file", "read_cxr_mask", "load_cxr_pair",
    "write_cxr_mask",
]
