"""Hydra's base configuration tree, installed as the package `coevolve.conf` (see setup.py)."""
