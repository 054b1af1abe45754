"""An fbt language model as a `transformers` causal LM: FbtConfig, FbtCache and FbtForCausalLM.

The wrapped family is `FbtForCausalLM.model`, so the weights are `model.<our state_dict keys>`. Our carried state
(the cache of incremental decoding) travels between calls as `cache` (`past_key_values` in older transformers).
"""

from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F
from transformers import GenerationMixin, PretrainedConfig, PreTrainedModel
from transformers.modeling_outputs import CausalLMOutputWithPast

from fbt.errors import FbtError
from fbt.hf.shims import MODEL_SHIMS, write_shims
from fbt.models import ModelConfig, build_model, model_class

MODEL_TYPE = "fbt"
# How a copied directory finds the classes with trust_remote_code=True: shim modules beside the weights (shims.py).
AUTO_MAP = {"AutoConfig": "configuration_fbt.FbtConfig", "AutoModelForCausalLM": "modeling_fbt.FbtForCausalLM"}
# ModelConfig's fields under their own names, but for one that transformers reads as a sub-config's name.
RENAMED = {"decoder": "seq2seq_decoder"}
CONFIG_FIELDS = tuple(RENAMED.get(field.name, field.name) for field in dataclasses.fields(ModelConfig))


def config_fields(config: ModelConfig) -> dict:
    """The FbtConfig fields of a ModelConfig."""
    return {RENAMED.get(name, name): value for name, value in config.to_dict().items()}


def model_config_of(fields: dict) -> ModelConfig:
    """The ModelConfig of FbtConfig fields (a config.json's entries; others are ignored), validated."""
    original = {renamed: name for name, renamed in RENAMED.items()}
    return ModelConfig.from_dict({original.get(name, name): fields[name] for name in CONFIG_FIELDS if name in fields})


class FbtConfig(PretrainedConfig):
    """The fields of our ModelConfig, flat, beside transformers' own settings."""

    model_type = MODEL_TYPE

    def __init__(self, **kwargs):
        fields = {name: kwargs.pop(name) for name in CONFIG_FIELDS if name in kwargs}
        kwargs.setdefault("auto_map", dict(AUTO_MAP))
        kwargs.setdefault("tie_word_embeddings", False)  # the families tie nothing they do not tie themselves
        super().__init__(**kwargs)
        for name, value in config_fields(model_config_of(fields)).items():  # validated: one-line FbtErrors
            setattr(self, name, value)

    @classmethod
    def from_model_config(cls, config: ModelConfig, **kwargs) -> FbtConfig:
        return cls(**config_fields(config), **kwargs)

    def model_config(self) -> ModelConfig:
        return model_config_of({name: getattr(self, name) for name in CONFIG_FIELDS})


class FbtCache:
    """Our carried state (a dict of tensors, or None before the first call) and how many tokens it has read.

    Beam search reorders it with `reorder_cache`, along each tensor's batch dimension (the family's
    `state_batch_dims`)."""

    is_compileable = False
    is_croppable = False

    def __init__(self, batch_dims: dict[str, int], state: dict[str, torch.Tensor] | None = None, seen: int = 0):
        self.batch_dims = batch_dims
        self.state = state
        self.seen_tokens = seen

    def get_seq_length(self, layer_idx: int = 0) -> int:
        return self.seen_tokens

    def update(self, state: dict[str, torch.Tensor], new_tokens: int) -> None:
        self.state = state
        self.seen_tokens += new_tokens

    def reorder_cache(self, beam_idx: torch.LongTensor) -> None:
        """Keep, for every new row, the state of row `beam_idx[row]` (beam_idx: (B,))."""
        if self.state is None:
            return
        self.state = {
            name: tensor.index_select(self.batch_dims[name], beam_idx.to(tensor.device))
            for name, tensor in self.state.items()
        }


def check_attention_mask(attention_mask: torch.Tensor | None) -> None:
    """Our language models read unpadded streams: an attention mask may only say so."""
    if attention_mask is not None and not bool(attention_mask.bool().all()):
        raise FbtError("fbt models read unpadded sequences: the attention mask must be all ones (no padding)")


