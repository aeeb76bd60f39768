"""``Datum``: one labelled image (Dassl's ``impath``, ``label``, ``domain``, ``classname``).

Unlike Dassl's, it does NOT stat the file: existence is checked once, in bulk, by
``engine.data.image_check.check_images_exist`` (called by ``DataManager``).
"""


class Datum:
    """Read-only record ``(impath, label, domain, classname)``."""

    __slots__ = ("_impath", "_label", "_domain", "_classname")

    def __init__(self, impath="", label=0, domain=0, classname=""):
        if not isinstance(impath, str):
            raise TypeError(f"Datum.impath must be a str, got {type(impath).__name__}: {impath!r}")
        self._impath = impath
        self._label = int(label)
        self._domain = int(domain)
        self._classname = str(classname)

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

    def __eq__(self, other):
        if not isinstance(other, Datum):
            return NotImplemented
        return (self._impath, self._label, self._domain, self._classname) == (
            other._impath, other._label, other._domain, other._classname)

    def __hash__(self):
        return hash((self._impath, self._label, self._domain, self._classname))

    def __repr__(self):
        return f"Datum(impath={self._impath!r}, label={self._label}, domain={self._domain}, classname={self._classname!r})"
