#!/usr/bin/env bash
# Stop what scripts/serve.sh started (`make stop`): first the flow runs in progress on its
# Prefect server are named, cancelled and waited for (flows/stop_runs.py: a worker's run is
# in a session of its own, and one `make demo` started uses these servers too: neither is in
# a process group below); then each process group named by a PID file in .serve/ (the
# worker first, so no flow run starts meanwhile).
set -uo pipefail

CODE_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
STATE="$CODE_DIR/.serve"
BIN="${VENV:-$CODE_DIR/.venv}/bin"

stop() { # stop NAME: TERM the process group of .serve/NAME.pid, KILL it after 10 s
    local name="$1" file="$STATE/$1.pid" pid
    [[ -f "$file" ]] || return 0
    pid="$(cat "$file")"
    # The group's leader must still be the process serve.sh started (not a reused PID);
    # if the leader is gone, what is left of its group is still ours.
    if [[ "$pid" =~ ^[0-9]+$ ]] && { ps -ww -p "$pid" -o args= | grep -qE "prefect (server|worker) start|mlflow server" ||
        { ! kill -0 "$pid" && kill -0 -- "-$pid"; }; } 2>/dev/null; then
        echo "stopping $name (pid $pid)"
        kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null
        for _ in $(seq 20); do
            kill -0 -- "-$pid" 2>/dev/null || break
            sleep 0.5
        done
        # Whatever is left of the group (a flow run the worker started, server children).
        kill -KILL -- "-$pid" 2>/dev/null || true
    else
        echo "$name is not running"
    fi
    rm -f "$file"
}

if ! compgen -G "$STATE/*.pid" >/dev/null; then
    echo "nothing to stop (no PID files in $STATE)"
    exit 0
fi
status=0
if [[ -x "$BIN/python" ]]; then
    # Exits 1 when a run's cancel failed (it names the run): everything is stopped anyway, and
    # make stop then fails, for that run may go on.
    "$BIN/python" -m instructflow.flows.stop_runs "$STATE" || status=$?
else
    echo "no $BIN/python: flow runs in progress (if any) are not cancelled first" >&2
fi
stop worker
stop mlflow
stop prefect-server
exit "$status"
