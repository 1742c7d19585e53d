"""The paper's wildcat row on rafdb: configs/rafdb_resnet50.py + recipes.with_method('wildcat')."""
from configs import rafdb_resnet50, recipes


def get_config():
    return recipes.with_method(rafdb_resnet50.get_config(), "wildcat")
