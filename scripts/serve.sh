#!/usr/bin/env bash
# Start the local MLOps stack on 127.0.0.1 (what `make serve` runs):
#   - a Prefect server (UI and API), with the instructflow-process work pool,
#     the global concurrency limits and the deployments of prefect.yaml;
#   - a Prefect worker on that pool, which runs the triggered flow runs;
#   - an MLflow server on the project's tracking store (mlflow/mlflow.db).
# PIDs and logs go to .serve/; scripts/stop.sh (`make stop`) stops everything.
# Running it again is harmless: what already runs is left alone.
#
# Settings (environment):
#   PREFECT_PORT (4200)  MLFLOW_PORT (5000)
#   INSTRUCTFLOW_ROOT    project root holding mlflow/ (default: this checkout)
#   PREFECT_HOME         where the Prefect server keeps its database (default: $ROOT/.prefect)
#   MLFLOW_TRACKING_URI  where flow runs log (default: the MLflow server started here)
#   VENV                 the virtual environment (default: .venv of this checkout)
set -euo pipefail

CODE_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$CODE_DIR"
BIN="${VENV:-$CODE_DIR/.venv}/bin"
ROOT="${INSTRUCTFLOW_ROOT:-$CODE_DIR}"
STATE="$CODE_DIR/.serve"
PREFECT_PORT="${PREFECT_PORT:-4200}"
MLFLOW_PORT="${MLFLOW_PORT:-5000}"
HOST=127.0.0.1
POOL=instructflow-process
PREFECT_URL="http://$HOST:$PREFECT_PORT"
MLFLOW_URL="http://$HOST:$MLFLOW_PORT"

export PREFECT_HOME="${PREFECT_HOME:-$ROOT/.prefect}"
export PREFECT_API_URL="$PREFECT_URL/api"
export PREFECT_SERVER_API_HOST="$HOST"
export PREFECT_SERVER_API_PORT="$PREFECT_PORT"
export DVC_NO_ANALYTICS=1
export PREFECT_SERVER_ANALYTICS_ENABLED=false
# MLflow's telemetry thread sets and unsets an environment variable while other
# threads read os.environ: a flow run failed on it with KeyError
# '_MLFLOW_TELEMETRY_SESSION_ID' (and there is no network to send it to).
export MLFLOW_DISABLE_TELEMETRY="${MLFLOW_DISABLE_TELEMETRY:-true}"
# The rest of what `instructflow run` sets (instructflow.tasks.env: Prefect's result
# store, offline Hub, quiet tokenizers), for the worker's flow runs too: they import
# Prefect before the flow's code, so a flow cannot set Prefect's settings itself.
# Whatever is exported already wins.
eval "$(INSTRUCTFLOW_ROOT="$ROOT" "$BIN/python" -m instructflow.tasks.env)"
mkdir -p "$STATE" "$ROOT/mlflow/artifacts"
trap 'if (($? != 0)); then echo "serve.sh failed; scripts/stop.sh (make stop) stops whatever it started" >&2; fi' EXIT

command_of() { # what the process of NAME runs (to tell it from a stale PID reused by another process)
    case "$1" in
        prefect-server) echo "prefect server start" ;;
        mlflow) echo "mlflow server" ;;
        worker) echo "prefect worker start" ;;
    esac
}

running() { # running NAME: its pid file names a live process that runs NAME
    local pid
    [[ -f "$STATE/$1.pid" ]] && pid="$(cat "$STATE/$1.pid")" && kill -0 "$pid" 2>/dev/null &&
        ps -ww -p "$pid" -o args= | grep -qF "$(command_of "$1")"
}

alive() { # alive NAME: the process this script just started is still there. Not `running`:
    # right after the fork its command line may still be this script's, before the exec.
    [[ -f "$STATE/$1.pid" ]] && kill -0 "$(cat "$STATE/$1.pid")" 2>/dev/null
}

port_busy() {
    "$BIN/python" - "$1" <<'EOF'
import socket, sys
with socket.socket() as s:
    sys.exit(0 if s.connect_ex(("127.0.0.1", int(sys.argv[1]))) == 0 else 1)
EOF
}

