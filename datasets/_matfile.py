"""Optional ``scipy.io.loadmat`` import for the two datasets whose raw annotations are MATLAB files."""
import os

from engine.data.base_dataset import DatasetError


def loadmat(path):
    """``scipy.io.loadmat(path)``; one-line ``DatasetError`` if the file or scipy is missing."""
    if not os.path.isfile(path):
        raise DatasetError(f"annotation file not found: {path}")
    try:
        from scipy.io import loadmat as _loadmat
    except ImportError:
        raise DatasetError(f"reading {path} needs scipy (pip install scipy), or provide the split JSON") from None
    return _loadmat(path)
