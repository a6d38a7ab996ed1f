"""The `fewshot_shortfall` block outside report.json: the parent run's MLflow tag."""

from instructflow.tasks.fewshot_shown import mlflow_tags, shortfall


def test_a_shortfall_tags_the_parent_run_with_shown_of_asked_and_none_adds_no_tag():
    # given base_fewshot shown 9 of the 10 demonstrations asked for
    block = shortfall(9, 10, "only 9 families have one")
    # then the parent run's tag says so in the words a person filters runs by
    assert mlflow_tags(block) == {"fewshot_shortfall": "9 of 10"}
    # and a run that showed all it asked for (no block) gets no tag at all, not an empty one
    assert mlflow_tags(None) == {}
