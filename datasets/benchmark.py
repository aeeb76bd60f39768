"""The benchmark's dataset lists (torch-free; read by ``repro.methods`` by path).

Config file stems under ``configs/datasets``, in the papers' table order:
``BASE2NEW_DATASETS`` (base-to-novel, the 11 datasets), ``XD_SOURCE`` (cross-dataset and
domain-generalisation training set), ``XD_TARGETS`` (cross-dataset targets), ``DG_TARGETS``
(domain-generalisation targets) and ``DATASET_TITLES`` (table column headers).
"""
BASE2NEW_DATASETS = ("imagenet", "caltech101", "oxford_pets", "stanford_cars", "oxford_flowers",
                     "food101", "fgvc_aircraft", "sun397", "dtd", "eurosat", "ucf101")
XD_SOURCE = "imagenet"
XD_TARGETS = BASE2NEW_DATASETS[1:]
DG_TARGETS = ("imagenetv2", "imagenet_sketch", "imagenet_a", "imagenet_r")

DATASET_TITLES = {
    "imagenet": "ImageNet", "caltech101": "Caltech101", "oxford_pets": "OxfordPets",
    "stanford_cars": "StanfordCars", "oxford_flowers": "Flowers102", "food101": "Food101",
    "fgvc_aircraft": "FGVCAircraft", "sun397": "SUN397", "dtd": "DTD", "eurosat": "EuroSAT",
    "ucf101": "UCF101", "imagenetv2": "ImageNetV2", "imagenet_sketch": "ImageNet-Sketch",
    "imagenet_a": "ImageNet-A", "imagenet_r": "ImageNet-R", "shapes": "Shapes",
}
