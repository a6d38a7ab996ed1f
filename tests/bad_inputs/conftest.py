"""Fixtures of the bad-input catalogue: a good smoke world, good human comparisons, a good model dir.

Each case copies what it breaks from these, breaks one thing, and asserts
that the refusal names the file, row and field of that one thing.
"""

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from instructflow.world import layout

HUMAN_RESPONSES = ["Sure, here it is.", "I don't know.", "No.", "Let me think about that."]


def read_rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def write_rows(path: Path, rows: list[dict]) -> None:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))


def edit_row(path: Path, row: int, **changes) -> None:
    """Set fields of row `row` (1-based); a value of DROP removes the field."""
    rows = read_rows(path)
    for key, value in changes.items():
        if value is DROP:
            del rows[row - 1][key]
        else:
            rows[row - 1][key] = value
    write_rows(path, rows)


DROP = object()


@pytest.fixture
def smoke_dir(generated_root: Path, tmp_path: Path) -> Path:
    """A copy of the generated smoke world's tables, free to break."""
    return Path(shutil.copytree(generated_root / "data" / "smoke", tmp_path / "smoke"))


def human_rows(profile_dir: Path) -> list[dict]:
    """Valid human comparisons: 8 training and 4 validation prompts of the world, K = 4."""
    picked = (
        read_rows(profile_dir / layout.RM_TRAIN)[:8] + read_rows(profile_dir / layout.RM_VALID)[:4]
    )
    return [
        {
            "comparison_id": f"human-{i}",
            "prompt_id": p["prompt_id"],
            "user_id": p["user_id"],
            "split": p["split"],
            "prompt": p["prompt"],
            "responses": list(HUMAN_RESPONSES),
            "ranking": [0, 3, 1, 2],
            "labeler_id": "H1",
        }
        for i, p in enumerate(picked)
    ]


@pytest.fixture
def human_file(smoke_dir: Path, tmp_path: Path) -> Path:
    path = tmp_path / "human.jsonl"
    write_rows(path, human_rows(smoke_dir))
    return path


@pytest.fixture(scope="session")
def good_model_dir(tmp_path_factory: pytest.TempPathFactory, generated_root: Path) -> Path:
    """A tiny GPT-2 directory (tokenizer trained on the smoke world) with a 512-token context."""
    from instructflow.models.lm import GPT2Size, build_gpt2, save_model
    from instructflow.models.tokenizer import train_tokenizer
    from instructflow.tasks.base_model import tokenizer_texts

    tokenizer = train_tokenizer(tokenizer_texts(generated_root / "data" / "smoke"), 300)
    model = build_gpt2(tokenizer, GPT2Size(n_layer=1, n_head=1, n_embd=16, n_positions=512), 0)
    folder = tmp_path_factory.mktemp("base") / "model"
    save_model(model, tokenizer, folder)
    return folder


@pytest.fixture
def model_copy(good_model_dir: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(good_model_dir, tmp_path / "model"))


@pytest.fixture
def params() -> Callable[..., object]:
    """params(**fields) -> PipelineParams of a smoke run."""
    from instructflow.flows.params import PipelineParams

    def make(**fields) -> PipelineParams:
        return PipelineParams(profile="smoke", **fields)

    return make


def refusal(params, profile_dir: Path) -> list:
    """The problems check_inputs finds (it must find some)."""
    from instructflow.tasks.preflight import check_inputs
    from instructflow.tasks.tables import TableError

    with pytest.raises(TableError) as caught:
        check_inputs(params, profile_dir)
    return caught.value.problems


def assert_names(problems: list, file: str | Path, row: int, field: str, words: str = "") -> None:
    """Some problem names exactly this file (or a path ending in it), row and field."""
    hits = [
        p
        for p in problems
        if (p.file == str(file) or p.file.endswith("/" + str(file)))
        and p.row == row
        and p.field == field
        and words.lower() in p.message.lower()
    ]
    assert hits, f"no problem at {file} row {row} field {field!r} ({words!r}) among:\n" + "\n".join(
        str(p) for p in problems
    )
