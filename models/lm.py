"""Build, load and save causal language models.

Two ways in: `build_gpt2` makes the small default model from config (nothing
is ever downloaded), `load_causal_lm` opens any local Hugging Face causal-LM
directory a user brings. Both end with the same contract: a tokenizer with a
pad token and a model whose `config.pad_token_id` matches it.
"""

import functools
import inspect
import os
import shutil
import tempfile
from pathlib import Path

import torch
from accelerate.utils import extract_model_from_parallel
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    GPT2Config,
    GPT2LMHeadModel,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)
from transformers.activations import GELUTanh, NewGELUActivation

from instructflow.models.lm_size import GPT2Size

# Tried in order when a loaded tokenizer has no pad token.
# Pad tokens checkpoints ship in their vocabulary without naming one pad (Llama 3.1 reserves
# the last for padding), preferred to adding a token (which would resize the embeddings).
PAD_CANDIDATES = ("<|pad|>", "<pad>", "[PAD]", "<|finetune_right_pad_id|>")


def fused_activations(model: torch.nn.Module) -> torch.nn.Module:
    """Run GPT-2's activation as one fused op; in memory only (the saved config is unchanged).

    GPT-2's "gelu_new" is transformers' NewGELUActivation: the tanh
    approximation of GeLU written as five elementwise tensor ops, each a pass
    over the [tokens x 4 * hidden] activations and, in training, a tensor
    kept for backward. At these sizes that took a sixth of a PPO iteration
    (profiled, 1 thread). `GELUTanh` computes the same function in one op
    (`F.gelu(approximate="tanh")`); the results agree to float rounding, not
    bit for bit, which is why cache keys carry the code that loads models.
    """
    for parent in model.modules():
        for name, child in parent.named_children():
            if type(child) is NewGELUActivation:
                setattr(parent, name, GELUTanh())
    return model


def build_gpt2(tokenizer: PreTrainedTokenizerBase, size: GPT2Size, seed: int) -> GPT2LMHeadModel:
    """A freshly initialised GPT-2 whose vocabulary and special ids match `tokenizer`."""
    if tokenizer.pad_token_id is None or tokenizer.eos_token_id is None:
        raise ValueError("tokenizer needs both an eos and a pad token")
    config = GPT2Config(
        vocab_size=len(tokenizer),
        n_layer=size.n_layer,
        n_head=size.n_head,
        n_embd=size.n_embd,
        n_positions=size.n_positions,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        # The model is tiny and trained briefly; dropout would only cost
        # determinism (and make PPO's old/new log-probs disagree).
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        summary_first_dropout=0.0,
    )
    # The seed fixes the initial weights, independent of any earlier RNG use.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = GPT2LMHeadModel(config)
    return fused_activations(model)


def ensure_pad_token(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> None:
    """Give `tokenizer` a pad token and write its id into `model.config`.

    Preference order, and why:
    1. The tokenizer's own pad token, if it has one.
    2. A pad token that already exists in the vocabulary (e.g. `<|pad|>`):
       distinct from EOS, no change to the embedding matrix.
    3. A new `<|pad|>` token, if the model's embedding matrix already has a
       spare row for it (many checkpoints round the matrix up): distinct from
       EOS and the weights keep their shape.
    4. Otherwise EOS is reused as pad. Adding a token would resize the
       embeddings and change the model's vocabulary, which a user's model
       should not silently undergo. Sampling and log-probs are unaffected
       (they use attention masks and the first EOS); the reward model, which
       needs a pad distinct from EOS, gives itself one
       (`instructflow.models.reward_model.reward_model_from_causal_lm`).
    """
    if tokenizer.pad_token is None:
        vocab = tokenizer.get_vocab()
        existing = next((t for t in PAD_CANDIDATES if t in vocab), None)
        n_rows = model.get_input_embeddings().weight.shape[0]
        if existing is not None:
            tokenizer.pad_token = existing
        elif len(tokenizer) < n_rows:
            tokenizer.add_special_tokens({"pad_token": PAD_CANDIDATES[0]})
        else:
            tokenizer.pad_token = tokenizer.eos_token
    model.config.pad_token_id = tokenizer.pad_token_id
    if model.generation_config is not None:
        model.generation_config.pad_token_id = tokenizer.pad_token_id


def takes_logits_to_keep(model: torch.nn.Module) -> bool:
    """Whether the causal LM under any wrapper (DDP, PEFT) can run its output layer on some positions only."""
    return _forward_takes(_innermost_class(model), "logits_to_keep")


def no_cache(model: torch.nn.Module) -> dict[str, bool]:
    """Keywords that keep a training or scoring forward from filling a key/value cache.

    Hugging Face causal LMs build one on every forward unless told not to
    (config.use_cache is on for generation); a pass that does not generate
    would only fill it to throw it away. Models whose forward has no such
    switch get nothing.
    """
    return {"use_cache": False} if _forward_takes(_innermost_class(model), "use_cache") else {}


def _innermost_class(model: torch.nn.Module) -> type:
    inner = extract_model_from_parallel(model)
    if hasattr(inner, "get_base_model"):  # a PeftModel: its forward only passes keywords on
        inner = inner.get_base_model()
    return type(inner)


@functools.cache
def _forward_takes(model_class: type, keyword: str) -> bool:
    # Once per class: it is asked on every forward of the training and scoring loops.
    return keyword in inspect.signature(model_class.forward).parameters


def load_causal_lm(path: str | os.PathLike) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Open a local Hugging Face causal-LM directory (never touches the network)."""
    tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    # fp32 whatever the checkpoint's dtype (most published ones are bf16): weights and
    # optimizer state stay fp32, `precision` only autocasts (models/runtime.py); a bf16
    # weight would lose most small AdamW updates to rounding.
    model = AutoModelForCausalLM.from_pretrained(path, local_files_only=True, dtype=torch.float32)
    model = fused_activations(model)
    ensure_pad_token(model, tokenizer)
    return model, tokenizer


def save_model(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, path: str | os.PathLike
) -> None:
    """Save model and tokenizer (safetensors) to `path`, all or nothing.

    Everything is written into a temporary directory beside `path` (same
    filesystem, so the final rename is atomic) and renamed into place only
    once complete. A save killed half-way leaves at most a `.tmp-*` directory,
    never a half-written checkpoint at `path` that a later stage would load.
    When overwriting, the old checkpoint is moved aside first; a kill between
    the two renames leaves `path` absent (the old one is in `.old-*`), still
    never half-written.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{target.name}-", dir=target.parent))
    try:
        # transformers 5 always writes safetensors (the option was removed).
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        if target.exists():
            # A directory cannot be atomically replaced by another non-empty
            # one: move the old one aside first, then drop it once the new
            # one is in place.
            old = target.parent / f".old-{target.name}-{os.getpid()}"
            os.replace(target, old)
            os.replace(tmp, target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def context_length(model: PreTrainedModel) -> int:
    """The longest sequence `model` can read, whatever its architecture calls it."""
    config = model.config
    for name in ("max_position_embeddings", "n_positions", "n_ctx", "max_sequence_length"):
        value = getattr(config, name, None)
        if isinstance(value, int) and value > 0:
            return value
    raise ValueError(f"cannot tell the context length of {type(model).__name__}")
