"""Reporting over finished runs: result tables (with caveat flags), plots, training curves, few-shot tables."""
