"""lungct: lung segmentation for chest CT and chest radiographs."""
import os
import sys
from importlib import import_module
from importlib.metadata import PackageNotFoundError, version as _version

try:
    __version__ = _version("lungct")
except PackageNotFoundError:  # running from a source tree without installing
    __version__ = "0.0.0+local"

# NumPy asks the kernel to back large arrays with transparent huge pages. Where the kernel then compacts memory
# synchronously (THP defrag "madvise", usual on cloud VMs), allocations of a few hundred MB stall for seconds:
# a full-size CT took 25-26 s through `lungct infer` with the advice and 13-19 s without (docs/design.md).
# Off unless the user set NUMPY_MADVISE_HUGEPAGE; the environment reaches numpy when it is imported after us.
if "NUMPY_MADVISE_HUGEPAGE" not in os.environ:
    os.environ["NUMPY_MADVISE_HUGEPAGE"] = "0"
    if "numpy" in sys.modules:  # imported before lungct: its runtime switch (private, hence guarded)
        try:
            sys.modules["numpy"]._core.multiarray._set_madvise_hugepage(False)
        except AttributeError:
            pass

from lungct.errors import LungctError  # noqa: E402

# Lazy imports keep `import lungct` and `lungct --help` fast: torch and MONAI load only when used.
_LAZY = {
    "load_scan": "lungct.io",
    "load_radiograph": "lungct.io.radiograph",
    "load_segmenter": "lungct.engine",
    "segment": "lungct.api",
    "Segmentation": "lungct.api",
    "segment_lungs": "lungct.ct.transforms.lungs",
    "preprocess_scan": "lungct.ct.preprocess",
    "load_recipe": "lungct.recipes",
}
__all__ = ["LungctError", "__version__", *_LAZY]


def __getattr__(name):
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(name)
