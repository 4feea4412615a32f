"""Convert pycls RegNet checkpoints to native safetensors files and validate them on ImageNet."""

__version__ = "0.1.0"