class FbtForCausalLM(PreTrainedModel, GenerationMixin):
    """One of our language-model families (feedback, transformer-xl, gpt, lstm, ...) with transformers' API."""

    config_class = FbtConfig
    main_input_name = "input_ids"

    def __init__(self, config: FbtConfig):
        super().__init__(config)
        model_config = config.model_config()
        if model_class(model_config.model).translates:
            raise FbtError(f"{model_config.model} is a translation model; only language models work as causal LMs")
        self.model = build_model(model_config)
        self.post_init()

    def _init_weights(self, module: torch.nn.Module) -> None:
        """Nothing: the family initialises its own weights (ModelConfig.init) and loading fills every one."""

    @classmethod
    def _supports_default_dynamic_cache(cls) -> bool:
        return False  # our cache is FbtCache, made by the first forward

    @classmethod
    def from_pretrained(cls, *args, **kwargs):
        """transformers' loader, refusing a directory that lacks weights (it would initialise them silently)."""
        wants_info = kwargs.pop("output_loading_info", False)
        model, info = super().from_pretrained(*args, output_loading_info=True, **kwargs)
        if info["missing_keys"]:
            raise FbtError(f"the weights miss {', '.join(sorted(info['missing_keys']))}")
        return (model, info) if wants_info else model

    def save_pretrained(self, save_directory, *args, **kwargs) -> None:
        """transformers' save, and the shim modules config.json's auto_map names."""
        super().save_pretrained(save_directory, *args, **kwargs)
        write_shims(save_directory, MODEL_SHIMS)

    def new_cache(self) -> FbtCache:
        return FbtCache(self.model.state_batch_dims)

    def forward(
        self,
        input_ids: torch.LongTensor,
        labels: torch.LongTensor | None = None,
        cache: FbtCache | None = None,
        use_cache: bool | None = None,
        attention_mask: torch.Tensor | None = None,
        return_dict: bool = True,
        past_key_values: FbtCache | None = None,
        num_items_in_batch: int | torch.Tensor | None = None,
        **kwargs,
    ) -> CausalLMOutputWithPast | tuple:
        """Logits (B, T, V) of input_ids (B, T), continuing the stream of `cache` when given (updated in place),
        and the next-token cross-entropy when labels (B, T) are given (-100 is ignored)."""
        check_attention_mask(attention_mask)
        if self.training and (after_update := getattr(self.model, "after_update", None)) is not None:
            after_update()  # adaptive spans' clamp: Trainer has no hook after its step, so the next forward clamps
        cache = cache if cache is not None else past_key_values
        if use_cache is None:
            use_cache = getattr(self.config, "use_cache", True)
        logits, state = self.model(input_ids, None if cache is None else cache.state)
        if logits.dtype in (torch.float16, torch.bfloat16):
            logits = logits.float()
        if use_cache or cache is not None:
            cache = cache if cache is not None else self.new_cache()
            cache.update(state, input_ids.shape[1])
        loss = None if labels is None else self.loss(logits, labels, num_items_in_batch)
        output = CausalLMOutputWithPast(loss=loss, logits=logits, cache=cache if use_cache else None)
        return output if return_dict else output.to_tuple()

    def loss(self, logits: torch.Tensor, labels: torch.Tensor, num_items_in_batch=None) -> torch.Tensor:
        """Position t predicts label t + 1; a sum over `num_items_in_batch` when the Trainer accumulates."""
        predicted = logits[:, :-1].reshape(-1, logits.shape[-1]).float()  # (B·(T-1), V)
        target = labels[:, 1:].reshape(-1).to(logits.device)  # (B·(T-1),)
        reduction = "mean" if num_items_in_batch is None else "sum"
        loss = F.cross_entropy(predicted, target, ignore_index=-100, reduction=reduction)
        if num_items_in_batch is not None:
            loss = loss / num_items_in_batch
        if self.training and (extra := getattr(self.model, "auxiliary_loss", lambda: None)()) is not None:
            loss = loss + extra  # adaptive spans: their penalty, as fbt train adds it
        return loss

    def prepare_inputs_for_generation(
        self,
        input_ids: torch.LongTensor,
        cache: FbtCache | None = None,
        past_key_values: FbtCache | None = None,
        attention_mask: torch.Tensor | None = None,
        use_cache: bool | None = None,
        **kwargs,
    ) -> dict:
        """With a cache, only the tokens it has not read (the last one, once decoding runs)."""
        cache = cache if cache is not None else past_key_values
        if cache is not None:
            input_ids = input_ids[:, cache.seen_tokens :]
        return {"input_ids": input_ids, "cache": cache, "attention_mask": attention_mask, "use_cache": use_cache}
