"""lungct: lung segmentation for chest CT and chest radiographs."""
from importlib import import_module
from importlib.metadata import PackageNotFoundError, version as _version

try:
    __version__ = _version("lungct")
except PackageNotFoundError:  # running from a source tree without installing
    __version__ = "0.0.0+local"

from lungct.errors import LungctError  # noqa: E402

# Lazy imports keep `import lungct` and `lungct --help` fast: torch and MONAI load only when used.
_LAZY = {
    "load_scan": "lungct.io",
    "load_radiograph": "lungct.io.radiograph",
    "load_segmenter": "lungct.engine",
    "segment": "lungct.engine",
    "segment_lungs": "lungct.ct.transforms.lungs",
    "preprocess_scan": "lungct.ct.preprocess",
    "load_recipe": "lungct.recipes",
}
__all__ = ["LungctError", "__version__", *_LAZY]


def __getattr__(name):
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(name)
