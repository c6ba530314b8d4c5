"""One recipe per served model; the CLI and pipeline find them here by name."""

from training.recipes.autoencoder import AutoencoderRecipe
from training.recipes.bank import BankRecipe
from training.recipes.base import Recipe
from training.recipes.digits import DigitsRecipe
from training.recipes.flowers import FlowersRecipe

RECIPES: dict[str, Recipe] = {
    recipe.name: recipe
    for recipe in (DigitsRecipe(), FlowersRecipe(), BankRecipe(), AutoencoderRecipe())
}
