"""CPU seconds spent by this process and by the Prefect server it started, for bench/overhead.py.

On two cores that a run's torch threads keep busy, every CPU second another
thread or process spends is taken from the stages: the orchestrated run's
extra CPU (its own threads for events, logs and tracking, and the ephemeral
Prefect server's process) is where its extra wall time comes from. Wall time
alone cannot tell these apart; CPU time read from the kernel can.
"""

import psutil


def _busy(process: psutil.Process) -> float:
    times = process.cpu_times()
    return times.user + times.system


def _server_seconds(process: psutil.Process) -> float | None:
    """CPU seconds of `process` if it runs a uvicorn server, else None. A child that has
    exited but is not yet reaped (a zombie: its command line is gone) or has just gone
    is no server."""
    try:
        if any("uvicorn" in part for part in process.cmdline()):
            return _busy(process)
    except psutil.NoSuchProcess:  # ZombieProcess included
        pass
    return None


def prefect_servers() -> list[psutil.Process]:
    """The ephemeral Prefect API servers this process started (uvicorn children)."""
    children = psutil.Process().children(recursive=True)
    return [child for child in children if _server_seconds(child) is not None]


def reading() -> dict[str, float]:
    """CPU seconds so far: {"this_process": ..., "prefect_server": ...}."""
    servers = (_server_seconds(child) for child in psutil.Process().children(recursive=True))
    return {
        "this_process": _busy(psutil.Process()),
        "prefect_server": sum(seconds for seconds in servers if seconds is not None),
    }


def spent(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    """CPU seconds between two readings, per process, rounded as the bench's other figures."""
    return {name: round(after[name] - before[name], 2) for name in before}


def summary(per_round: list[dict[str, dict[str, float]]], spread) -> dict:
    """{side: {process: spread(values over rounds)}} of each round's `spent` per side."""
    sides = per_round[0]
    return {
        side: {name: spread([r[side][name] for r in per_round]) for name in sides[side]}
        for side in sides
    }


def line(summary: dict) -> str:
    """One line for the bench's output: the median CPU seconds of each side's run."""
    direct, flow = summary["direct"], summary["orchestrated"]
    return (
        f"CPU seconds of one run, median: direct {direct['this_process']['median']:.2f} "
        f"(the idle Prefect server beside it {direct['prefect_server']['median']:.2f}); "
        f"orchestrated {flow['this_process']['median']:.2f}, registry stage included "
        f"(its Prefect server {flow['prefect_server']['median']:.2f})"
    )