start() { # start NAME COMMAND...: in its own session (process group = PID), logging to .serve/NAME.log
    local name="$1"
    shift
    # Appended, not truncated: a service restarted after it died keeps the lines that
    # say why (a killed worker's log holds its flow runs' last output).
    echo "--- $(date -u +%Y-%m-%dT%H:%M:%SZ) serve.sh starts $name" >>"$STATE/$name.log"
    # SIGINT back to its default: a script's background job starts with SIGINT ignored
    # (POSIX), and a Python program keeps it so. The worker answers SIGTERM by sending
    # itself SIGINT, which then did nothing: after a plain `kill` it went on taking flow runs.
    # (Now it stops, and Prefect ends the runs it started: make stop cancels them first.)
    # GNU env's --default-signal (coreutils 8.31); setsid makes this script Linux's already.
    setsid env --default-signal=INT "$@" >>"$STATE/$name.log" 2>&1 </dev/null &
    echo $! >"$STATE/$name.pid"
}

wait_healthy() { # wait_healthy NAME URL SECONDS
    local name="$1" url="$2" deadline=$((SECONDS + $3))
    until curl -fsS -o /dev/null "$url" 2>/dev/null; do
        if ! alive "$name"; then
            echo "$name exited during start-up; last lines of $STATE/$name.log:" >&2
            tail -n 30 "$STATE/$name.log" >&2
            rm -f "$STATE/$name.pid"
            exit 1
        fi
        if ((SECONDS > deadline)); then
            echo "$name is not healthy at $url after $3 s; see $STATE/$name.log" >&2
            exit 1
        fi
        sleep 1
    done
}

deployments_exist() { # the three deployments of prefect.yaml are on the server
    local name
    for name in scheduled-retrain smoke-check manual-run; do
        "$BIN/prefect" deployment inspect "rlhf_pipeline/$name" >/dev/null 2>&1 || return 1
    done
}

deploy() { # prefect deploy --all, unless the deployments are there and nothing they are made of changed
    # A redeploy replaces a deployment's schedules with prefect.yaml's: a schedule added in
    # the UI was deleted, one switched off there (the weekly retrain) switched on again, the
    # nightly-smoke switched on there off again, on every `make serve` (after a reboot, or
    # to restart a service that died). So only prefect.yaml, the run form's schema or the
    # checkout's place changing redeploys; the stamp lives with the server's database.
    local stamp="$PREFECT_HOME/instructflow-deployed.sha256" digest
    digest="$({ echo "$CODE_DIR"; cat "$CODE_DIR/prefect.yaml"; "$BIN/instructflow" params --schema; } |
        sha256sum | cut -d' ' -f1)"
    if [[ -f "$stamp" && "$(cat "$stamp")" == "$digest" ]] && deployments_exist; then
        echo "deployments unchanged since they were deployed: left as they are (schedules switched on or off, or added, in the UI are kept)"
        return
    fi
    "$BIN/prefect" --no-prompt deploy --all >"$STATE/deploy.log" 2>&1 || {
        echo "prefect deploy failed; see $STATE/deploy.log" >&2
        tail -n 30 "$STATE/deploy.log" >&2
        exit 1
    }
    # Prefect leaves the top level of their parameter schema open: a run with its settings
    # not under "params" was accepted, then crashed in the worker (flows/deploy_schema.py).
    "$BIN/python" -m instructflow.flows.deploy_schema >/dev/null
    echo "$digest" >"$stamp"
    echo "deployed rlhf_pipeline/scheduled-retrain, smoke-check and manual-run from $CODE_DIR (prefect.yaml's schedules replace those set in the UI)"
}

# --- the two servers (started together: each migrates its database on a first start) ---
if running prefect-server; then
    echo "Prefect server already running (pid $(cat "$STATE/prefect-server.pid")) at $PREFECT_URL"
