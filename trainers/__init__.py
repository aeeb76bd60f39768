"""Prompt-learning methods; importing this package registers every trainer in TRAINER_REGISTRY."""
from trainers import cocoop, comma, coop, ivlp, maple, vpt, zsclip  # noqa: F401  (registration)
