"""The TinyDreams world model: an action-conditioned next-frame predictor.

A convolutional ResNet tokenizer turns the last K frames into tokens, an MLP turns
the controls into an action token, a transformer mixes them (concatenated or
interleaved cross-attention, optional register tokens), and a CNN ResNet decoder
turns the image tokens back into the next RGB frame.
"""

from models.blocks import ResNetBlock
from models.config import WorldModelConfig
from models.discriminator import Discriminator, DiscriminatorConfig
from models.presets import preset, preset_names
from models.world_model import WorldModel

__all__ = [
    "Discriminator",
    "DiscriminatorConfig",
    "ResNetBlock",
    "WorldModel",
    "WorldModelConfig",
    "preset",
    "preset_names",
]
