"""A seed sweep is refused before any seed runs when it cannot be aggregated."""

import json

from instructflow.flows.cli import main


def test_a_sweep_on_a_users_dataset_is_refused_before_any_seed_runs(tmp_path, capsys):
    # given settings for a run on a user's dataset
    params = tmp_path / "p.json"
    params.write_text(json.dumps({"data": str(tmp_path / "mydata"), "base_model": "x"}))
    # when a sweep is asked of it (each seed ran to its end, then the sweep failed on gold)
    status = main(["sweep", "--profile", "smoke", "--seeds", "0", "1", "--params", str(params)])
    # then one line says why and what to do instead, and nothing ran
    assert status == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert "embedded world only" in line and "instructflow compare" in line
    assert not (tmp_path / "runs").exists()
