"""Synthetic dense lesions painted into chest CT and labelled as lung.

A model trained on aerated-lung-only references carves tumours (worst: those against the chest wall,
mediastinum, spine or diaphragm), consolidation and atelectasis out of the lung; these teach it that all
inside the visceral pleura is lung, and effusion (which turns the dependent lung into background) that
fluid against the back wall is not. Millimetres and HU throughout; a 2D slice is a volume one voxel thick
(a tumour on it is the cut through a 3D one).

Modules: params (LesionParams, Lesion), orientation (the body's axes and spine), scene (the image being
painted), placement (lung surfaces by placement), shapes and texture, the painters (tumour,
consolidation, effusion) and synthesis (synthesize_lesions).
"""
from lungct.ct.lesions.orientation import orientation_hints
from lungct.ct.lesions.params import PLACEMENTS, Lesion, LesionParams
from lungct.ct.lesions.synthesis import synthesize_lesions

__all__ = ["PLACEMENTS", "Lesion", "LesionParams", "orientation_hints", "synthesize_lesions"]
