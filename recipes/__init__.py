"""Experiment presets (`recipe=NAME`), installed as the package `coevolve.recipes` (see setup.py)."""
