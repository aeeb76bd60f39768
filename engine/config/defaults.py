"""Default config: every Dassl 0.6.3 key the CLIP prompt-learning repos can touch, with Dassl's values,
plus the keys this project adds (marked ``# added``; meanings in docs/CONFIG.md).

Trainer nodes (``TRAINER.COOP`` ...) are added by ``trainers.config.extend_cfg``. There is no global
``TRAINER.PREC``: each trainer node carries its own ``PREC``.
"""
from yacs.config import CfgNode as CN

__all__ = ["get_cfg_default"]

_C = CN()

_C.OUTPUT_DIR = "./output"  # log.txt, checkpoints, predictions
_C.RESUME = ""  # resume directory; empty -> OUTPUT_DIR is searched for a checkpoint
_C.SEED = -1  # >= 0 seeds random/numpy/torch (0 included); negative: no seeding
_C.USE_CUDA = True  # CUDA iff available and True
_C.VERBOSE = True  # print dataset/trainer/evaluator names and the dataset table

###########################
# Input
###########################
_C.INPUT = CN()
_C.INPUT.SIZE = (224, 224)
_C.INPUT.NO_TRANSFORM = False  # no augmentation at all (only ToTensor)
_C.INPUT.TRANSFORMS = ()  # e.g. ("random_resized_crop", "random_flip", "normalize")
_C.INPUT.INTERPOLATION = "bilinear"  # bilinear, bicubic, nearest
_C.INPUT.PIXEL_MEAN = [0.485, 0.456, 0.406]
_C.INPUT.PIXEL_STD = [0.229, 0.224, 0.225]
_C.INPUT.CROP_PADDING = 4  # random_crop padding
_C.INPUT.RRCROP_SCALE = (0.08, 1.0)  # random_resized_crop scale range
_C.INPUT.CUTOUT_N = 1  # cutout: number of patches
_C.INPUT.CUTOUT_LEN = 16  # cutout: patch side
_C.INPUT.GN_MEAN = 0.0  # gaussian_noise mean
_C.INPUT.GN_STD = 0.15  # gaussian_noise std
_C.INPUT.RANDAUGMENT_N = 2  # randaugment: number of ops
_C.INPUT.RANDAUGMENT_M = 10  # randaugment: magnitude
_C.INPUT.COLORJITTER_B = 0.4  # colorjitter brightness
_C.INPUT.COLORJITTER_C = 0.4  # contrast
_C.INPUT.COLORJITTER_S = 0.4  # saturation
_C.INPUT.COLORJITTER_H = 0.1  # hue
_C.INPUT.RGS_P = 0.2  # random_gray_scale probability
_C.INPUT.GB_P = 0.5  # gaussian_blur probability
_C.INPUT.GB_K = 21  # gaussian_blur kernel size

###########################
# Dataset
###########################
_C.DATASET = CN()
_C.DATASET.ROOT = ""  # --root; made absolute by the datasets
_C.DATASET.NAME = ""  # registered dataset class name, e.g. "OxfordPets"
_C.DATASET.SOURCE_DOMAINS = ()
_C.DATASET.TARGET_DOMAINS = ()
_C.DATASET.NUM_LABELED = -1  # SSL only
_C.DATASET.NUM_SHOTS = -1  # K-shot few-shot subset; < 1 means all data
_C.DATASET.VAL_PERCENT = 0.1
_C.DATASET.STL10_FOLD = -1
_C.DATASET.CIFAR_C_TYPE = ""
_C.DATASET.CIFAR_C_LEVEL = 1
_C.DATASET.ALL_AS_UNLABELED = False
_C.DATASET.SUBSAMPLE_CLASSES = "all"  # all, base or new (CoCoOp base-to-novel); also set by extend_cfg
_C.DATASET.TEMPLATE = ""  # added: hand-crafted prompt template override, e.g. "a photo of a {}."
_C.DATASET.CSV_FILE = ""  # added: the CSV file of the generic CSV dataset
# added: a missing CoOp split file is generated (not the published one) instead of an error
_C.DATASET.ALLOW_GENERATED_SPLIT = False

###########################
# Dataloader
###########################
_C.DATALOADER = CN()
_C.DATALOADER.NUM_WORKERS = 4
_C.DATALOADER.K_TRANSFORMS = 1  # apply the train transform K times to one image
_C.DATALOADER.RETURN_IMG0 = False  # also return the un-augmented image
_C.DATALOADER.SKIP_BAD_IMAGES = False  # added: drop unreadable images (warning) instead of failing
_C.DATALOADER.CHECK_IMAGES = "header"  # added: before training, exists | header (+ trailer, cached) | decode
_C.DATALOADER.TRAIN_X = CN()
_C.DATALOADER.TRAIN_X.SAMPLER = "RandomSampler"
_C.DATALOADER.TRAIN_X.BATCH_SIZE = 32
_C.DATALOADER.TRAIN_X.N_DOMAIN = 0
_C.DATALOADER.TRAIN_X.N_INS = 16
_C.DATALOADER.TRAIN_U = CN()
_C.DATALOADER.TRAIN_U.SAME_AS_X = True
_C.DATALOADER.TRAIN_U.SAMPLER = "RandomSampler"
_C.DATALOADER.TRAIN_U.BATCH_SIZE = 32
_C.DATALOADER.TRAIN_U.N_DOMAIN = 0
_C.DATALOADER.TRAIN_U.N_INS = 16
_C.DATALOADER.TEST = CN()
_C.DATALOADER.TEST.SAMPLER = "SequentialSampler"
_C.DATALOADER.TEST.BATCH_SIZE = 32

