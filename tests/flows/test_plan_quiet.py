"""`instructflow plan` prints its table without library warnings about networks it only counts."""

import warnings

from instructflow.flows.params_io import build_params
from instructflow.flows.plan import make_plan


def test_plan_of_the_smoke_profile_raises_no_library_warnings():
    # given the smoke profile's settings (GPT-2, whose Conv1D layers make peft warn)
    params = build_params({"profile": "smoke"})
    # when the memory plan is made, every warning recorded
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        plan = make_plan(params)
    # then it has the six rows (three stages, with and without LoRA) and no warning
    assert len(plan["stages"]) == 6
    assert [str(w.message) for w in caught] == []
