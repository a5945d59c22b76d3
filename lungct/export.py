"""`lungct export`: a checkpoint's network as ONNX, for runtimes and languages other than PyTorch.

The ONNX file holds the network only (dynamic batch and in-plane size for 2D networks, dynamic spatial
size for 3D); `<file>.json` beside it holds what the network needs around it: the input chain, labels,
slice or patch size and pad value, exactly as the checkpoint records them. The export is checked by
running it with ONNX Runtime when that is installed (`pip install 'lungct[onnx]'`).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from lungct.errors import LungctError
from lungct.io.atomic import atomic_path, write_json


def export_onnx(model, path: Path, opset: int = 17) -> dict:
    """Write the network as ONNX and its meta as JSON; returns what was checked."""
    import torch

    try:
        import onnx  # noqa: F401  (torch's exporter needs it)
    except ImportError:
        raise LungctError(path, "ONNX export needs the onnx package: pip install 'lungct[onnx]'") from None

    path = Path(path)
    spatial = ["h", "w"] if model.dim == 2 else ["d", "h", "w"]
    size = model.meta["input"]["slice_size" if model.dim == 2 else "patch_size"]
    example = torch.rand(1, 1, *[int(s) for s in size])
    axes = {0: "n", **{i + 2: name for i, name in enumerate(spatial)}}
    network = model.network.cpu().eval()
    with atomic_path(path) as tmp, torch.inference_mode():
        torch.onnx.export(network, example, str(tmp), input_names=["image"], output_names=["logits"],
                          dynamic_axes={"image": axes, "logits": axes}, opset_version=opset, dynamo=False)
    write_json(path.with_name(path.name + ".json"), {**model.meta, "onnx": {"input": "image (N, 1, ...)",
                                                                           "output": "logits (N, labels, ...)",
                                                                           "opset": opset}})
    return {"file": str(path), "max_difference": check_onnx(network, path, example)}


def check_onnx(network, path: Path, example) -> float | None:
    """Largest difference between PyTorch's and ONNX Runtime's logits on `example` (None: no runtime)."""
    try:
        import onnxruntime
    except ImportError:
        return None
    import torch

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    with torch.inference_mode():
        expected = network(example).numpy()
    produced = session.run(None, {"image": example.numpy()})[0]
    difference = float(np.abs(expected - produced).max())
    if difference > 1e-3:
        raise LungctError(path, f"ONNX Runtime's logits differ from PyTorch's by {difference:.2g}: export failed")
    return difference
