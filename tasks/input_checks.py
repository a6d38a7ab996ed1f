"""Checks of a run's inputs that need more than one table's schema.

Each function returns a list of `Problem`s (file, row, field, message) and
never raises on bad input: instructflow.tasks.preflight gathers them all into one refusal.

- `base_model_problems`: a base-model directory is one `AutoModelForCausalLM`
  can load (config, weights, tokenizer), read without loading the weights
  (each weight file: instructflow.tasks.weight_files);
- `human_comparisons_problems`: a file of human comparisons the reward-model
  stage can train on (schema, train and valid rows, one K, no test users);
- `length_problems`: every row fits the model's context, as the stages
  encode it (instructflow.tasks.lengths.LengthCheck);
- `gold_key_problems`: every prompt of the embedded world has its row in the
  gold key, by which its labelers and its gold judge score responses.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd

from instructflow.models.batching import encode_prompt
from instructflow.models.formatting import format_prompt, format_response
from instructflow.models.reward_model import reward_head_problem
from instructflow.tasks.lengths import LengthCheck
from instructflow.tasks.stage import content_digest
from instructflow.tasks.tables import LINE, Problem, TableError, load_table
from instructflow.tasks.weight_files import weight_problems

CONTEXT_FIELDS = ("max_position_embeddings", "n_positions", "n_ctx", "max_sequence_length")
# A tokenizer turns a text into at most one token per UTF-8 byte (byte-level BPE,
# SentencePiece with byte fallback) plus a few special tokens: rows this short
# need no tokenizing, which keeps the check fast on the embedded world.
SPECIAL_TOKENS_MARGIN = 8


_VALID_TABLES: dict[tuple[str, str], pd.DataFrame] = {}  # (content digest, kind) -> frame


def _load_table_once(path: Path, kind: str) -> pd.DataFrame:
    """load_table, remembered by content once valid: the CLI's check and the flow's find it done."""
    key = (content_digest(path), kind)
    if key not in _VALID_TABLES:
        if len(_VALID_TABLES) >= 64:
            _VALID_TABLES.clear()
        _VALID_TABLES[key] = load_table(path, kind)
    return _VALID_TABLES[key]


def table_problems(path: Path, kind: str) -> tuple[pd.DataFrame | None, list[Problem]]:
    """A table loaded and validated, or the problems; a missing or empty file is a problem too."""
    if not path.is_file():
        return None, [Problem(str(path), 0, LINE, "file not found")]
    try:
        frame = _load_table_once(path, kind)
    except TableError as error:
        return None, error.problems
    if frame.empty:
        return None, [Problem(str(path), 0, LINE, "the table is empty (no rows)")]
    return frame, []


def config_file_problems(folder: Path) -> list[Problem]:
    """A base-model directory without a readable config.json: the folder, the file or its JSON."""
    where = str(folder)
    if not folder.is_dir():
        what = "a file, not the model's directory" if folder.exists() else "no such directory"
        return [Problem(where, 0, "base_model", what)]
    config_file = folder / "config.json"
    if not config_file.is_file():
        return [Problem(where, 0, "config.json", "missing: " + _not_a_model(folder))]
    try:
        raw = json.loads(config_file.read_text())
    except (ValueError, UnicodeDecodeError) as error:
        return [Problem(str(config_file), 0, LINE, f"not valid JSON ({error})")]
    if not isinstance(raw, dict):
        return [Problem(str(config_file), 0, LINE, "must be a JSON object")]
    return []


def _not_a_model(folder: Path) -> str:
    """What a folder without config.json is: a PEFT adapter (with the model it adapts), else
    no Hugging Face model directory."""
    try:
        adapter = json.loads((folder / "adapter_config.json").read_text())
    except (OSError, ValueError, UnicodeDecodeError):
        return "not a Hugging Face model dir" + _models_inside(folder)
    base = adapter.get("base_model_name_or_path") if isinstance(adapter, dict) else None
    return (
        "a PEFT adapter (adapter_config.json), not a model: to start from the fine-tune, merge"
        f" it into the model it adapts ({base or 'its base_model_name_or_path'}) with peft's"
        " merge_and_unload, save_pretrained that with the tokenizer and pass its folder; or"
        " pass that model itself"
    )


def _models_inside(folder: Path) -> str:
    """The model folders a level or two down (a Trainer's output_dir holds checkpoint-N/, a
    Hub cache folder snapshots/<revision>/), which the user probably meant to pass."""
    inside = sorted(
        str(config.parent.relative_to(folder))
        for pattern in ("*/config.json", "*/*/config.json")
        for config in folder.glob(pattern)
    )
    if not inside:
        return ""
    shown = ", ".join(inside[:3]) + (f", ... ({len(inside)} in all)" if len(inside) > 3 else "")
    return f"; model folders in it: {shown}: pass one of them"


def base_model_problems(folder: Path) -> tuple[int | None, list[Problem]]:
    """(context length, problems) of a base-model directory, without loading its weights."""
    if problems := config_file_problems(folder):
        return None, problems
    config_file = folder / "config.json"
    config, problems = _config_problems(folder, config_file)
    context = None
    if config is not None:
        context = next(
            (v for k in CONTEXT_FIELDS if isinstance(v := getattr(config, k, None), int) and v > 0),
            None,
        )
        if context is None:
            message = f"no context length (one of {', '.join(CONTEXT_FIELDS)})"
            problems.append(Problem(str(config_file), 0, "max_position_embeddings", message))
    problems += weight_problems(folder)
    if config is not None:  # the tokenizer reads the config too: one problem, not two
        problems += _tokenizer_problems(folder, config)
    return context, problems


def _first_line(error: Exception) -> str:
    lines = [line.strip() for line in str(error).strip().splitlines() if line.strip()]
    return " ".join(lines[:2]) if lines else type(error).__name__


def _config_problems(folder: Path, config_file: Path) -> tuple[Any, list[Problem]]:
    """The config as transformers reads it, and whether it has a causal-LM head and the
    sequence-classification class the reward model is built on."""
    from transformers import MODEL_FOR_CAUSAL_LM_MAPPING, AutoConfig

    try:
        config = AutoConfig.from_pretrained(folder, local_files_only=True)
    except Exception as error:  # transformers and huggingface_hub raise many kinds here
        # A field that fails validation is named in the message: report it on that field.
        named = re.search(r"field '(\w+)'", str(error))
        field = named.group(1) if named else "model_type"
        return None, [Problem(str(config_file), 0, field, _first_line(error))]
    if type(config) not in MODEL_FOR_CAUSAL_LM_MAPPING:
        message = f"model_type {config.model_type!r} has no causal-LM head in transformers"
        return None, [Problem(str(config_file), 0, "model_type", message)]
    no_reward_head = reward_head_problem(config)
    if no_reward_head:
        return None, [Problem(str(config_file), 0, "model_type", no_reward_head)]
    return config, []


# The files a saved tokenizer leaves (fast, slow BPE, SentencePiece, WordPiece).
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "vocab.json",
    "tokenizer.model",
    "vocab.txt",
)
NO_TOKENIZER = (
    f"no tokenizer files ({', '.join(TOKENIZER_FILES)}): save the tokenizer beside the"
    " model, tokenizer.save_pretrained(DIR)"
)


def _unloadable_tokenizer(folder: Path, error: Exception) -> str:
    """Why the tokenizer did not load. A folder with tokenizer_config.json but no vocabulary
    file (tokenizer.json left behind in a copy) gets transformers' "Couldn't instantiate the
    backend tokenizer from one of: (1) ..." over five lines, which names no file."""
    vocabulary = [name for name in TOKENIZER_FILES if name != "tokenizer_config.json"]
    if not any((folder / name).exists() for name in vocabulary):
        return (
            f"tokenizer_config.json but no vocabulary file ({', '.join(vocabulary)}): copy"
            " all the tokenizer's files, tokenizer.save_pretrained(DIR)"
        )
    return f"cannot be loaded ({_first_line(error)})"


def _tokenizer_problems(folder: Path, config: Any) -> list[Problem]:
    from transformers import AutoTokenizer

    if not any((folder / name).exists() for name in TOKENIZER_FILES):
        # transformers' error says "Couldn't instantiate the backend tokenizer from one
        # of: (1) ..., (2) ..." over several lines and names no file
        return [Problem(str(folder), 0, "tokenizer", NO_TOKENIZER)]
    try:
        tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    except Exception as error:  # transformers raises many kinds here
        return [Problem(str(folder), 0, "tokenizer", _unloadable_tokenizer(folder, error))]
    if not tokenizer.encode("Q: hello world", add_special_tokens=False):
        # transformers 5 builds an empty tokenizer when the files are missing
        message = "encodes text to nothing (tokenizer.json / vocab files missing?)"
        return [Problem(str(folder), 0, "tokenizer", message)]
    if tokenizer.eos_token_id is None:
        message = (
            "has no EOS token (each response ends with it): name one of its tokens and save it "
            "again (tokenizer.eos_token = '<token>'; tokenizer.save_pretrained(folder))"
        )
        return [Problem(str(folder), 0, "tokenizer", message)]
    if (past_embeddings := _ids_past_embeddings(tokenizer, config)) is not None:
        return [Problem(str(folder), 0, "tokenizer", past_embeddings)]
    return _chat_template_problems(folder, getattr(tokenizer, "chat_template", None))


def _ids_past_embeddings(tokenizer: Any, config: Any) -> str | None:
    """Tokens whose ids have no row in the model's embeddings: tokens added to the tokenizer
    (a chat template's markers, say) without model.resize_token_embeddings. The checks let
    such a model through, and SFT's first batch holding one stopped the run with
    IndexError ('index out of range in self'), 350 lines of traceback, exit 1."""
    rows = getattr(config.get_text_config(), "vocab_size", None)
    if not isinstance(rows, int) or len(tokenizer) <= rows:
        return None
    past = sorted((i, t) for t, i in tokenizer.get_vocab().items() if i >= rows)
    shown = ", ".join(repr(t) for _, t in past[:3]) + (", ..." if len(past) > 3 else "")
    return (
        f"{len(tokenizer)} tokens, but the model's embeddings have {rows} rows (config.json"
        f" vocab_size): {len(past)} tokens ({shown}) have none; resize them,"
        " model.resize_token_embeddings(len(tokenizer)), and save the model again"
    )


def _chat_template_problems(folder: Path, template: Any) -> list[Problem]:
    """A chat template that is not valid Jinja, named once: each conversation's rendering
    failed on it, so a dataset's check named every row as one the template refuses."""
    from jinja2 import TemplateSyntaxError
    from transformers.utils.chat_template_utils import _compile_jinja_template

    templates = template if isinstance(template, dict) else {"": template}
    jinja = folder / "chat_template.jinja"
    file = jinja if jinja.is_file() else folder / "tokenizer_config.json"
    for name, text in templates.items():
        if not isinstance(text, str) or not text:
            continue
        try:
            _compile_jinja_template(text)
        except TemplateSyntaxError as error:
            which = f" {name!r}" if name else ""
            message = f"the chat template{which} is not valid Jinja: {error.message} (its line {error.lineno})"
            return [Problem(str(file), 0, "chat_template", message)]
    return []


def human_comparisons_problems(
    path: Path, prompt_tables: dict[str, pd.DataFrame]
) -> tuple[pd.DataFrame | None, list[Problem]]:
    """Human comparisons the RM stage can use: schema, both splits, one K, no user in two splits."""
    frame, problems = table_problems(path, "comparisons")
    if frame is None:
        return None, problems
    file = str(path)
    rows = frame.index + 1  # valid tables have no blank lines: row = index + 1
    for split in ("train", "valid"):
        if not (frame["split"] == split).any():
            message = f"no rows with split {split!r}: the reward model trains on 'train' and picks its epoch on 'valid'"
            problems.append(Problem(file, 0, "split", message))
    for row, split in zip(rows, frame["split"], strict=True):
        if split == "test":
            message = "split 'test' is for held-out users' evaluation, not reward-model training"
            problems.append(Problem(file, int(row), "split", message))
    ks = frame["responses"].map(len)
    first_k, first_row = int(ks.iloc[0]), int(rows[0])
    for row, k in zip(rows, ks, strict=True):
        if k != first_k:
            message = f"K={k} responses here but K={first_k} on row {first_row}: the reward model trains on one K"
            problems.append(Problem(file, int(row), "responses", message))
    from instructflow.tasks.tables import check_user_splits

    try:
        check_user_splits({**prompt_tables, file: frame})
    except TableError as error:
        problems += [p for p in error.problems if p.file == file]
    return frame, problems


def length_problems(
    file: str,
    frame: pd.DataFrame,
    context: int,
    tokenizer: Callable[[], Any],
    max_new_tokens: int,
    prefix: str = "",
) -> list[Problem]:
    """Rows longer than `context` as the stages encode them.

    A table of prompts alone is sampled from: the prompt (after `prefix`, the
    few-shot examples) must leave `max_new_tokens` of room. A row with
    responses is trained on: each prompt + response + EOS must fit.
    `tokenizer` is called only when some row is too long to be sure by bytes.
    """
    problems: list[Problem] = []
    field = next((f for f in ("response", "responses") if f in frame.columns), None)
    for index, row in zip(frame.index, frame.to_dict("records"), strict=True):
        prompt = row["prompt"]
        responses = [] if field is None else ([row[field]] if field == "response" else row[field])
        # The Q/A frame's bytes: at least a templated prompt's (which gets none), so a bound
        prompt_bytes = len((prefix + format_prompt(prompt)).encode()) + SPECIAL_TOKENS_MARGIN
        if field is None:
            if prompt_bytes + max_new_tokens <= context:
                continue
            framed = prefix + format_prompt(prompt, tokenizer())
            need = len(encode_prompt(tokenizer(), framed)) + max_new_tokens
            where, what = "prompt", f" with {max_new_tokens} tokens of sampling room"
        else:
            longest = max((len(format_response(r).encode()) for r in responses), default=0)
            if prompt_bytes + longest + 1 <= context:
                continue
            need = LengthCheck(tokenizer(), context, 0).need(prompt, list(responses))
            alone = len(encode_prompt(tokenizer(), format_prompt(prompt, tokenizer())))
            where, what = ("prompt" if alone >= context else field), " (prompt + response + EOS)"
        if need > context:
            message = f"row needs {need} tokens{what} > context {context}"
            problems.append(Problem(file, int(index) + 1, where, message))
    return problems


def gold_key_problems(key_file: Path, prompt_tables: dict[str, pd.DataFrame]) -> list[Problem]:
    """Prompts of the embedded world whose prompt_id has no row in the gold key.

    The world's labelers rank sampled responses, and its gold judge scores them, by
    the answer key's row of each prompt: a prompt added to a table without one would
    pass every schema and then stop the comparisons or evaluation stage mid-run.
    """
    if not key_file.is_file():
        return [Problem(str(key_file), 0, LINE, "file not found")]
    known = set()
    with open(key_file, encoding="utf-8", errors="replace") as fh:
        for row, line in enumerate(fh, start=1):
            try:
                known.add(json.loads(line)["prompt_id"])
            except (ValueError, TypeError, KeyError):
                return [Problem(str(key_file), row, "prompt_id", "not a JSON row with a prompt_id")]
    message = (
        f"no row of {key_file} holds this prompt_id: the embedded world's labelers and gold"
        " judge score responses by it (add the prompt's answer there, or train on a dataset"
        " of your own with --data)"
    )
    return [
        Problem(file, int(index) + 1, "prompt_id", message)
        for file, frame in prompt_tables.items()
        for index, prompt_id in zip(frame.index, frame["prompt_id"], strict=True)
        if prompt_id not in known
    ]
