"""Environment defaults Prefect must see before it is imported.

tasks/__init__.py imports it, so it runs before any stage module imports prefect.
setdefault: anything the user exported wins.
"""

import os

from tasks.paths import project_root, runs_dir

# Prefect's home (its ephemeral server's database, settings) belongs to the
# project, not to ~/.prefect: two checkouts never see each other's runs or
# concurrency slots.
os.environ.setdefault("PREFECT_HOME", str(project_root() / ".prefect"))

# Prefect's ephemeral server (used when PREFECT_API_URL is unset) migrates its
# database on first start, which takes ~30 s on a 2-core machine: more than
# the default start-up timeout.
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")
# Keep cached task results with the project, beside the outputs they point to.
os.environ.setdefault("PREFECT_LOCAL_STORAGE_PATH", str(runs_dir() / "prefect-results"))
os.environ.setdefault("PREFECT_RESULTS_PERSIST_BY_DEFAULT", "true")
# DVC and Prefect's server would otherwise try to send usage analytics over a
# network we do not have (Prefect's heartbeat logs an ERROR each time it fails).
os.environ.setdefault("DVC_NO_ANALYTICS", "1")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
# Quieter logs: transformers and tokenizers warn about things we do on purpose.
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
# transformers draws a "Loading weights" bar for every model it opens; at these
# sizes each lasts a blink and dozens of them bury the pipeline's own progress.
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
