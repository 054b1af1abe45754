"""Policies for partially observed gridworlds: observation encoder -> memory core -> actor and critic heads.

The cores are the project's sequence models run one environment step at a time, so that an agent's memory is
the model's carried state: `feedback` (the paper's shared memory of every layer, FeedbackLayer), `transformer-xl`
(each layer attends to its own layer's cached inputs, XLLayer), `lstm`, and `mlp`, a memoryless control.

One interface for every core: `state = core.initial_state(B, device)` and
`outputs, state = core(inputs (T, B, D), state, starts (T, B))`, where starts[t, b] marks an observation that
begins a new episode: env b's memory is cleared before that step, so nothing leaks across episodes. The same
call serves acting (T = 1, one step per environment step) and PPO's update (T = the BPTT length, from the state
stored at the start of the stored sequence), so both compute the same function.

Transformer states hold a fixed window of S slots with a `visible` mask (B, S): slot i is the step S - i steps
back; a cleared or not yet written slot is invisible. States are dicts of tensors with the env dimension first.

Shapes: T time, B environments, D width, L layers, H heads, E head width, S span, A actions, V view size.
"""

from __future__ import annotations

import torch
from torch import nn

from fbt.models.config import ModelConfig
from fbt.models.feedback_step import FeedbackStack
from fbt.models.layers import init_position_keys, init_weights
from fbt.models.transformer_xl import XLLayer

# MiniGrid encodes a cell as (object type < 11, colour < 6, state < 3); one embedding table with offsets.
CELL_FIELDS = (11, 6, 3)


class ObservationEncoder(nn.Module):
    """MiniGrid's egocentric view (B, V, V, 3) and heading (B,) -> (B, D)."""

    def __init__(self, view: int, dim: int, cell_dim: int = 8):
        super().__init__()
        offsets = torch.tensor([0, CELL_FIELDS[0], CELL_FIELDS[0] + CELL_FIELDS[1]])
        self.register_buffer("offsets", offsets, persistent=False)
        self.register_buffer("largest", torch.tensor(CELL_FIELDS) - 1, persistent=False)
        self.cells = nn.Embedding(sum(CELL_FIELDS), cell_dim)
        self.project = nn.Linear(view * view * cell_dim, dim)
        self.heading = nn.Embedding(4, dim)

    def forward(self, image: torch.Tensor, direction: torch.Tensor) -> torch.Tensor:
        cells = self.cells(torch.minimum(image.long(), self.largest) + self.offsets).sum(-2)  # (B, V, V, cell_dim)
        return torch.relu(self.project(cells.flatten(1)) + self.heading(direction.long()))


class FeedbackCore(FeedbackStack):
    """The Feedback Transformer's step (models/feedback_step.py) over environment steps."""

    def __init__(self, config: ModelConfig):
        super().__init__(config)
        init_weights(self, config.layers, config.init)
        init_position_keys(self.pos_keys, config.init)

    def initial_state(self, batch: int, device: torch.device) -> dict:
        S, D = self.config.span, self.config.dim
        visible = torch.zeros(batch, S, dtype=torch.bool, device=device)
        return {"memory": torch.zeros(batch, S, D, device=device), "visible": visible}

    def forward(self, inputs: torch.Tensor, state: dict, starts: torch.Tensor) -> tuple[torch.Tensor, dict]:
        window = self.open_window(state["memory"], visible=state["visible"])  # S slots: (B, S, D), (B, S)
        outputs = []
        for t in range(inputs.shape[0]):
            window = window._replace(visible=window.visible & ~starts[t, :, None])
            x, window = self.step(inputs[t], window, t)
            outputs.append(self.norm_out(x))
        return torch.stack(outputs), {"memory": window.memory, "visible": window.visible}


