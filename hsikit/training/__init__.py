"""Training of hsikit models: paper recipes, data per model input kind, and a Lightning fit loop."""

from hsikit.training.recipes import RECIPES, Recipe, recipe_for, recipe_names

__all__ = ["RECIPES", "Recipe", "recipe_for", "recipe_names"]
