"""A tiny HuggingFace ``BertForSequenceClassification``, built from a config (no download).

Batches are HuggingFace-style dicts (``input_ids``, ``attention_mask``, ``labels``) and the
model returns a ``SequenceClassifierOutput``: lossatlas reads both without an adapter
(``labels`` is the target, the other keys are the forward's keyword arguments, ``.logits``
the logits). Needs ``pip install lossatlas[hf]``.

    python examples/hf_bert.py --samples 256 --steps 11
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import Any

import torch
from torch.utils.data import DataLoader

import lossatlas


def tiny_bert(vocab: int = 64, hidden: int = 16, layers: int = 1) -> torch.nn.Module:
    from transformers import BertConfig, BertForSequenceClassification

    config = BertConfig(
        vocab_size=vocab,
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=2,
        intermediate_size=2 * hidden,
        max_position_embeddings=32,
        num_labels=2,
        attn_implementation="eager",  # plain ops, so vmap and forward-mode AD apply
    )
    return BertForSequenceClassification(config)


def token_batches(samples: int, length: int, vocab: int, seed: int = 0) -> list[dict[str, Any]]:
    """Random sentences with padding; the label says whether token 1 occurs in the sentence."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(2, vocab, (samples, length), generator=g)
    lengths = torch.randint(length // 2, length + 1, (samples,), generator=g)
    mask = (torch.arange(length) < lengths[:, None]).long()
    ids[torch.rand(samples, length, generator=g) < 0.1] = 1
    ids = ids * mask  # pad with 0
    labels = (ids == 1).any(dim=1).long()
    return [
        {"input_ids": ids[i], "attention_mask": mask[i], "labels": labels[i]}
        for i in range(samples)
    ]


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=256)
    parser.add_argument("--length", type=int, default=12)
    parser.add_argument("--hidden", type=int, default=16)
    parser.add_argument("--steps", type=int, default=11)
    parser.add_argument("--k", type=int, default=3)
    parser.add_argument("--directions", type=int, default=4)
    args = parser.parse_args(argv)

    torch.manual_seed(0)
    model = tiny_bert(hidden=args.hidden).eval()
    data = DataLoader(token_batches(args.samples, args.length, 64), batch_size=32)

    surf = lossatlas.surface(model, data, steps=args.steps, span=0.5, directions="gaussian")
    top = lossatlas.hessian_eigenvalues(model, data, k=args.k)
    width = lossatlas.tunnel_width(model, data, n_directions=args.directions, max_distance=20.0)
    # One layer's surface: only the classifier head spans the plane.
    head = lossatlas.surface(model, data, wrt="classifier", steps=args.steps, span=1.0)
    centre = tuple(s // 2 for s in surf.loss.shape)
    print(f"D = {surf.center.numel()} (classifier alone: {head.center.numel()})")
    print(f"loss at the centre {float(surf.loss[centre]):.4f}")
    print(f"top eigenvalues {top.tolist()}")
    print(f"tunnel width {width.mean:.3f} +- {width.std:.3f} ({width.censored} censored)")
    return {"model": model, "data": data, "surface": surf, "top": top, "width": width, "head": head}


if __name__ == "__main__":
    main()
