"""Saving, loading and generating like Hugging Face models: `save_pretrained`, `from_pretrained`, `generate`.

A pretrained directory holds model.safetensors (the state_dict), config.json (the flat ModelConfig) and
generation_config.json (the defaults of `generate`). `from_pretrained` also reads a run directory written by
`fbt train` (its latest checkpoint) or a checkpoint directory, whose config.json is {"model": ..., "train": ...}.
Loading reads safetensors and JSON only: it never executes code.
"""

from __future__ import annotations

from pathlib import Path

import torch

from fbt import sampling
from fbt.checkpoint import find_checkpoint
from fbt.decoding import check_search, max_translation_tokens, search
from fbt.errors import FbtError
from fbt.models.config import ModelConfig
from fbt.rundir import (
    CHECKPOINTS,
    CONFIG,
    GENERATION_CONFIG,
    WEIGHTS,
    finite_weights,
    load_weights,
    read_json,
    write_json_atomic,
    write_tensors_atomic,
)


class PretrainedModel:
    """Mixed into every model family (an nn.Module with a `config`). The two kinds below add `generate`, its
    defaults (`generation_defaults`) and their check (`check_generation`)."""

    generation_defaults: dict
    generation_config: dict | None = None  # what from_pretrained read; None: the defaults

    def generation_settings(self, **given: object) -> dict:
        """The generation config, with the given values that are not None in place of its own, checked."""
        settings = {**self.generation_defaults, **(self.generation_config or {})}
        settings.update({name: value for name, value in given.items() if value is not None})
        unknown = sorted(set(settings) - set(self.generation_defaults))
        if unknown:
            raise FbtError(
                f"unknown generation settings {', '.join(unknown)}; known: {', '.join(self.generation_defaults)}"
            )
        for name, value in settings.items():
            if value is None and self.generation_defaults[name] is None:
                continue
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise FbtError(f"{name} must be a number, got {value!r}")
        self.check_generation(settings)
        return settings

    def save_pretrained(self, directory: str | Path, generation_config: dict | None = None) -> None:
        """Write the weights, config.json and generation_config.json (this model's generation config, updated by
        `generation_config`) into `directory`, each file atomically."""
        directory = Path(directory)
        settings = self.generation_settings(**(generation_config or {}))
        if (directory / CHECKPOINTS).is_dir():
            raise FbtError(f"{directory} holds a training run; save the model to another directory")
        weights = finite_weights(self, f"to {directory}")
        directory.mkdir(parents=True, exist_ok=True)
        write_tensors_atomic(directory / WEIGHTS, weights)
        write_json_atomic(directory / GENERATION_CONFIG, settings)
        write_json_atomic(directory / CONFIG, self.config.to_dict())

    @classmethod
    def from_pretrained(cls, path: str | Path, device: str | torch.device = "cpu") -> PretrainedModel:
        """The model saved in `path` (see the module's docstring), on `device`, in eval mode."""
        # Imported here: fbt.models imports the families, which import this module.
        from fbt.models import build_model, model_class

        path = Path(path)
        if not path.is_dir():
            raise FbtError(f"no such model directory: {path}")
        directory = find_checkpoint(path) if (path / CHECKPOINTS).is_dir() else path
        config = read_model_config(directory / CONFIG)
        family = model_class(config.model)
        if not issubclass(family, cls):
            raise FbtError(
                f"{path} holds a {config.model} model ({family.__name__}), not a {cls.__name__}; "
                "fbt.models.from_pretrained loads any family"
            )
        model = build_model(config)
        load_weights(model, directory)
        if (directory / GENERATION_CONFIG).is_file():
            model.generation_config = read_json(directory / GENERATION_CONFIG)
            try:
                model.generation_settings()
            except FbtError as error:
                raise FbtError(f"{directory / GENERATION_CONFIG} is invalid: {error}") from None
        return model.to(device).eval()

    def as_batch(self, ids: torch.Tensor | list[int]) -> torch.Tensor:
        """Token ids (B, L) on the model's device; a list of ints or a 1-D tensor is one sequence."""
        batch = torch.as_tensor(ids, device=next(self.parameters()).device)
        batch = batch[None] if batch.dim() == 1 else batch
        if batch.dim() != 2 or not batch.numel() or batch.is_floating_point():
            raise FbtError(f"expected token ids (batch, length) or a list of ints, got shape {tuple(batch.shape)}")
        if batch.min() < 0 or batch.max() >= self.config.vocab_size:
            raise FbtError(f"token ids must be in 0..{self.config.vocab_size - 1}")
        return batch.long()


