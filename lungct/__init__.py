"""lungct: lung segmentation for chest CT and radiographs."""
from importlib.metadata import PackageNotFoundError, version as _version

try:
    __version__ = _version("lungct")
except PackageNotFoundError:  # running from a source tree without installing
    __version__ = "0.0.0+local"

from lungct.errors import LungctError  # noqa: E402

__all__ = ["LungctError", "__version__", "load_scan", "segment_lungs", "preprocess_scan", "load_recipe"]


def __getattr__(name):
    # Lazy imports keep `import lungct` and `lungct --help` fast: torch and MONAI load only when used.
    if name == "load_scan":
        from lungct.io import load_scan
        return load_scan
    if name == "segment_lungs":
        from lungct.transforms.lungs import segment_lungs
        return segment_lungs
    if name == "preprocess_scan":
        from lungct.preprocess import preprocess_scan
        return preprocess_scan
    if name == "load_recipe":
        from lungct.recipes import load_recipe
        return load_recipe
    raise AttributeError(name)
