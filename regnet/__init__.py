"""Native PyTorch RegNet: the pycls design space, modules, model zoo and safetensors loading."""

from regnet.config import RegNetConfig, StageConfig
from regnet.design import RegNetParams
from regnet.metadata import WeightsFileError
from regnet.model import RegNet
from regnet.transforms import Transform, transforms
from regnet.weights import is_safetensors, load, read_header, read_metadata, save
from regnet.zoo import ZOO, ZooModel, canonical_name, pycls_name, zoo_config, zoo_model, zoo_models

__all__ = [
    "ZOO",
    "RegNet",
    "RegNetConfig",
    "RegNetParams",
    "StageConfig",
    "Transform",
    "WeightsFileError",
    "ZooModel",
    "canonical_name",
    "create_model",
    "is_safetensors",
    "load",
    "pycls_name",
    "read_header",
    "read_metadata",
    "save",
    "transforms",
    "zoo_config",
    "zoo_model",
    "zoo_models",
]


def create_model(name: str, num_classes: int = 1000) -> RegNet:
    """A zoo RegNet (`regnetx_4.0gf` or `RegNetX-4.0GF`) with pycls's weight initialisation, in train mode."""
    return RegNet(zoo_config(name, num_classes)).init_weights()
