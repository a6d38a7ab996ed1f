"""bench/checkpoint.py: cached checkpoints are keyed by the code that makes them."""

from bench import checkpoint
from instructflow.tasks.code_closure import import_closure


def test_checkpoints_made_by_other_code_are_removed_not_reused(tmp_path, monkeypatch):
    # given checkpoints cached by code whose key was "old"
    (tmp_path / "old" / "tiny-seed0" / "sft" / "model").mkdir(parents=True)
    # when today's code has another key
    monkeypatch.setattr(checkpoint, "code_key", lambda: "new")
    folder = checkpoint.current(tmp_path)
    # then the checkpoints go to today's folder and the old ones are gone
    assert folder == tmp_path / "new"
    assert not (tmp_path / "old").exists()


def test_todays_folder_is_kept(tmp_path, monkeypatch):
    monkeypatch.setattr(checkpoint, "code_key", lambda: "same")
    (tmp_path / "same" / "tiny-seed0").mkdir(parents=True)
    assert checkpoint.current(tmp_path) == tmp_path / "same"
    assert (tmp_path / "same" / "tiny-seed0").is_dir()


def test_the_key_covers_modules_the_stages_import_not_only_the_stages():
    # the reward model's loss and the training loop sit below the stage modules
    files = {str(f.relative_to(checkpoint.ROOT)) for f in import_closure(checkpoint.MADE_BY)}
    assert {"models/ranking_loss.py", "tasks/sft.py", "tasks/reward_model.py"} <= files
