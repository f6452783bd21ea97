"""The one registry of losses by name (run configs, the command line, the symbolic oracle)."""
from __future__ import annotations

from clmini.losses.contrastive import (DCL, DCLW, MACL, SINCERE, DySTreSS, HardContrastive, InfoNCE,
                                       LearnedTemperature, ScheduledTemperature, SupCon, TemperatureFree)
from clmini.losses.core import PairwiseLoss
from clmini.losses.simple import HardSimple, SimpleLoss

LOSSES: dict[str, type[PairwiseLoss]] = {
    "infonce": InfoNCE,
    "temperature-free": TemperatureFree,
    "dystress": DySTreSS,
    "supcon": SupCon,
    "sincere": SINCERE,
    "simple": SimpleLoss,
    "hard": HardContrastive,
    "hard-simple": HardSimple,
    # the temperature's rivals (chapter 5)
    "dcl": DCL,
    "dclw": DCLW,
    "macl": MACL,
    "learned-temperature": LearnedTemperature,
    "scheduled-temperature": ScheduledTemperature,
}


def make_loss(name: str, **kwargs) -> PairwiseLoss:
    """Build a loss by its name in :data:`LOSSES` (used by the command line and the run configs)."""
    if name not in LOSSES:
        raise ValueError(f"loss must be one of {sorted(LOSSES)}, got {name!r}")
    return LOSSES[name](**kwargs)
