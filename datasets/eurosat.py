"""EuroSAT: ``eurosat/2750/<class>/``, ``split_zhou_EuroSAT.json`` (§2.1); class names mapped through
``NEW_CNAMES`` (§2.3); a missing split is generated from the class folders (50/20/30)."""
from engine.data import DATASET_REGISTRY
from engine.data.split_dataset import SplitDataset
from engine.data.splits import read_and_split_data

NEW_CNAMES = {
    "AnnualCrop": "Annual Crop Land",
    "Forest": "Forest",
    "HerbaceousVegetation": "Herbaceous Vegetation Land",
    "Highway": "Highway or Road",
    "Industrial": "Industrial Buildings",
    "Pasture": "Pasture Land",
    "PermanentCrop": "Permanent Crop Land",
    "Residential": "Residential Buildings",
    "River": "River",
    "SeaLake": "Sea or Lake",
}


@DATASET_REGISTRY.register()
class EuroSAT(SplitDataset):
    folder = "eurosat"
    image_subdir = "2750"
    split_file = "split_zhou_EuroSAT.json"
    raw_files_hint = "the class folders eurosat/2750/<class>/"

    def generate_split(self):
        return read_and_split_data(self.image_dir, new_cnames=NEW_CNAMES)
