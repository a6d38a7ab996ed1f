"""The report judges the held-out judge at the run's own gate.judge_accuracy_floor.

The floor is a gate setting; the report's `judge` block and the gate must give one
verdict on the judge. Before, the embedded pipeline's report judged it at the default
0.6 whatever floor the run was given.
"""

import pytest

from instructflow.flows.params import PipelineParams
from tests.conftest import use_project

pytestmark = pytest.mark.slow


def test_a_raised_floor_is_the_one_the_report_judges_the_judge_at(
    first_run, copy_of_first_run, fast_smoke
):
    from instructflow.flows.pipeline import rlhf_pipeline

    first = first_run["result"]["judge"]
    assert first["accuracy_heldout_pairs"] < 0.99  # else no floor below 1 could refuse it
    with pytest.MonkeyPatch.context() as monkeypatch:
        use_project(monkeypatch, copy_of_first_run())
        # when the same run is given a floor its judge does not reach
        again = rlhf_pipeline(PipelineParams(**fast_smoke(gate={"judge_accuracy_floor": 0.99})))
    judge = again["judge"]
    # then the report refuses the judge at that floor, on the same (cached) judge's figures
    assert judge["accuracy_heldout_pairs"] == first["accuracy_heldout_pairs"]
    assert not judge["trustworthy"]
    assert "< floor 0.99" in judge["trust_reason"]
