"""registry.record_decision on a recording client: the tags, the approval note and the alias,
each worked out by hand."""

from instructflow.tasks.gate import AliasEffect, GateDecision
from instructflow.tasks.registry import record_decision

PASSED = GateDecision(
    promote=True,
    reason="beats sft: win rate 0.700 (95% CI 0.620-0.780)",
    incumbent="sft",
    win_rate=0.7,
    ci95=(0.62, 0.78),
    public_suite_challenger=None,
    public_suite_incumbent=None,
)
PROMOTE = AliasEffect(promote=True, awaiting_approval=False, restore=False)
AWAIT = AliasEffect(promote=False, awaiting_approval=True, restore=False)


class Recording:
    """The MlflowClient calls record_decision makes, kept in dicts."""

    def __init__(self):
        self.tags: dict[str, str] = {}
        self.aliases: dict[str, str] = {}
        self.model_tags: dict[str, str] = {}  # the registered model's (a move under way)

    def get_registered_model(self, name):
        from types import SimpleNamespace

        return SimpleNamespace(tags=dict(self.model_tags))

    def set_registered_model_tag(self, name, key, value):
        self.model_tags[key] = value

    def delete_registered_model_tag(self, name, key):
        self.model_tags.pop(key, None)

    def set_model_version_tag(self, name, version, key, value):
        assert (name, version) == ("m", "3")
        self.tags[key] = value

    def get_model_version(self, name, version):
        from types import SimpleNamespace

        return SimpleNamespace(tags=dict(self.tags), description="")

    def search_model_versions(self, filter_string):
        from types import SimpleNamespace

        return [SimpleNamespace(version="3", tags=dict(self.tags))]

    def delete_model_version_tag(self, name, version, key):
        del self.tags[key]

    def update_model_version(self, name, version, description):
        self.description = description

    def set_registered_model_alias(self, name, alias, version):
        assert name == "m"
        self.aliases[alias] = version

    def get_model_version_by_alias(self, name, alias):
        from types import SimpleNamespace

        from mlflow.exceptions import MlflowException

        if alias not in self.aliases:
            raise MlflowException(f"no alias {alias}")
        return SimpleNamespace(version=self.aliases[alias])


def test_the_win_rate_and_its_ci_are_tagged_to_3_decimals_the_ci_as_a_list():
    from dataclasses import replace

    client = Recording()
    # given a win rate of 2/3 with a CI whose ends have 16 digits
    thirds = replace(PASSED, win_rate=2 / 3, ci95=(0.5833333333333334, 0.7499999999999999))
    # when it is recorded
    record_decision(client, "m", "3", thirds, AWAIT, "held-out judge")
    # then the tags read as the gate's reason does, not as Python's floats and tuple
    assert client.tags["gate_win_rate"] == "0.667"
    assert client.tags["gate_ci95"] == "[0.583, 0.750]"


def test_the_public_suite_figures_and_the_win_margin_are_tagged_to_3_decimals_too():
    from dataclasses import replace

    client = Recording()
    # given public-suite accuracies and a sweep's margin with 16 digits
    long = replace(
        PASSED,
        public_suite_challenger=0.7166666666666667,
        public_suite_incumbent=0.6833333333333333,
        win_margin=0.041666666666666664,
    )
    # when it is recorded
    record_decision(client, "m", "3", long, AWAIT, "held-out labelers")
    # then they read as the other gate figures do
    assert client.tags["gate_public_suite_challenger"] == "0.717"
    assert client.tags["gate_public_suite_incumbent"] == "0.683"
    assert client.tags["gate_win_margin"] == "0.042"


def test_a_passed_gate_is_tagged_with_its_evidence_and_made_champion():
    client = Recording()
    # when a passed gate that may promote is recorded
    recorded = record_decision(client, "m", "3", PASSED, PROMOTE, "held-out judge")
    at = client.tags.pop("promoted_at")
    assert client.tags.pop("promotion_history") == f"{at}: champion (gate)"
    assert "**champion now**" in client.description
    # then every decided field is a tag (the None public-suite figures are not), with the
    # evidence, and the version is champion, promoted by the gate, beside the one it replaced
    assert client.tags == {
        "gate_promote": "True",
        "gate_reason": "beats sft: win rate 0.700 (95% CI 0.620-0.780)",
        "gate_incumbent": "sft",
        "gate_win_rate": "0.700",
        "gate_ci95": "[0.620, 0.780]",
        "gate_win_margin": "0.000",
        "gate_evidence": "held-out judge",
        "promoted_by": "gate",  # no `previous_champion`: there was none to roll back to
    }
    assert client.aliases == {"champion": "3"}
    assert client.model_tags == {}  # the move, recorded while under way, is done
    # and the decision comes back as tagged: unchanged
    assert recorded == PASSED


def test_people_s_verdict_is_tagged_as_theirs():
    client = Recording()
    record_decision(client, "m", "3", PASSED, PROMOTE, "human", by="human")
    assert client.tags["gate_evidence"] == "human" and client.tags["promoted_by"] == "human"


def test_a_passed_gate_awaiting_approval_says_how_to_promote_and_moves_nothing():
    client = Recording()
    # when a passed gate that needs a person's approval is recorded by a run that asks nobody
    recorded = record_decision(client, "m", "3", PASSED, AWAIT, "held-out judge")
    # then its reason, tagged and returned, says approval is required and how to promote
    reason = (
        "beats sft: win rate 0.700 (95% CI 0.620-0.780); "
        "approval required: promote by hand (instructflow promote)"
    )
    assert recorded.reason == client.tags["gate_reason"] == reason
    assert recorded.promote and client.tags["gate_promote"] == "True"
    # and no alias moved, nobody is named as promoting it
    assert client.aliases == {} and "promoted_by" not in client.tags


def test_a_run_that_asks_for_approval_itself_keeps_the_gate_s_reason():
    client = Recording()
    # when the running flow asks a person on its form (the embedded world's pipeline)
    recorded = record_decision(
        client, "m", "3", PASSED, AWAIT, "held-out labelers", approval_asked=True
    )
    # then the reason is the gate's, and nothing moved
    assert recorded == PASSED and client.tags["gate_reason"] == PASSED.reason
    assert client.aliases == {}


def test_a_failed_gate_moves_nothing_and_keeps_its_reason():
    client = Recording()
    failed = GateDecision(False, "win rate vs sft 0.5 ...", "sft", 0.5, (0.4, 0.6), 0.8, 0.81)
    nothing = AliasEffect(promote=False, awaiting_approval=False, restore=False)
    recorded = record_decision(client, "m", "3", failed, nothing, "held-out labelers")
    assert recorded == failed and client.aliases == {}
    assert client.tags["gate_promote"] == "False"
    assert client.tags["gate_public_suite_challenger"] == "0.800"


def test_a_version_champion_already_keeps_the_record_of_how_it_got_there():
    # given v3, made champion by a person's approval, reused by a later run whose gate passes
    client = Recording()
    client.aliases["champion"] = "3"
    client.tags["promoted_by"] = "approval"
    record_decision(client, "m", "3", PASSED, PROMOTE, "held-out judge")
    # then the gate's verdict is tagged, but the approval is not rewritten as the gate's
    assert client.tags["gate_promote"] == "True"
    assert client.tags["promoted_by"] == "approval"
    assert client.aliases == {"champion": "3"}
