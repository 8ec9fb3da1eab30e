"""cluster.PauseIdleSteps: a Ray Data scheduling step with no task in flight is followed by a short
pause (the loop would otherwise spin: bench/split_idle.py measures it), a step with tasks in
flight is not; Ray Data loads it by name from RAY_DATA_EXECUTION_CALLBACKS, beside a user's own."""
from types import SimpleNamespace

from kddocre_ray import cluster
from kddocre_ray.cluster import PauseIdleSteps, _with_pause


class _Op:
    def __init__(self, active: int):
        self.active = active

    def num_active_tasks(self) -> int:
        return self.active


def _executor(*active: int) -> SimpleNamespace:
    """As Ray Data's executor holds them: its topology maps each operator to its state."""
    return SimpleNamespace(_topology={_Op(n): None for n in active})


def test_a_step_pauses_only_with_nothing_in_flight(monkeypatch):
    slept = []
    monkeypatch.setattr(cluster.time, "sleep", slept.append)
    step = PauseIdleSteps()
    step.on_execution_step(_executor(0, 2))  # a read task running: ray.wait already blocks
    assert slept == []
    step.on_execution_step(_executor(0, 0))
    assert slept == [0.01]


def test_ours_joins_the_users_callbacks_once():
    ours = "kddocre_ray.cluster.PauseIdleSteps"
    assert _with_pause("") == ours
    assert _with_pause("my.Callback") == f"my.Callback,{ours}"
    assert _with_pause(f"my.Callback,{ours}") == f"my.Callback,{ours}"


def test_ray_data_loads_it_by_name(monkeypatch):
    import ray

    monkeypatch.setenv("RAY_DATA_EXECUTION_CALLBACKS", _with_pause(""))
    assert PauseIdleSteps in ray.data.DataContext.get_current().execution_callback_classes
