"""Models and data as a researcher brings them: dict batches, keyword-argument models with
dict outputs. Shared by the batch-interface tests of the trainers and the path fitters."""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.utils.data import Dataset


class DictRows(Dataset):
    """Rows of named tensors; the default collate makes dict batches of them."""

    def __init__(self, **columns: Tensor) -> None:
        self.columns = columns

    def __len__(self) -> int:
        return len(next(iter(self.columns.values())))

    def __getitem__(self, i: int) -> dict[str, Tensor]:
        return {k: v[i] for k, v in self.columns.items()}


class TinyText(nn.Module):
    """A bag-of-embeddings classifier called as HuggingFace models are: keyword arguments in,
    ``{"logits": ...}`` out."""

    def __init__(self, vocab: int = 11, width: int = 6, classes: int = 3) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, width)
        self.head = nn.Linear(width, classes)

    def forward(self, input_ids: Tensor, attention_mask: Tensor) -> dict[str, Tensor]:
        mask = attention_mask.unsqueeze(-1).to(self.embed.weight.dtype)
        pooled = (self.embed(input_ids) * mask).sum(1) / mask.sum(1).clamp_min(1)
        return {"logits": self.head(torch.tanh(pooled))}


def text_data(n: int = 40, length: int = 5) -> dict[str, Tensor]:
    g = torch.Generator().manual_seed(0)
    labels = torch.arange(n) % 3
    ids = torch.randint(1, 11, (n, length), generator=g)
    ids[:, 0] = labels + 1  # a learnable cue
    mask = torch.ones(n, length, dtype=torch.long)
    mask[::2, -2:] = 0
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}
