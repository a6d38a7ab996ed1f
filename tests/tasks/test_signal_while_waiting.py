"""A signal that the kernel delivers to another thread still stops a main thread that waits.

Python runs a handler in the main thread only, when that thread runs bytecode; a plain wait
on a future sleeps in C until the future completes. A Ctrl-C'd seed sweep hung so: its
seeds' futures never completed, and its grace alarm had landed on another thread.
The child waits, in its main thread, on a future that never completes; a helper thread
sends SIGALRM to itself (pthread_kill), as the kernel may do with a process's signal.
"""

import subprocess
import sys
import textwrap

import pytest

CHILD = textwrap.dedent(
    """
    import concurrent.futures, signal, sys, threading, time
    IMPORT

    def on_alarm(signum, frame):
        raise KeyboardInterrupt("the handler ran")

    signal.signal(signal.SIGALRM, on_alarm)

    def alarm_in_this_thread():
        time.sleep(0.3)
        signal.pthread_kill(threading.get_ident(), signal.SIGALRM)

    threading.Thread(target=alarm_in_this_thread, daemon=True).start()
    never = concurrent.futures.Future()
    started = time.monotonic()
    print("waiting", flush=True)
    try:
        WAIT(never)
    except KeyboardInterrupt as stop:
        print(f"{stop} after {time.monotonic() - started:.1f} s", flush=True)
        sys.exit(0)
    """
)


def run_child(wait: str, timeout: float, imports: str = "") -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", CHILD.replace("IMPORT", imports).replace("WAIT", wait)],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_a_signal_on_another_thread_ends_the_main_threads_wait_awake_within_a_second():
    # given a main thread waiting on a future that never completes, through wait_awake
    # when a SIGALRM is delivered to another thread
    imports = "from instructflow.tasks import interrupts"
    done = run_child("interrupts.wait_awake", timeout=60, imports=imports)
    # then the handler ran in the main thread soon after, and its exception ended the wait
    assert done.returncode == 0, done.stderr[-2000:]
    said = done.stdout.strip()
    assert said.startswith("waiting\nthe handler ran after"), said
    assert float(said.split()[-2]) < 0.3 + interrupts_wake() + 0.5, said


def test_a_plain_wait_sleeps_through_a_signal_on_another_thread():
    # the hazard wait_awake is for (if this ever fails, Python woke the main thread itself)
    with pytest.raises(subprocess.TimeoutExpired) as slept:
        run_child("(lambda future: future.result())", timeout=5)
    said = slept.value.stdout or b""
    assert (said if isinstance(said, str) else said.decode()).strip() == "waiting"


def interrupts_wake() -> float:
    from instructflow.tasks import interrupts

    return interrupts.WAKE_SECONDS
