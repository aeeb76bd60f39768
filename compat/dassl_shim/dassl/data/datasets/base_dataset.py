"""``Datum`` and ``DatasetBase`` at Dassl's module path (``dassl.data.datasets.base_dataset``).

``Datum`` is a plain class with Dassl's four attributes, so it pickles exactly as Dassl's does
(``copyreg.__newobj__`` of ``dassl.data.datasets.base_dataset.Datum`` with the state dict
``{"_impath", "_label", "_domain", "_classname"}``): few-shot pickles written by the repos' own
dataset code through this package load in real Dassl and in the engine's restricted importer
(``engine.data.legacy_fewshot``), and Dassl-written ones load here. It also accepts the
``(None, slots)`` state of a slotted writer. Unlike Dassl's, it does not stat the image file when built:
the engine's ``DataManager`` checks every image once, in bulk, with one clear error.

``DatasetBase`` is the engine's (stricter checks: one label per class name, no empty class, naming the
image) with Dassl's constructor and the domain helpers; ``download_data`` is refused in one line.
"""
from collections import defaultdict

from engine.data.base_dataset import DatasetBase as _EngineDatasetBase
from engine.data.base_dataset import DatasetError
from engine.data.datum import Datum as EngineDatum

__all__ = ["Datum", "DatasetBase"]


class Datum:
    """Data instance: ``impath`` (str), ``label`` (int), ``domain`` (int), ``classname`` (str)."""

    def __init__(self, impath="", label=0, domain=0, classname=""):
        assert isinstance(impath, str)
        self._impath = impath
        self._label = label
        self._domain = domain
        self._classname = classname

    def __setstate__(self, state):
        if isinstance(state, tuple) and len(state) == 2:  # (dict state, slots state)
            state = {**(state[0] or {}), **(state[1] or {})}
        self.__dict__.update(state)

    @property
    def impath(self):
        return self._impath

    @property
    def label(self):
        return self._label

    @property
    def domain(self):
        return self._domain

    @property
    def classname(self):
        return self._classname

    def to_engine(self):
        """The engine's ``engine.data.Datum`` with the same fields."""
        return EngineDatum(self._impath, self._label, self._domain, self._classname)

    @classmethod
    def from_engine(cls, datum):
        """This class from an ``engine.data.Datum`` (or any object with the four attributes)."""
        return cls(datum.impath, datum.label, datum.domain, datum.classname)

    def __repr__(self):
        return (f"Datum(impath={self._impath!r}, label={self._label!r}, domain={self._domain!r}, "
                f"classname={self._classname!r})")


class DatasetBase(_EngineDatasetBase):
    """Dassl's ``DatasetBase(train_x=None, train_u=None, val=None, test=None)`` on the engine's checks."""

    dataset_dir = ""
    domains = []

    def __init__(self, train_x=None, train_u=None, val=None, test=None):
        super().__init__(train_x=train_x, train_u=train_u, val=val, test=test)

    def check_input_domains(self, source_domains, target_domains):
        self.is_input_domain_valid(source_domains)
        self.is_input_domain_valid(target_domains)

    def is_input_domain_valid(self, input_domains):
        for domain in input_domains:
            if domain not in self.domains:
                raise ValueError(f"Input domain must belong to {self.domains}, but got [{domain}]")

    def download_data(self, url, dst, from_gdrive=True):
        raise DatasetError(f"{type(self).__name__}: downloading {url} is not supported here; "
                           f"put the dataset at {dst} yourself")

    @staticmethod
    def split_dataset_by_domain(data_source):
        """``{domain: [Datum]}`` (Dassl)."""
        output = defaultdict(list)
        for item in data_source:
            output[item.domain].append(item)
        return output