class TransformerXLCore(nn.Module):
    """Transformer-XL over environment steps: layer l attends to its own inputs of the last S steps."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        self.layers = nn.ModuleList(XLLayer(config) for _ in range(config.layers))
        self.pos_keys = nn.Parameter(torch.zeros(config.head_width, config.span + 1))  # distances S .. 0
        self.norm_out = nn.LayerNorm(config.dim)
        init_weights(self, config.layers, config.init)
        init_position_keys(self.pos_keys, config.init)

    def initial_state(self, batch: int, device: torch.device) -> dict:
        L, S, D = self.config.layers, self.config.span, self.config.dim
        visible = torch.zeros(batch, S, dtype=torch.bool, device=device)
        return {"hidden": torch.zeros(batch, L, S, D, device=device), "visible": visible}

    def forward(self, inputs: torch.Tensor, state: dict, starts: torch.Tensor) -> tuple[torch.Tensor, dict]:
        S = self.config.span
        hidden, visible = list(state["hidden"].unbind(1)), state["visible"]  # L x (B, S, D), (B, S)
        projected = [layer.project(h) for layer, h in zip(self.layers, hidden, strict=True)]
        keys, values = [k for k, _ in projected], [v for _, v in projected]  # L x (B, H, S, E)
        # The query sits after the S cached slots: key j is at distance S - j, which is pos_keys column j.
        rel_index = torch.arange(S + 1, device=inputs.device)[None, :]  # (1, S + 1)
        outputs = []
        for t in range(inputs.shape[0]):
            visible = visible & ~starts[t, :, None]
            self_key = torch.full_like(visible[:, :1], not self.config.attend_self)
            masked = torch.cat([~visible, self_key], dim=1)[:, None, None, :]  # (B, 1, 1, S + 1)
            x = inputs[t][:, None]  # (B, 1, D)
            for index, layer in enumerate(self.layers):
                hidden[index] = torch.cat([hidden[index][:, 1:], x], dim=1)
                x, layer_k, layer_v = layer(x, keys[index], values[index], self.pos_keys, rel_index, masked)
                keys[index], values[index] = layer_k[:, :, 1:], layer_v[:, :, 1:]
            visible = torch.cat([visible[:, 1:], torch.ones_like(visible[:, :1])], dim=1)
            outputs.append(self.norm_out(x[:, 0]))
        return torch.stack(outputs), {"hidden": torch.stack(hidden, dim=1), "visible": visible}


class LSTMCore(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        self.lstm = nn.LSTM(config.dim, config.dim, config.layers)
        self.config = config

    def initial_state(self, batch: int, device: torch.device) -> dict:
        zeros = torch.zeros(batch, self.config.layers, self.config.dim, device=device)
        return {"h": zeros, "c": zeros.clone()}  # (B, L, D): env dimension first

    def forward(self, inputs: torch.Tensor, state: dict, starts: torch.Tensor) -> tuple[torch.Tensor, dict]:
        h, c = state["h"].transpose(0, 1), state["c"].transpose(0, 1)  # (L, B, D)
        outputs = []
        for t in range(inputs.shape[0]):
            keep = (~starts[t]).to(h.dtype)[None, :, None]
            out, (h, c) = self.lstm(inputs[t : t + 1], (h * keep, c * keep))
            outputs.append(out[0])
        return torch.stack(outputs), {"h": h.transpose(0, 1), "c": c.transpose(0, 1)}


class MLPCore(nn.Module):
    """No memory: each step sees only its own observation (the control for the memoryless bound)."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.blocks = nn.Sequential(
            *(nn.Sequential(nn.Linear(config.dim, config.dim), nn.ReLU()) for _ in range(config.layers))
        )

    def initial_state(self, batch: int, device: torch.device) -> dict:
        return {}

    def forward(self, inputs: torch.Tensor, state: dict, starts: torch.Tensor) -> tuple[torch.Tensor, dict]:
        return self.blocks(inputs), {}


CORES = {"feedback": FeedbackCore, "transformer-xl": TransformerXLCore, "lstm": LSTMCore, "mlp": MLPCore}


class Policy(nn.Module):
    """Actor-critic over a memory core: (images (T, B, V, V, 3), directions (T, B)) -> logits (T, B, A),
    values (T, B)."""

    def __init__(self, policy: str, view: int, actions: int, config: ModelConfig):
        super().__init__()
        self.kind = policy
        self.encoder = ObservationEncoder(view, config.dim)
        self.core = CORES[policy](config)
        self.actor = nn.Linear(config.dim, actions)
        self.critic = nn.Linear(config.dim, 1)
        # Small initial logits keep the first policy near uniform (as in common PPO references).
        nn.init.orthogonal_(self.actor.weight, gain=0.01)
        nn.init.zeros_(self.actor.bias)

    def initial_state(self, batch: int, device: torch.device) -> dict:
        return self.core.initial_state(batch, device)

    def forward(self, images: torch.Tensor, directions: torch.Tensor, state: dict, starts: torch.Tensor):
        T, B = directions.shape
        inputs = self.encoder(images.flatten(0, 1), directions.flatten()).unflatten(0, (T, B))  # (T, B, D)
        outputs, state = self.core(inputs, state, starts)  # (T, B, D)
        return self.actor(outputs), self.critic(outputs)[..., 0], state
