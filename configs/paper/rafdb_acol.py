"""The paper's acol row on rafdb: configs/rafdb_resnet50.py + recipes.with_method('acol')."""
from configs import rafdb_resnet50, recipes


def get_config():
    return recipes.with_method(rafdb_resnet50.get_config(), "acol")
