"""Inference options in one place: every option a segmenter takes is a field here, with the modalities it
applies to. The CLI builds the options from its flags by name, the segmenters read them and record the
ones they use in every sidecar (`inference`), and worker processes get them whole. Adding an option is a
field here and its flag on `lungct infer`.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields


def _option(default, *modalities: str, recorded: bool = True):
    """A field for the modalities it applies to; `recorded`: written into the sidecar."""
    return field(default=default, metadata={"modalities": modalities or ("ct", "cxr"), "recorded": recorded})


@dataclass(frozen=True)
class InferOptions:
    """Everything that shapes a segmenter; the same options load the same models on any worker."""

    models: tuple = _option((), recorded=False)  # --model, each serving its own modality (resolved to files
    # when `infer` starts: 'latest' then names the run that was newest, for the whole batch)
    device: str = _option("auto", recorded=False)
    precision: str = _option("auto", recorded=False)
    binary: bool = _option(False)
    tta: bool = _option(False, "ct")
    aerated: bool = _option(False, "ct")
    statistics: bool = _option(True, "ct")
    recalibrate: bool = _option(False, "ct")
    roi: bool | None = _option(None, "ct", recorded=False)  # recorded as applied (the checkpoint's default)
    slice_batch: int = _option(16, "ct")
    sw_batch_size: int = _option(4, "ct")
    overlap: float = _option(0.5, "ct")

    def __post_init__(self):
        object.__setattr__(self, "models", tuple(str(m) for m in self.models))

    @classmethod
    def from_flags(cls, flags: dict) -> "InferOptions":
        """The options from CLI flags of the same names; a flag that names no option is a programming error."""
        unknown = set(flags) - {f.name for f in fields(cls)}
        if unknown:
            raise TypeError(f"flags that are no inference option: {sorted(unknown)}")
        return cls(**flags)

    def key(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    def for_modality(self, modality: str) -> dict:
        """The recorded options that apply to a modality, for its sidecars."""
        return {f.name: getattr(self, f.name) for f in fields(self)
                if modality in f.metadata["modalities"] and f.metadata["recorded"]}
