"""SUN397: ``sun397/SUN397/<letter>/<class>/...``, ``split_zhou_SUN397.json`` (§2.1). A missing split is
generated from ``ClassName.txt``, ``Training_01.txt`` (80/20 train/val per class) and ``Testing_01.txt``;
class name = folder path minus the letter, components reversed, joined by spaces (§2.3)."""
import os

from engine.data import DATASET_REGISTRY, Datum
from engine.data.base_dataset import DatasetError
from engine.data.split_dataset import SplitDataset
from engine.data.splits import read_text_lines, split_trainval


@DATASET_REGISTRY.register()
class SUN397(SplitDataset):
    folder = "sun397"
    image_subdir = "SUN397"
    split_file = "split_zhou_SUN397.json"
    raw_files_hint = "sun397/ClassName.txt, Training_01.txt and Testing_01.txt"

    def read_data(self, cname2lab, text_file):
        path = os.path.join(self.dataset_dir, text_file)
        items = []
        for line in read_text_lines(path, "SUN397 list"):
            imname = line[1:] if line.startswith("/") else line
            folder = os.path.dirname(imname)
            if folder not in cname2lab:
                raise DatasetError(f"{path}: class folder {folder!r} of {line!r} is not in ClassName.txt")
            classname = " ".join(folder.split("/")[1:][::-1])
            items.append(Datum(os.path.join(self.image_dir, imname), cname2lab[folder], 0, classname))
        return items

    def generate_split(self):
        lines = read_text_lines(os.path.join(self.dataset_dir, "ClassName.txt"), "SUN397 class list")
        cname2lab = {(c[1:] if c.startswith("/") else c): i for i, c in enumerate(lines)}
        trainval = self.read_data(cname2lab, "Training_01.txt")
        test = self.read_data(cname2lab, "Testing_01.txt")
        train, val = split_trainval(trainval, source="Training_01.txt")
        return train, val, test
