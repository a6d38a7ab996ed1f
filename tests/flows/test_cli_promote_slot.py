"""`instructflow promote` takes the registry's slot where a Prefect API is set (exported or in
the Prefect profile), as a gate does: it waits for a gate in progress; without one it takes
none and starts no server."""

import threading
import time
from contextlib import contextmanager

import pytest
from mlflow import MlflowClient

from instructflow.flows.cli import main
from instructflow.flows.cli_models import REGISTRY_WAIT
from instructflow.tasks import concurrency, leftovers, outages, promotion
from tests.conftest import use_project

MODEL = "instructflow-policy-smoke"
PROMOTE_V2 = ["promote", "--version", "2", "--model", MODEL, "--reason", "reads better"]


@pytest.fixture
def client(tmp_path, monkeypatch) -> MlflowClient:
    """A registry holding MODEL v1 (champion) and v2."""
    client = MlflowClient(tracking_uri=use_project(monkeypatch, tmp_path))
    client.create_registered_model(MODEL)
    for _ in range(2):
        client.create_model_version(MODEL, str(tmp_path))
    client.set_registered_model_alias(MODEL, "champion", "1")
    return client


def _champion(client: MlflowClient) -> str:
    return str(client.get_model_version_by_alias(MODEL, "champion").version)


@pytest.fixture
def served_prefect(prefect_harness, monkeypatch) -> None:
    """PREFECT_API_URL exported, naming the harness's server (as `make serve` exports it)."""
    from prefect.settings import PREFECT_API_URL

    monkeypatch.setenv("PREFECT_API_URL", PREFECT_API_URL.value())
    concurrency.ensure_limits()


def _active_slots() -> int:
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as prefect:
        return prefect.read_global_concurrency_limit_by_name(concurrency.REGISTRY).active_slots


def test_promote_waits_for_a_gate_holding_the_registry_then_moves_champion(
    served_prefect, client, capsys
):
    codes: list[int] = []
    promoting = threading.Thread(target=lambda: codes.append(main(PROMOTE_V2)))
    out = ""
    # given a promotion gate holding the registry's slot
    with concurrency.registry_slot():
        # when a person promotes v2 meanwhile
        promoting.start()
        deadline = time.monotonic() + 120  # main() imports MLflow first: seconds on 2 cores
        while "waiting for the registry" not in out and promoting.is_alive():
            assert time.monotonic() < deadline, out
            time.sleep(0.2)
            out += capsys.readouterr().out
        time.sleep(1.0)  # longer than Prefect's Retry-After: it asked again, and waits on
        # then promote says it waits, and champion has not moved while the gate holds the slot
        assert "waiting for the registry: a promotion gate is in progress\n" in out
        assert promoting.is_alive() and _champion(client) == "1"
    # and once the gate gives the slot back, champion moves, and the slot is free again
    promoting.join(60)
    assert codes == [0] and _champion(client) == "2"
    assert capsys.readouterr().out.endswith(f"{MODEL} v2 is now champion (manual: reads better)\n")
    assert _active_slots() == 0


def test_a_run_starting_while_promote_holds_the_slot_does_not_free_it(
    served_prefect, client, monkeypatch
):
    # given promote inside the registry's slot, when a run of the project starts (it frees a
    # slot left held where no other run of the project is alive: tasks/leftovers.py)
    seen = {}

    def promote_while_a_run_starts(version, reason, name):
        seen["freed"] = leftovers.free_orphaned_slots("a-run-starting", [concurrency.REGISTRY])
        seen["held"] = _active_slots()
        return True

    monkeypatch.setattr(promotion, "promote_manually", promote_while_a_run_starts)
    assert main(PROMOTE_V2) == 0
    # then the run sees promote alive and leaves its slot held
    assert seen == {"freed": [], "held": 1}
    assert _active_slots() == 0 and not leftovers.others_alive("a-run-starting")


def test_without_prefect_api_url_promote_takes_no_slot_and_starts_no_server(
    client, monkeypatch, capsys
):
    from prefect.settings import PREFECT_API_URL, temporary_settings

    # given no Prefect API exported nor set (a run would start Prefect's temporary server;
    # the session's test server, started by an earlier test, sets one in Prefect's settings)
    monkeypatch.delenv("PREFECT_API_URL", raising=False)

    def no_slot(*args, **kwargs):
        pytest.fail("promote asked Prefect for the registry's slot without PREFECT_API_URL")

    monkeypatch.setattr(concurrency, "ensure_limits", no_slot)
    monkeypatch.setattr(concurrency, "registry_slot", no_slot)
    # then promote moves champion as before
    with temporary_settings(restore_defaults={PREFECT_API_URL}):
        assert main(PROMOTE_V2) == 0
    assert _champion(client) == "2"
    assert capsys.readouterr().out == f"{MODEL} v2 is now champion (manual: reads better)\n"


def test_a_prefect_api_set_in_the_profile_makes_promote_take_the_slot(
    client, tmp_path, monkeypatch, capsys
):
    from prefect.context import root_settings_context

    # given no PREFECT_API_URL exported, and the Prefect profile under PREFECT_HOME naming a
    # server (`prefect config set PREFECT_API_URL=...` writes it there)
    home = tmp_path / "prefect-home"
    home.mkdir()
    (home / "profiles.toml").write_text(
        'active = "served"\n\n[profiles.served]\nPREFECT_API_URL = "http://127.0.0.1:4200/api"\n'
    )
    for name in ("PREFECT_API_URL", "PREFECT_PROFILE", "PREFECT_PROFILES_PATH"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("PREFECT_HOME", str(home))
    taken = []

    @contextmanager
    def slot(**kwargs):
        taken.append(kwargs)
        yield

    monkeypatch.setattr(concurrency, "ensure_limits", lambda: None)
    monkeypatch.setattr(concurrency, "registry_slot", slot)
    # when promote runs in a process whose Prefect loaded that profile (as it does at import)
    with root_settings_context():
        assert main(PROMOTE_V2) == 0
    # then it took the registry's slot, as with the variable exported, and champion moved
    assert taken == [{"waiting": REGISTRY_WAIT, "outage_wait": False}]
    assert _champion(client) == "2"
    assert capsys.readouterr().out == f"{MODEL} v2 is now champion (manual: reads better)\n"


def test_a_prefect_server_lost_after_the_preflight_is_one_line(client, monkeypatch, capsys):
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from instructflow.tasks.temporary_server import kernel_port

    # given PREFECT_API_URL naming a server that answered the preflight, then went away
    gone = f"http://127.0.0.1:{kernel_port()}/api"  # nothing listens there
    monkeypatch.setenv("PREFECT_API_URL", gone)
    monkeypatch.setattr(outages, "preflight", lambda *args: None)
    with temporary_settings(updates={PREFECT_API_URL: gone}):
        started = time.monotonic()
        code = main(PROMOTE_V2)
    # then promote stops at once with one line naming the server, champion unmoved
    err = capsys.readouterr().err
    assert code == 3 and time.monotonic() - started < 60
    assert err.startswith("instructflow: lost a service (") and err.count("\n") == 1, err
    assert gone in err and "Traceback" not in err
    assert _champion(client) == "1"
