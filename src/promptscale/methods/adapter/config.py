"""`method.*` settings of adapter (its schema: every key with its default). Imports no torch:
the config schemas are registered at every start-up, ``--help`` included."""

from __future__ import annotations

from dataclasses import dataclass

from promptscale.config import MethodConfig


@dataclass
class AdapterConfig(MethodConfig):
    """Houlsby et al. 2019 bottleneck adapters (methods/adapter/model.py)."""

    name: str = "adapter"
    lr: float = 1e-3
    # bottleneck size m (Houlsby et al.: 8, 64 or 256)
    bottleneck: int = 64
    # houlsby: after attention and after the feed-forward sublayer; pfeiffer: after the feed-forward only
    placement: str = "houlsby"
    activation: str = "relu"
    # std of the down-projection's normal init (the up-projection starts at zero)
    init_std: float = 0.01
    # also train the backbone's layer norms (Houlsby et al. do)
    train_layer_norms: bool = True
