"""OxfordPets: ``oxford_pets/images/``, ``split_zhou_OxfordPets.json`` (§2.1). A missing split is
generated from ``annotations/trainval.txt`` (80/20 train/val per class) and ``annotations/test.txt``;
class name = file name minus ``_<n>``, lower-cased; label = class id - 1 (§2.3)."""
import os

from engine.data import DATASET_REGISTRY, Datum
from engine.data.base_dataset import DatasetError
from engine.data.split_dataset import SplitDataset
from engine.data.splits import read_text_lines, split_trainval


@DATASET_REGISTRY.register()
class OxfordPets(SplitDataset):
    folder = "oxford_pets"
    image_subdir = "images"
    split_file = "split_zhou_OxfordPets.json"
    raw_files_hint = "oxford_pets/annotations/trainval.txt and test.txt"

    def read_annotations(self, name):
        path = os.path.join(self.dataset_dir, "annotations", name)
        items = []
        for line in read_text_lines(path, "annotation file"):
            if line.startswith("#"):
                continue
            parts = line.split()
            if len(parts) < 2:
                raise DatasetError(f"{path}: malformed line {line!r}; expected '<image> <class id> ...'")
            imname, label = parts[0], int(parts[1]) - 1
            breed = "_".join(imname.split("_")[:-1]).lower()
            items.append(Datum(os.path.join(self.image_dir, imname + ".jpg"), label, 0, breed))
        return items

    def generate_split(self):
        trainval = self.read_annotations("trainval.txt")
        test = self.read_annotations("test.txt")
        train, val = split_trainval(trainval, source="annotations/trainval.txt")
        return train, val, test
