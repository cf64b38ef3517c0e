"""Tiny Hugging Face Transformers models for the zoo: BERT, GPT-2 and ViT with seeded random weights.

Built from configs (no download). The initializer range is larger than Transformers' default
(0.02), so that outputs are far from zero and a comparison means something. Each is a
`PreTrainedModel`: the zoo export and `bridge convert` save it with its inputs and outputs named.
"""

from __future__ import annotations

from typing import Any

VOCAB = 100
SEQ = 16
IMAGE = 32
_COMMON = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64,
           "initializer_range": 0.2}


def build_bert() -> Any:
    import torch
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(0)
    config = BertConfig(vocab_size=VOCAB, max_position_embeddings=64, num_labels=3, **_COMMON)
    return BertForSequenceClassification(config).eval()


def build_gpt2() -> Any:
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    config = GPT2Config(vocab_size=VOCAB, n_embd=32, n_layer=2, n_head=2, n_positions=64, initializer_range=0.2,
                        bos_token_id=0, eos_token_id=0)
    return GPT2LMHeadModel(config).eval()


def build_vit() -> Any:
    import torch
    from transformers import ViTConfig, ViTForImageClassification

    torch.manual_seed(0)
    config = ViTConfig(image_size=IMAGE, patch_size=8, num_channels=3, num_labels=5, **_COMMON)
    return ViTForImageClassification(config).eval()
