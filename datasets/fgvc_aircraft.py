"""FGVCAircraft: ``fgvc_aircraft/`` (the ``data/`` folder of fgvc-aircraft-2013b renamed), images
``images/<id>.jpg``; NO split JSON: the official ``variants.txt`` (label = line index, class name = full
variant string) and ``images_variant_{train,val,test}.txt`` lines ``<id> <variant>`` (§2.1, §2.3)."""
import os

from engine.data import DATASET_REGISTRY, Datum
from engine.data.base_dataset import DatasetError
from engine.data.split_dataset import SplitDataset
from engine.data.splits import read_text_lines

HINT = ("the data/ folder of fgvc-aircraft-2013b (https://www.robots.ox.ac.uk/~vgg/data/fgvc-aircraft/) renamed to "
        "fgvc_aircraft")


@DATASET_REGISTRY.register()
class FGVCAircraft(SplitDataset):
    folder = "fgvc_aircraft"
    image_subdir = "images"
    split_file = "images_variant_train.txt"  # not a JSON: the official lists are read directly

    def read_list(self, cname2lab, name):
        path = os.path.join(self.dataset_dir, name)
        if not os.path.isfile(path):
            raise DatasetError(f"FGVCAircraft list not found: {path} ({HINT})")
        items = []
        for line in read_text_lines(path):
            parts = line.split(" ")
            classname = " ".join(parts[1:])
            if classname not in cname2lab:
                raise DatasetError(f"{path}: variant {classname!r} of image {parts[0]} is not in variants.txt")
            items.append(Datum(os.path.join(self.image_dir, parts[0] + ".jpg"), cname2lab[classname], 0, classname))
        return items

    def load_split(self, prefix):
        variants = os.path.join(self.dataset_dir, "variants.txt")
        if not os.path.isfile(variants):
            raise DatasetError(f"FGVCAircraft class list not found: {variants} ({HINT})")
        classnames = read_text_lines(variants)
        cname2lab = {c: i for i, c in enumerate(classnames)}
        return [self.read_list(cname2lab, f"images_variant_{s}.txt") for s in ("train", "val", "test")]
