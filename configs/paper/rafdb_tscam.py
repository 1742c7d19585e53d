"""The paper's TS-CAM row on rafdb: DeiT-S (configs/rafdb_deit_small.py) + recipes.with_method('tscam')."""
from configs import rafdb_deit_small, recipes


def get_config():
    return recipes.with_method(rafdb_deit_small.get_config(), "tscam")
