"""Tiny Hugging Face models built from config (no hub), for tests that need a user's own base model."""

from pathlib import Path

from transformers import LlamaConfig, LlamaForCausalLM

from instructflow.models.tokenizer import train_tokenizer


def tiny_llama(folder: Path, texts: list[str], vocab_size: int = 400) -> Path:
    """A 2-layer Llama and a BPE tokenizer trained on `texts`, saved to `folder` as a local checkpoint."""
    tokenizer = train_tokenizer(texts, vocab_size=vocab_size)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    LlamaForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder
