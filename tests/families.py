"""The registered model families, for the contract tests every family must meet."""

from fbt.models import family_names, model_class

FAMILIES = family_names()
LANGUAGE_MODELS = tuple(name for name in FAMILIES if not model_class(name).translates)
