"""The reward model: the SFT network with its unembedding swapped for a scalar head.

`AutoModelForSequenceClassification(num_labels=1)` built from the SFT
directory keeps the trunk's weights, drops the LM head and adds a fresh
`score` head. The reward of a sequence is the score at its last real token,
which is the EOS that ends the response: the model has read the whole
prompt and response there.

Two readings of the same head:
- `rewards`: one scalar per sequence (RM training, PPO's episode reward).
- `token_values`: the score at every position (the PPO value function,
  initialised from the RM as in the paper).
Both include `config.reward_offset`, the bias that makes labeler
demonstrations score mean 0 (set after training, saved with the config).
"""

import copy
import os
from collections.abc import Sequence

import torch
import transformers
from transformers import (
    MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    PretrainedConfig,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from instructflow.models.batching import (
    encode_pair,
    pad_batch,
    position_ids_from_mask,
)
from instructflow.models.length_groups import in_row_order, length_groups
from instructflow.models.lm import PAD_CANDIDATES, fused_activations


def _ensure_distinct_pad(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> None:
    """Make pad a token of its own, so "last non-pad token" is the final EOS.

    HF's sequence-classification forward finds the last token by
    `input_ids != pad_token_id`; with pad == eos it would read the token
    before the EOS. If the tokenizer has no distinct pad, an existing pad-like
    token is used; else a new one, in a spare row of the embedding matrix if
    it has one; else the tokenizer's unknown token (Llama 2, Mistral: padded
    with it by common practice); else the new token's row is added (the RM is
    a new network anyway; policy token ids stay valid in it; with LoRA the
    adapter then saves the whole embedding matrix, as the base lacks the row).
    """
    if tokenizer.pad_token is None or tokenizer.pad_token_id == tokenizer.eos_token_id:
        vocab = tokenizer.get_vocab()
        existing = next((t for t in PAD_CANDIDATES if t in vocab), None)
        rows = model.get_input_embeddings().weight.shape[0]
        unk = tokenizer.unk_token_id
        if existing is not None and vocab[existing] != tokenizer.eos_token_id:
            tokenizer.pad_token = existing
        elif len(tokenizer) >= rows and unk is not None and unk != tokenizer.eos_token_id:
            tokenizer.pad_token = tokenizer.unk_token
        else:
            tokenizer.add_special_tokens({"pad_token": PAD_CANDIDATES[0]})
            if len(tokenizer) > rows:
                model.resize_token_embeddings(len(tokenizer))
    model.config.pad_token_id = tokenizer.pad_token_id


def reward_network_on_meta(config: PretrainedConfig) -> PreTrainedModel:
    """The reward model's network for a causal LM's config, on the meta device (no memory,
    no weights read): what `reward_model_from_causal_lm` builds, for checks and counts."""
    one_label = copy.deepcopy(config)
    one_label.num_labels = 1
    with torch.device("meta"):
        return AutoModelForSequenceClassification.from_config(one_label)


def reward_head_problem(config: PretrainedConfig) -> str | None:
    """Why a causal LM of this config cannot be the reward model's trunk, or None.

    The RM and PPO's value model are the architecture's sequence-classification
    class with a `score` head read at the last token, as TRL builds its reward
    and value models. About half of the causal-LM types in transformers have no
    such class (Granite, Cohere, OLMoE, Llama 4, ...), and an encoder's class
    (BERT's) has a pooled `classifier` instead; either failed only at the RM
    stage, after SFT had trained.
    """
    if type(config) not in MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING:
        return (
            f"model_type {config.model_type!r} has no sequence-classification class in "
            f"transformers {transformers.__version__}: the reward model and PPO's value model "
            "are one (a score head on the causal LM's trunk); use a model whose type has one "
            "(llama, mistral, qwen2, qwen3, gemma2, phi3, gpt2, gpt_neox, ...)"
        )
    try:
        model = reward_network_on_meta(config)
    except Exception as error:  # a config its own model class refuses (heads vs hidden size...)
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        return f"the reward model's class cannot be built from this config: {first}"
    if not isinstance(getattr(model, "score", None), torch.nn.Module):
        return (
            f"model_type {config.model_type!r} is not a decoder: its sequence-classification "
            f"class {type(model).__name__} has no `score` head read at the last token, which "
            "the reward model and PPO's value model need"
        )
    return None


def reward_model_from_causal_lm(
    path: str | os.PathLike, seed: int = 0
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """A scalar-head model from a local causal-LM directory (or reload a saved RM).

    From an SFT checkpoint the `score` head is new (initialised under `seed`);
    from a directory saved by `instructflow.models.lm.save_model` after RM training, the
    trained head and `reward_offset` come back as they were.
    """
    tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = AutoModelForSequenceClassification.from_pretrained(
            path,
            num_labels=1,
            local_files_only=True,
            dtype=torch.float32,  # as load_causal_lm
        )
    fused_activations(model)
    _ensure_distinct_pad(model, tokenizer)
    model.config.reward_offset = float(getattr(model.config, "reward_offset", 0.0))
    return model, tokenizer


def set_reward_offset(model: PreTrainedModel, offset: float) -> None:
    """Store the bias added to every reward (saved with the config by save_pretrained)."""
    model.config.reward_offset = float(offset)


def token_values(
    model: PreTrainedModel,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    position_ids: torch.Tensor | None = None,
) -> torch.Tensor:
    """[B, T] score head (plus offset) at every position.

    Uses the generic trunk (`model.base_model`: GPT-2's `transformer`,
    Llama's `model`, ...) and `model.score`, so any architecture with an HF
    sequence-classification class works. Position ids default to the ones
    implied by the attention mask, so left-padded inputs are read correctly.
    """
    if position_ids is None:
        position_ids = position_ids_from_mask(attention_mask)
    hidden = model.base_model(
        input_ids=input_ids,
        attention_mask=attention_mask,
        position_ids=position_ids,
        use_cache=False,
    ).last_hidden_state
    values = model.score(hidden).squeeze(-1)
    return values + float(getattr(model.config, "reward_offset", 0.0))


class TokenValues(torch.nn.Module):
    """token_values as a module forward, so Accelerate can wrap it like any model."""

    def __init__(self, model: PreTrainedModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return token_values(self.model, input_ids, attention_mask)


def last_token_index(attention_mask: torch.Tensor) -> torch.Tensor:
    """[B] column of the rightmost attended token (works for left and right padding)."""
    columns = torch.arange(attention_mask.shape[1], device=attention_mask.device)
    return (columns * attention_mask.long()).argmax(-1)


def rewards(
    model: PreTrainedModel, input_ids: torch.Tensor, attention_mask: torch.Tensor
) -> torch.Tensor:
    """[B] reward of each sequence: the score at its last attended token, plus the offset.

    The last token is found from the attention mask, not from pad ids, so it
    does not matter what id sits in a padded slot (a policy that pads with
    EOS, a rollout padded after its EOS). For right-padded inputs whose pad id
    is distinct this equals `model(...).logits + offset`.

    Rows are scored in groups of similar length (sorted by attended tokens),
    each cut to the columns its rows attend: a reward-model batch padded to
    its longest sequence spends much of its work on padding (K responses of a
    prompt differ in length, prompts too). No attended token sees a cut
    column (the mask hides it, and positions come from the mask), so each
    reward is what one padded batch gives, up to float rounding.
    """
    groups = length_groups(attention_mask)
    scores = []
    for group in groups:
        columns = slice(group.first, group.end)
        mask, ids = attention_mask[group.rows, columns], input_ids[group.rows, columns]
        values = token_values(model, ids, mask)
        scores.append(values.gather(1, last_token_index(mask).unsqueeze(1)).squeeze(1))
    return in_row_order(groups, scores)


def encode_for_reward(
    tokenizer: PreTrainedTokenizerBase,
    prompts: Sequence[str],
    responses: Sequence[str],
    max_len: int,
    cut_responses: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded (input_ids, attention_mask) of prompt + response + EOS, as in SFT.

    A row longer than `max_len` raises, unless `cut_responses`: a sampled response scored
    from its text can take more tokens than were sampled (bytes of one character sampled
    as separate tokens decode to U+FFFD, three bytes when encoded again), so scoring
    samples cuts such a response's end, its EOS kept. Rows to train on are checked to fit
    before any training: one that does not is a bug, not a sample to cut.
    """
    if len(prompts) != len(responses):
        raise ValueError("prompts and responses must have the same length")
    sequences = [
        encode_pair(tokenizer, p, r, max_len, cut=cut_responses)[0]
        for p, r in zip(prompts, responses, strict=True)
    ]
    input_ids = pad_batch(sequences, tokenizer.pad_token_id)
    attention_mask = pad_batch([[1] * len(s) for s in sequences], 0)
    return input_ids, attention_mask
