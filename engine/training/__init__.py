"""The trainer's parts by job, composed by ``engine.trainer`` (which holds the loop and Dassl's hooks):
checkpoints (save/resume/load), the update step, safe stop on signals, evaluation, progress, RNG state."""
