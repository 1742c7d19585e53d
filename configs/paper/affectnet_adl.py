"""The paper's adl row on affectnet: configs/affectnet_resnet50.py + recipes.with_method('adl')."""
from configs import affectnet_resnet50, recipes


def get_config():
    return recipes.with_method(affectnet_resnet50.get_config(), "adl")
