"""Caltech101: ``caltech-101/101_ObjectCategories/<class>/``, ``split_zhou_Caltech101.json`` (§2.1);
``BACKGROUND_Google`` and ``Faces_easy`` skipped, four folders renamed (§2.3); a missing split is
generated from the class folders (50/20/30)."""
from engine.data import DATASET_REGISTRY
from engine.data.split_dataset import SplitDataset
from engine.data.splits import read_and_split_data

IGNORED = ["BACKGROUND_Google", "Faces_easy"]
NEW_CNAMES = {"airplanes": "airplane", "Faces": "face", "Leopards": "leopard", "Motorbikes": "motorbike"}


@DATASET_REGISTRY.register()
class Caltech101(SplitDataset):
    folder = "caltech-101"
    image_subdir = "101_ObjectCategories"
    split_file = "split_zhou_Caltech101.json"
    raw_files_hint = "the class folders caltech-101/101_ObjectCategories/<class>/"

    def generate_split(self):
        return read_and_split_data(self.image_dir, ignored=IGNORED, new_cnames=NEW_CNAMES)
