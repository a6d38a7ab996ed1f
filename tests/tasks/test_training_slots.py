"""tasks.concurrency.training_slots_at_least: raised for a sweep, put back after, never lowered."""

import pytest

from instructflow.tasks import concurrency


class FakeClient:
    """The two calls the context manager makes, on one limit held in memory."""

    def __init__(self, limits: dict[str, int]):
        self.limits = limits
        self.updates: list[int] = []

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def read_global_concurrency_limit_by_name(self, name):
        return type("Limit", (), {"limit": self.limits[name]})

    def update_global_concurrency_limit(self, name, update):
        self.limits[name] = update.limit
        self.updates.append(update.limit)


@pytest.fixture
def client(monkeypatch):
    fake = FakeClient({concurrency.TRAINING: 1})
    monkeypatch.setattr(concurrency, "ensure_limits", lambda: None)
    monkeypatch.setattr(concurrency, "get_client", lambda sync_client: fake)
    return fake


def test_the_limit_is_raised_inside_and_restored_after(client):
    with concurrency.training_slots_at_least(3):
        assert client.limits[concurrency.TRAINING] == 3
    assert client.limits[concurrency.TRAINING] == 1


def test_the_limit_is_restored_when_the_sweep_fails(client):
    with pytest.raises(RuntimeError), concurrency.training_slots_at_least(2):
        raise RuntimeError("a child failed")
    assert client.limits[concurrency.TRAINING] == 1


def test_a_higher_limit_is_left_alone(client):
    client.limits[concurrency.TRAINING] = 4
    with concurrency.training_slots_at_least(2):
        assert client.limits[concurrency.TRAINING] == 4
    assert client.updates == []
