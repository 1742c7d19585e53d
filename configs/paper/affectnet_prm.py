"""The paper's prm row on affectnet: configs/affectnet_resnet50.py + recipes.with_method('prm')."""
from configs import affectnet_resnet50, recipes


def get_config():
    return recipes.with_method(affectnet_resnet50.get_config(), "prm")