else
    if port_busy "$PREFECT_PORT"; then
        echo "port $PREFECT_PORT is taken by another process; set PREFECT_PORT" >&2
        exit 1
    fi
    if [ -f "$PREFECT_HOME/prefect.db" ]; then
        echo "starting the Prefect server at $PREFECT_URL"
    else
        echo "starting the Prefect server at $PREFECT_URL (a first start migrates its database: ~30 s)"
    fi
    start prefect-server "$BIN/prefect" server start --host "$HOST" --port "$PREFECT_PORT"
    # Where this database is shown: runs started in other shells link it (tasks/env.py).
    mkdir -p "$PREFECT_HOME" && echo "$PREFECT_URL" >"$PREFECT_HOME/served-at.url"
fi
if running mlflow; then
    echo "MLflow server already running (pid $(cat "$STATE/mlflow.pid")) at $MLFLOW_URL"
else
    if port_busy "$MLFLOW_PORT"; then
        echo "port $MLFLOW_PORT is taken by another process; set MLFLOW_PORT" >&2
        exit 1
    fi
    echo "starting the MLflow server at $MLFLOW_URL on $ROOT/mlflow/mlflow.db"
    # No MLflow server jobs (GenAI evaluation workers): this project does not use them,
    # and they would start a dozen idle processes.
    MLFLOW_SERVER_ENABLE_JOB_EXECUTION="${MLFLOW_SERVER_ENABLE_JOB_EXECUTION:-false}" \
        start mlflow "$BIN/mlflow" server --host "$HOST" --port "$MLFLOW_PORT" --workers 1 \
        --backend-store-uri "sqlite:///$ROOT/mlflow/mlflow.db" \
        --default-artifact-root "$ROOT/mlflow/artifacts"
    echo "$MLFLOW_URL" >"$ROOT/mlflow/served-at.url" # where this store is shown (tasks/env.py)
fi
wait_healthy prefect-server "$PREFECT_URL/api/health" 300

# --- work pool, concurrency limits, deployments ----------------------------------
if "$BIN/prefect" work-pool inspect "$POOL" >/dev/null 2>&1; then
    echo "work pool $POOL exists"
else
    "$BIN/prefect" work-pool create "$POOL" --type process >/dev/null
    echo "created work pool $POOL (type process)"
fi
"$BIN/python" -c "from instructflow.tasks.concurrency import ensure_limits; ensure_limits()"
echo "global concurrency limit instructflow-registry exists (training slots are file locks under runs/)"
deploy
wait_healthy mlflow "$MLFLOW_URL/health" 180

# The schedules as the server has them, and the scheduled runs that fell due while the stack
# was down, read before the worker starts (it starts those at once): said at the end.
schedules="$("$BIN/python" -m instructflow.flows.schedules ||
    echo "(could not read the schedules; see the UI: Deployments > rlhf_pipeline / scheduled-retrain)")"

# --- worker ----------------------------------------------------------------------------
if running worker; then
    echo "worker already running (pid $(cat "$STATE/worker.pid")) on pool $POOL"
else
    # Flow runs log to the MLflow server unless MLFLOW_TRACKING_URI says otherwise.
    MLFLOW_TRACKING_URI="${MLFLOW_TRACKING_URI:-$MLFLOW_URL}" \
        start worker "$BIN/prefect" worker start --pool "$POOL" --type process
    sleep 2
    if ! alive worker; then
        echo "the worker exited; last lines of $STATE/worker.log:" >&2
        tail -n 30 "$STATE/worker.log" >&2
        exit 1
    fi
    echo "started a worker on pool $POOL (log: $STATE/worker.log)"
fi

cat <<EOF

Prefect UI: $PREFECT_URL
MLflow UI:  $MLFLOW_URL

Trigger a run:
  UI:  Deployments > rlhf_pipeline / smoke-check > Run > Quick run (a smoke run, about a minute)
       Deployments > rlhf_pipeline / manual-run > Run > Custom run (the form is PipelineParams;
       its Quick run is the tiny profile, 7.3-14.8 minutes on 2 cores)
  CLI: PREFECT_API_URL=$PREFECT_API_URL $BIN/prefect deployment run rlhf_pipeline/manual-run \\
         --params '{"params": {"profile": "smoke"}}'

EOF
# scheduled-retrain's weekly schedule is on as soon as it is deployed and starts a tiny run by
# itself: say so, with the command that pauses it (flows/schedules.py).
echo "$schedules"
echo
echo "Logs and PIDs: $STATE/   Stop everything: make stop"
