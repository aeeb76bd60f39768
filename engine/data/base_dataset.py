"""``DatasetBase`` (Dassl's contract) plus consistency checks of the loaded items.

``num_classes``/``lab2cname``/``classnames`` come from ``train_x`` like Dassl. On construction the
splits are validated: every label maps to one class name (across all splits), no class name has two
labels, and every label ``0..num_classes-1`` has at least one ``train_x`` image (no empty classes).
"""
from . import sampling
from .datum import Datum


class DatasetError(ValueError):
    """A dataset folder/file/content problem, with a one-line message naming the path or value."""


def check_consistency(name, splits):
    """Raise ``DatasetError`` on label/classname disagreements or empty classes.

    ``splits`` maps split name -> list of Datum (None allowed). ``name`` prefixes the message.
    """
    lab2cname, cname2lab = {}, {}
    for split, items in splits.items():
        for item in items or ():
            c = lab2cname.setdefault(item.label, item.classname)
            if c != item.classname:
                raise DatasetError(
                    f"{name}: label {item.label} has two class names, {c!r} and {item.classname!r} "
                    f"({split} image {item.impath})")
            lab = cname2lab.setdefault(item.classname, item.label)
            if lab != item.label:
                raise DatasetError(
                    f"{name}: class name {item.classname!r} has two labels, {lab} and {item.label} "
                    f"({split} image {item.impath})")
    train = splits.get("train_x") or []
    if not train:
        raise DatasetError(f"{name}: the training split is empty")
    present = {item.label for item in train}
    if min(present) < 0:
        raise DatasetError(f"{name}: negative label {min(present)} in train_x")
    missing = [y for y in range(max(present) + 1) if y not in present]
    if missing:
        raise DatasetError(
            f"{name}: empty class(es): label(s) {missing[:5]} have no training images "
            f"(labels must be 0..{max(present)} and every class needs images)")


class DatasetBase:
    """Container of ``train_x``, ``train_u``, ``val``, ``test`` lists of ``Datum``."""

    dataset_dir = ""  # set by subclasses (absolute path of the dataset folder)

    def __init__(self, train_x=None, train_u=None, val=None, test=None, validate=True):
        self._train_x = train_x
        self._train_u = train_u
        self._val = val
        self._test = test
        if validate:
            check_consistency(type(self).__name__, {"train_x": train_x, "val": val, "test": test})
        self._num_classes = self.get_num_classes(train_x)
        self._lab2cname, self._classnames = self.get_lab2cname(train_x)

    @property
    def train_x(self):
        return self._train_x

    @property
    def train_u(self):
        return self._train_u

    @property
    def val(self):
        return self._val

    @property
    def test(self):
        return self._test

    @property
    def lab2cname(self):
        return self._lab2cname

    @property
    def classnames(self):
        return self._classnames

    @property
    def num_classes(self):
        return self._num_classes

    @staticmethod
    def get_num_classes(data_source):
        """``max(label) + 1`` over ``data_source`` (Dassl)."""
        return max(item.label for item in data_source) + 1

    @staticmethod
    def get_lab2cname(data_source):
        """``({label: classname}, [classname sorted by label])`` from ``data_source``."""
        mapping = {item.label: item.classname for item in data_source}
        labels = sorted(mapping)
        return {y: mapping[y] for y in labels}, [mapping[y] for y in labels]

    @staticmethod
    def split_dataset_by_label(data_source):
        return sampling.split_dataset_by_label(data_source)

    @staticmethod
    def generate_fewshot_dataset(*data_sources, num_shots=-1, repeat=False):
        return sampling.generate_fewshot_dataset(*data_sources, num_shots=num_shots, repeat=repeat)

    @staticmethod
    def subsample_classes(*data_sources, subsample="all"):
        return sampling.subsample_classes(*data_sources, subsample=subsample)


__all__ = ["Datum", "DatasetBase", "DatasetError", "check_consistency"]
