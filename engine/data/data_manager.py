"""``DataManager(cfg)``: dataset + loaders + the Dassl summary table (Dassl's contract).

Order: ``build_dataset`` first (nothing consumes ``random`` before it, so few-shot picks equal
Dassl's), then the bulk image-existence check (one clear error before any training), then loaders.

In a ``torchrun`` run, rank 0 builds the dataset first (it alone writes missing split / few-shot
cache files) and the other ranks then read them; the train loader yields each rank's share of the
one-process run's global batches (``engine.data.distributed_sampler``).
"""
from tabulate import tabulate

from engine.distributed import main_process_first
from engine.utils.logger import get_logger

from .distributed_sampler import distribute_train_loader
from .image_scan import check_images
from .loader import build_data_loader
from .registry import build_dataset
from .transforms import build_transform


class DataManager:
    def __init__(self, cfg, custom_tfm_train=None, custom_tfm_test=None, dataset_wrapper=None):
        if dataset_wrapper is not None:
            raise ValueError("DataManager: custom dataset_wrapper is not supported")
        with main_process_first():
            dataset = build_dataset(cfg)
        check_images(cfg, dataset)  # DATALOADER.CHECK_IMAGES: existence, then header/trailer (cached)
        tfm_train = build_transform(cfg, is_train=True) if custom_tfm_train is None else custom_tfm_train
        tfm_test = build_transform(cfg, is_train=False) if custom_tfm_test is None else custom_tfm_test
        dl = cfg.DATALOADER
        self.train_loader_x = build_data_loader(
            cfg, dataset.train_x, dl.TRAIN_X.BATCH_SIZE, dl.TRAIN_X.SAMPLER, tfm_train, is_train=True)
        self.train_loader_x = distribute_train_loader(self.train_loader_x)
        self.train_loader_u = None
        self.val_loader = None
        if dataset.val:
            self.val_loader = build_data_loader(
                cfg, dataset.val, dl.TEST.BATCH_SIZE, dl.TEST.SAMPLER, tfm_test, is_train=False)
        self.test_loader = build_data_loader(
            cfg, dataset.test, dl.TEST.BATCH_SIZE, dl.TEST.SAMPLER, tfm_test, is_train=False)
        self.dataset = dataset
        self._num_classes = dataset.num_classes
        self._num_source_domains = len(cfg.DATASET.SOURCE_DOMAINS)
        self._lab2cname = dataset.lab2cname
        self.tfm_train, self.tfm_test = tfm_train, tfm_test
        if cfg.VERBOSE:
            self.show_dataset_summary(cfg)

    @property
    def num_classes(self):
        return self._num_classes

    @property
    def num_source_domains(self):
        return self._num_source_domains

    @property
    def lab2cname(self):
        return self._lab2cname

    @property
    def classnames(self):
        return self.dataset.classnames

    def show_dataset_summary(self, cfg):
        """Log Dassl's tabulate table (Dataset, # classes, # train_x, # val, # test)."""
        table = [["Dataset", cfg.DATASET.NAME]]
        if cfg.DATASET.SOURCE_DOMAINS:
            table.append(["Source", cfg.DATASET.SOURCE_DOMAINS])
        if cfg.DATASET.TARGET_DOMAINS:
            table.append(["Target", cfg.DATASET.TARGET_DOMAINS])
        table.append(["# classes", f"{self.num_classes:,}"])
        table.append(["# train_x", f"{len(self.dataset.train_x):,}"])
        if self.dataset.val:
            table.append(["# val", f"{len(self.dataset.val):,}"])
        table.append(["# test", f"{len(self.dataset.test):,}"])
        get_logger().info(tabulate(table))
