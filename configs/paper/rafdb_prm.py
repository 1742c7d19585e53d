"""The paper's prm row on rafdb: configs/rafdb_resnet50.py + recipes.with_method('prm')."""
from configs import rafdb_resnet50, recipes


def get_config():
    return recipes.with_method(rafdb_resnet50.get_config(), "prm")
