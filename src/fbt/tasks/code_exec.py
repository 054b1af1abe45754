"""`code-exec`: the variable-tracking task; targets are aligned labels, scored only at `print` answers."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import nn

from fbt.data.code_exec import TOKEN_TO_ID, VOCAB, load_code_exec_split
from fbt.data.splits import is_code_exec_dir
from fbt.errors import FbtError
from fbt.tasks.base import EvalSettings, SamplingSettings, Task

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

    from fbt.training.config import TrainConfig


class CodeExecTask(Task):
    vocab_size = len(VOCAB)
    valid_metric = "valid_accuracy"
    higher_is_better = True
    test_metric = "accuracy"
    example_prompt = "x = 3 ; x ++ ; print x ;"

    @classmethod
    def recognises_data(cls, path: str | Path) -> bool:
        return is_code_exec_dir(path)

    @classmethod
    def transformers_tokenizer(cls, tokenizer_file: Path | None) -> PreTrainedTokenizerBase:
        """A word per id: the program's tokens, space-separated."""
        from fbt.hf.tokenization import word_tokenizer

        return word_tokenizer(VOCAB)

    def load_split(self, data: str, split: str, config: TrainConfig) -> tuple[torch.Tensor, torch.Tensor]:
        return load_code_exec_split(data, split)

    def document_starts(self, inputs: torch.Tensor) -> torch.Tensor:
        """A program starts at 0 and after each END but the stream's last token."""
        after_ends = (inputs == TOKEN_TO_ID["END"]).nonzero().flatten() + 1
        return torch.cat([after_ends.new_zeros(1), after_ends[after_ends < inputs.numel()]])

    @classmethod
    def floors(cls, data: str, split: str) -> dict[str, float]:
        """The heuristics of code_exec_heuristics.py: repeating the last print, counting while ignoring ifs."""
        from fbt.data.code_exec_heuristics import HEURISTIC_LABELS, heuristic_accuracies

        if not is_code_exec_dir(data):
            return {}
        floors = heuristic_accuracies(*load_code_exec_split(data, split))
        return {HEURISTIC_LABELS[name]: value for name, value in floors.items()}

    def decoded_scores(
        self, model: nn.Module, config: TrainConfig, data: str, split: str, settings: EvalSettings
    ) -> dict:
        """The split's heuristic floors beside the accuracy: what it must beat to show the model tracks
        variables rather than repeating or counting."""
        from fbt.data.code_exec_heuristics import heuristic_accuracies

        floors = heuristic_accuracies(*load_code_exec_split(data, split))
        return {f"floor_{name}": value for name, value in floors.items()}

    @torch.no_grad()
    def breakdown(self, model: nn.Module, config: TrainConfig, data: str, split: str, settings: EvalSettings) -> dict:
        """The accuracy of the split's prints by each feature of code_exec_features.py, read as `fbt eval` reads
        them (rows of whole programs, state carried), so that its overall accuracy is the evaluation's."""
        from fbt.data.code_exec_features import FEATURES, bucket_order, print_features
        from fbt.progress import progress_display

        (stream,) = self.streams(config, data, (split,), settings.batch, settings.segment, whole_documents=True)
        device = next(model.parameters()).device
        predicted, state = [], None
        segments = progress_display(
            stream.iterate_once(),
            total=stream.segments_per_pass(),
            desc="breakdown",
            unit="seg",
            leave=False,
            shown=settings.progress,
        )
        for inputs, _ in segments:
            logits, state = model(inputs.to(device), state)
            predicted.append(logits.argmax(-1).cpu())
        predictions = torch.cat(predicted, dim=1)  # (B, L), as stream.inputs
        counts: dict[str, dict[str, list[int]]] = {feature: {} for feature in FEATURES}
        total = 0
        for row_inputs, row_targets, row_predictions in zip(stream.inputs, stream.targets, predictions):
            tokens = [VOCAB[i] for i in row_inputs.tolist()]
            begin = 0
            for end in (row_inputs == TOKEN_TO_ID["END"]).nonzero().flatten().tolist():  # one program per END
                for found in print_features(tokens[begin : end + 1]):
                    answer = TOKEN_TO_ID[str(found.value)]
                    if row_targets[begin + found.index] != answer:
                        raise FbtError(f"{data} {split}: a program's labels disagree with running it")
                    correct = int(row_predictions[begin + found.index] == answer)
                    total += 1
                    for feature, bucket in found.buckets().items():
                        tally = counts[feature].setdefault(bucket, [0, 0])
                        tally[0], tally[1] = tally[0] + correct, tally[1] + 1
                begin = end + 1
        if total == 0:
            raise FbtError(f"{data} {split} has no prints to break down")
        table = [  # lists, which keep their order in JSON
            {
                "feature": feature,
                "title": FEATURES[feature],
                "buckets": [
                    {"bucket": bucket, "accuracy": tally[0] / tally[1], "examples": tally[1]}
                    for bucket, tally in sorted(buckets.items(), key=lambda item: bucket_order(feature, item[0]))
                ],
            }
            for feature, buckets in counts.items()
        ]
        return {"breakdown": table}

    def encode(self, prompt: str) -> list[int]:
        ids = []
        for token in prompt.split():
            if token not in TOKEN_TO_ID:
                raise FbtError(f"token {token!r} is not in the code-exec vocabulary ({' '.join(VOCAB)})")
            ids.append(TOKEN_TO_ID[token])
        return ids

    def decode(self, ids: list[int]) -> str:
        return " ".join(VOCAB[i] for i in ids)

    def generate(self, model: nn.Module, prompt: str, sampling: SamplingSettings) -> str:
        """The prompt program with the model's answer at every print (the model labels, it does not continue)."""
        if not prompt.strip():
            raise FbtError("a code-exec run answers a program: pass one as --prompt, e.g. 'x = 3 ; print x ;'")
        program = torch.tensor([self.encode(prompt)], device=next(model.parameters()).device)  # (1, T)
        return self.answer_program(model, program)

    @torch.no_grad()
    def answer_program(self, model: nn.Module, program: torch.Tensor) -> str:
        """Each print of `program` (1, T) followed by its predicted value in brackets."""
        logits, _ = model(program)
        predictions = logits[0].argmax(-1).tolist()
        tokens = self.decode(program[0].tolist()).split()
        shown, in_print = [], False
        for token, predicted in zip(tokens, predictions, strict=True):
            shown.append(token)
            if token == "print":
                in_print = True
            elif token == ";" and in_print:
                shown.append(f"[{self.decode([predicted])}]")
                in_print = False
        return " ".join(shown)
