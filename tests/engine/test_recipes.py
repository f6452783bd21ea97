"""Optimiser recipes: a run's unset lr / weight decay / warm-up come from its optimiser's recipe."""
from __future__ import annotations

import pytest

from clmini.engine import TrainConfig
from clmini.engine.config import OPTIMIZERS, RECIPES


def test_the_default_optimiser_is_the_first_recipe_and_fills_every_setting():
    config = TrainConfig()
    assert config.optimizer == OPTIMIZERS[0] == next(iter(RECIPES))
    assert {name: getattr(config, name) for name in RECIPES[config.optimizer]} == dict(RECIPES[config.optimizer])


@pytest.mark.parametrize("optimizer", OPTIMIZERS)
def test_each_optimiser_gets_its_own_recipe_and_implied_equals_explicit(optimizer):
    implied = TrainConfig(optimizer=optimizer)
    explicit = TrainConfig(optimizer=optimizer, **RECIPES[optimizer])
    assert implied.hash == explicit.hash and implied.to_dict() == explicit.to_dict()
    assert implied.lr == RECIPES[optimizer]["lr"]


def test_a_setting_given_overrides_the_recipe_and_changes_the_run():
    other = TrainConfig(lr=RECIPES[OPTIMIZERS[0]]["lr"] * 2)
    assert other.lr == 2 * RECIPES[OPTIMIZERS[0]]["lr"] and other.hash != TrainConfig().hash
    # the other settings still come from the recipe
    assert other.weight_decay == RECIPES[OPTIMIZERS[0]]["weight_decay"]


def test_recipes_differ_between_optimisers_and_are_valid():
    assert len({tuple(sorted(r.items())) for r in RECIPES.values()}) == len(RECIPES)
    with pytest.raises(ValueError, match="lr"):
        TrainConfig(lr=0)
    with pytest.raises(ValueError, match="optimizer"):
        TrainConfig(optimizer="lamb")
