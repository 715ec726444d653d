"""The manifest that describes a ``WorldModel``: what the exporter writes into a
bundle, and what a dream of the model in training is stepped by."""

from __future__ import annotations

from typing import Any

from export.manifest import Manifest
from models import WorldModel
from recording.format import control_names


def manifest_for(model: WorldModel, **extra: Any) -> Manifest:
    """The manifest that describes ``model`` (the rest of its fields in ``extra``)."""
    c = model.config
    names = list(control_names(c.control_dim, extra.pop("control_names", None)))
    return Manifest(model=c.to_dict(), height=c.height, width=c.width,
                    context_frames=c.context_frames, control_dim=c.control_dim,
                    control_names=names, output_mode=c.output_mode, latent_dim=c.latent_size,
                    latent_refresh=c.latent_refresh, latent_motion=model.latent_motion(),
                    **extra)
