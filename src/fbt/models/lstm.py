"""LSTM language model: the recurrent baseline.

Hochreiter & Schmidhuber, "Long Short-Term Memory" (Neural Computation, 1997); stacked as in
Zaremba et al., "Recurrent Neural Network Regularization" (arXiv 1409.2329), with dropout between layers.

Shapes: B batch, T time, D width (embedding and hidden size), L layers, V vocabulary.

State: a dict with the hidden and cell states after the last token, "h" and "c", each (L, B, D).
`ff`, `heads`, `span` and `context` of the config are unused. The LSTM keeps PyTorch's default init;
the embedding and the head get normal(0, 0.02) like the other models.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from fbt.models.config import ModelConfig
from fbt.models.family import ModelFamily, layers_line
from fbt.models.layers import checkpoint_group, init_weights
from fbt.models.pretrained import PretrainedLM


class LSTMLanguageModel(ModelFamily, PretrainedLM, nn.Module):
    state_batch_dims = {"h": 1, "c": 1}
    options = ()

    @classmethod
    def describe(cls, config: ModelConfig) -> str:
        return layers_line(config)

    @classmethod
    def forward_flops_per_token(cls, config: ModelConfig) -> int:
        D = config.dim
        # Four gates from the layer's input and its hidden state, (2D) x (4D) per layer.
        return config.layers * 2 * (2 * D) * (4 * D) + 2 * D * config.vocab_size

    @classmethod
    def state_tokens(cls, config: ModelConfig) -> int:
        return 1

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        D = config.dim
        self.embed = nn.Embedding(config.vocab_size, D)
        # nn.LSTM applies dropout to the outputs of every layer but the last.
        dropout = config.dropout if config.layers > 1 else 0.0
        self.lstm = nn.LSTM(D, D, config.layers, dropout=dropout, batch_first=True)
        self.head = nn.Linear(D, config.vocab_size, bias=False)
        init_weights(self, config.layers, config.init)
        self.checkpoint_activations = False  # see layers.run_layer

    def forward(self, tokens: torch.Tensor, state: dict | None = None) -> tuple[torch.Tensor, dict]:
        carried = None if state is None else (state["h"], state["c"])
        if carried is not None and carried[0].shape[1] != tokens.shape[0]:
            raise ValueError(f"state batch {carried[0].shape[1]} differs from input batch {tokens.shape[0]}")
        x = self.embed(tokens)  # (B, T, D)
        if self.checkpoint_activations and torch.is_grad_enabled():
            # Groups of steps, each recomputed in backward from its carried (h, c).
            outputs = []
            for chunk in x.split(checkpoint_group(x.shape[1]), dim=1):
                out, carried = checkpoint(self.lstm, chunk, carried, use_reentrant=False)
                outputs.append(out)
            x, (h, c) = torch.cat(outputs, dim=1), carried
        else:
            x, (h, c) = self.lstm(x, carried)  # h, c (L, B, D)
        return self.head(x), {"h": h.detach(), "c": c.detach()}
