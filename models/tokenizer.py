"""Train the byte-level BPE tokenizer used when no base model is given.

Why these choices:
- Byte-level BPE never produces an unknown token, so any text (a user's own
  prompts included) can be encoded and decoded losslessly.
- Every digit is its own token. Numbers then share one small vocabulary of
  ten symbols instead of arbitrary merged chunks ("12", "123"), which makes
  arithmetic learnable for a tiny model (see DESIGN.md section 2).
- `<|pad|>` is a separate token from `<|endoftext|>`: the reward model reads
  the last non-pad token, and that must be the EOS that ends a response.
"""

from collections.abc import Iterable

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerBase, PreTrainedTokenizerFast

EOS_TOKEN = "<|endoftext|>"
PAD_TOKEN = "<|pad|>"


def train_tokenizer(texts: Iterable[str], vocab_size: int) -> PreTrainedTokenizerFast:
    """Train a byte-level BPE tokenizer on `texts`, deterministic for the same texts.

    The special tokens get ids 0 (`<|endoftext|>`, also BOS) and 1 (`<|pad|>`).
    `vocab_size` is an upper bound: a small corpus may yield fewer merges.
    """
    backend = Tokenizer(models.BPE())
    # Digits are split before the byte-level step so no merge can ever join them.
    backend.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Digits(individual_digits=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False),
        ]
    )
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[EOS_TOKEN, PAD_TOKEN],
        # All 256 bytes are in the vocabulary, so nothing is ever out of vocabulary.
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    # A list, not a generator: the trainer can then count and the order is fixed.
    backend.train_from_iterator(list(texts), trainer=trainer)

    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        eos_token=EOS_TOKEN,
        bos_token=EOS_TOKEN,
        pad_token=PAD_TOKEN,
        padding_side="right",
    )
    return tokenizer


def tokenizer_digest(tokenizer) -> str:
    """A short digest of what a tokenizer maps text to: same digest, same token ids.

    Two policies may share token ids (and so be scored token by token) only
    when their digests agree; otherwise their texts must be re-encoded.
    A fast tokenizer is digested from its full serialisation (vocabulary,
    merges, normaliser, special tokens); a slow one from its vocabulary.
    """
    import hashlib
    import json

    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        blob = backend.to_str()
    else:
        blob = json.dumps(sorted(tokenizer.get_vocab().items()))
    specials = json.dumps(
        [tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id], default=str
    )
    return hashlib.sha256((blob + specials).encode()).hexdigest()[:16]


def shares_vocabulary(a: PreTrainedTokenizerBase, b: PreTrainedTokenizerBase) -> bool:
    """True if every token of `a` has the same id in `b` (b may add tokens, e.g. a pad)."""
    vocab_b = b.get_vocab()
    return all(vocab_b.get(token) == index for token, index in a.get_vocab().items())