###########################
# Model
###########################
_C.MODEL = CN()
_C.MODEL.INIT_WEIGHTS = ""  # path to pretrained weights loaded into the model
_C.MODEL.BACKBONE = CN()
_C.MODEL.BACKBONE.NAME = ""  # CLIP name, e.g. "ViT-B/16"
_C.MODEL.BACKBONE.PRETRAINED = True  # Dassl's bool, or an OpenCLIP pretrained tag for open_clip: names
_C.MODEL.BACKBONE.PATH = ""  # added: explicit CLIP weights file
_C.MODEL.BACKBONE.RANDOM_INIT = False  # added: seeded random weights (tests / offline smoke runs)
# added: speed/memory plan of the prompted text encoder (engine/backbone/text_plan.py, docs/CONFIG.md)
_C.MODEL.TEXT_ENCODER = CN()
_C.MODEL.TEXT_ENCODER.TRUNCATE = True  # run only up to the longest real prompt (exact; False = all 77)
_C.MODEL.TEXT_ENCODER.MEMORY_PLAN = "auto"  # chunked + checkpointed text passes: auto, on or off
_C.MODEL.TEXT_ENCODER.CHUNK_SIZE = 0  # rows (class prompts) per chunk when the plan is on; 0 = automatic
_C.MODEL.TEXT_ENCODER.AUTO_TOKENS = 16384  # auto: plan on above this many tokens (rows x positions) per pass
_C.MODEL.HEAD = CN()
_C.MODEL.HEAD.NAME = ""
_C.MODEL.HEAD.HIDDEN_LAYERS = ()
_C.MODEL.HEAD.ACTIVATION = "relu"
_C.MODEL.HEAD.BN = True
_C.MODEL.HEAD.DROPOUT = 0.0

###########################
# Optimization
###########################
_C.OPTIM = CN()
_C.OPTIM.NAME = "adam"  # sgd, adam, adamw, amsgrad, rmsprop, radam
_C.OPTIM.LR = 0.0003
_C.OPTIM.WEIGHT_DECAY = 5e-4
_C.OPTIM.MOMENTUM = 0.9
_C.OPTIM.SGD_DAMPNING = 0
_C.OPTIM.SGD_NESTEROV = False
_C.OPTIM.RMSPROP_ALPHA = 0.99
_C.OPTIM.ADAM_BETA1 = 0.9
_C.OPTIM.ADAM_BETA2 = 0.999
_C.OPTIM.STAGED_LR = False  # different LRs for NEW_LAYERS and the rest
_C.OPTIM.NEW_LAYERS = ()
_C.OPTIM.BASE_LR_MULT = 0.1  # LR multiplier of the non-new layers when STAGED_LR
_C.OPTIM.LR_SCHEDULER = "single_step"  # single_step, multi_step, cosine
_C.OPTIM.STEPSIZE = (-1,)  # step size(s); -1 / 0 -> MAX_EPOCH
_C.OPTIM.GAMMA = 0.1
_C.OPTIM.MAX_EPOCH = 10
_C.OPTIM.WARMUP_EPOCH = -1  # > 0 enables warmup
_C.OPTIM.WARMUP_TYPE = "linear"  # constant or linear
_C.OPTIM.WARMUP_CONS_LR = 1e-5
_C.OPTIM.WARMUP_MIN_LR = 1e-5
_C.OPTIM.WARMUP_RECOUNT = True  # restart the main schedule's epoch count after warmup

###########################
# Train
###########################
_C.TRAIN = CN()
_C.TRAIN.CHECKPOINT_FREQ = 0  # save every N epochs (0: only the last)
_C.TRAIN.PRINT_FREQ = 10  # log line every N batches
_C.TRAIN.WANDB_PROJECT = ""  # added: Weights & Biases project (train.py --wandb); empty = off
_C.TRAIN.COUNT_ITER = "train_x"

###########################
# Test
###########################
_C.TEST = CN()
_C.TEST.EVALUATOR = "Classification"
_C.TEST.PER_CLASS_RESULT = False
_C.TEST.COMPUTE_CMAT = False  # save a row-normalised confusion matrix to OUTPUT_DIR/cmat.pt
_C.TEST.NO_TEST = False
_C.TEST.SPLIT = "test"  # test or val
_C.TEST.FINAL_MODEL = "last_step"  # last_step or best_val
_C.TEST.SAVE_PREDICTIONS = False  # added: OUTPUT_DIR/predictions.npz (impath, label, logits)

###########################
# Trainer
###########################
_C.TRAINER = CN()
_C.TRAINER.NAME = ""  # registered trainer class name (or alias), e.g. "COMMA"


def get_cfg_default():
    """Return a fresh, mutable copy of the default config."""
    return _C.clone()