class PretrainedLM(PretrainedModel):
    """The language models: `generate` samples as `fbt generate` does, with its defaults."""

    generation_defaults = {"max_new_tokens": 200, "temperature": 1.0, "top_k": 0, "top_p": 1.0}

    @staticmethod
    def check_generation(settings: dict) -> None:
        for name in ("max_new_tokens", "top_k"):
            if not isinstance(settings[name], int):
                raise FbtError(f"{name} must be an integer, got {settings[name]!r}")
        sampling.check_sampling(
            settings["max_new_tokens"], settings["temperature"], settings["top_k"], settings["top_p"]
        )

    def generate(
        self,
        input_ids: torch.Tensor | list[int],
        max_new_tokens: int | None = None,
        temperature: float | None = None,
        top_k: int | None = None,
        top_p: float | None = None,
        seed: int | None = None,
    ) -> torch.Tensor:
        """The prompts (B, P), or one prompt as a list of ints, followed by their sampled continuations: (B, P + N).
        None takes the generation config's value; `seed` seeds a generator on the model's device."""
        settings = self.generation_settings(
            max_new_tokens=max_new_tokens, temperature=temperature, top_k=top_k, top_p=top_p
        )
        prompt = self.as_batch(input_ids)
        generator = None if seed is None else torch.Generator(prompt.device).manual_seed(seed)
        return torch.cat([prompt, sampling.generate(self, prompt, generator=generator, **settings)], dim=1)


class PretrainedSeq2Seq(PretrainedModel):
    """The translation model: `generate` searches as `fbt translate` does (decoding.py), with its defaults."""

    # max_new_tokens None: as fbt translate, twice the source length + 10, within the decoder's positions
    generation_defaults = {"max_new_tokens": None, "beam": 1, "length_penalty": 1.0}

    @staticmethod
    def check_generation(settings: dict) -> None:
        limit = settings["max_new_tokens"]
        if limit is not None and (not isinstance(limit, int) or limit < 0):
            raise FbtError(f"max_new_tokens must be an integer >= 0, got {limit!r}")
        check_search(settings["beam"], settings["length_penalty"])

    def generate(
        self,
        source_ids: torch.Tensor | list[int],
        max_new_tokens: int | None = None,
        beam: int | None = None,
        length_penalty: float | None = None,
    ) -> list[list[int]]:
        """Translations of sources (B, S), each ending in </s> and padded with <pad> as in training (or one source
        as a list of ints): B lists of target ids, without <s> and </s>. None takes the generation config's value."""
        settings = self.generation_settings(max_new_tokens=max_new_tokens, beam=beam, length_penalty=length_penalty)
        source = self.as_batch(source_ids)
        limit = settings["max_new_tokens"]
        if limit is None:
            limit = max_translation_tokens(self.config.context, source.shape[1])
        was_training = self.training
        self.eval()
        translations = search(self, source, limit, settings["beam"], settings["length_penalty"])
        self.train(was_training)
        return translations


def read_model_config(path: Path) -> ModelConfig:
    """The ModelConfig in a config.json: flat (save_pretrained) or a run's {"model": ..., "train": ...}."""
    data = read_json(path)
    data = data["model"] if isinstance(data.get("model"), dict) else data
    try:
        return ModelConfig.from_dict(data)
    except (FbtError, TypeError, ValueError) as error:
        raise FbtError(f"{path} is corrupt: {error}") from None


def from_pretrained(path: str | Path, device: str | torch.device = "cpu") -> PretrainedModel:
    """Whichever model family `path` holds (see PretrainedModel.from_pretrained)."""
    return PretrainedModel.from_pretrained(path, device)
