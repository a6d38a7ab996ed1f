"""Where a figure was made: thread pinning, and the machine and software a run records.

Two runs with the same seed, data, code and thread count on the same machine
give the same report. Across machines they need not: torch picks its CPU
kernels by vector extension (AVX2, AVX-512, AMX) and splits reductions by
thread count, and a float sum in another order rounds differently; sampling
then amplifies the last bit into other tokens. So every report carries the
facts that decide this, and `compare` says when two reports differ in them.
"""

import os
import platform
import re
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

# The /proc/cpuinfo flags that choose torch's kernels (x86 vector units; ARM's on aarch64).
VECTOR_FLAG = re.compile(r"^(avx.*|amx.*|fma|f16c|sse4_2|asimd.*|sve.*|neon)$")
# Fields that describe the machine or the software rather than the run.
MACHINE_FIELDS = ("cpu_model", "cpu_flags", "torch_cpu_capability", "gpu", "platform")
SOFTWARE_FIELDS = ("torch", "transformers", "python", "instructflow")
RUN_FIELDS = ("threads", "processes", "seed", "git_commit", "git_clean")
# What a report's `run` block says the run was made from, besides its provenance.
INPUT_FIELDS = ("profile", "world_version", "dvc_data_md5", "data_mismatch", "data_dir")


def available_cores() -> int:
    """The cores this process may run on (its CPU affinity, not the machine's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def pin_threads(threads: int | None) -> dict[str, int]:
    """Set torch's intra-op and inter-op thread counts; return what torch now uses.

    None means every available core. The inter-op count can be set only once
    per process, before any parallel work; later calls keep the first value
    (and the report records the value in force, not the one asked for).
    """
    import torch

    wanted = threads or available_cores()
    torch.set_num_threads(wanted)
    try:
        torch.set_num_interop_threads(wanted)
    except RuntimeError:
        pass  # already started or already set in this process
    return {"threads": torch.get_num_threads(), "interop_threads": torch.get_num_interop_threads()}


def parse_cpuinfo(text: str) -> tuple[str, list[str]]:
    """(CPU model, its vector extensions) from the text of /proc/cpuinfo (x86 or ARM)."""
    model, flags = "", []
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key in ("model name", "Model", "cpu model") and not model:
            model = value.strip()
        elif key in ("flags", "Features") and not flags:
            flags = sorted(f for f in value.split() if VECTOR_FLAG.match(f))
    return model, flags


def _cpuinfo() -> tuple[str, list[str]]:
    path = Path("/proc/cpuinfo")
    model, flags = parse_cpuinfo(path.read_text(errors="replace")) if path.exists() else ("", [])
    return model or platform.processor() or "unknown", flags


def _package_version(name: str) -> str:
    try:
        return version(name)
    except PackageNotFoundError:
        return "absent"


def _gpu() -> str | None:
    import torch

    if not torch.cuda.is_available():
        return None
    names = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    return f"{names[0]} x{len(names)}" if len(set(names)) == 1 else ", ".join(names)


def _git(root: Path) -> tuple[str, bool | None]:
    """(commit, clean) of the code that runs; clean is None outside a git checkout."""
    from instructflow.tasks.tracking import git_commit

    commit = git_commit(root)
    if commit == "unknown":
        return commit, None
    return commit.removesuffix("+dirty"), not commit.endswith("+dirty")


def collect(seed: int, code_root: Path | None = None, processes: int = 1) -> dict[str, Any]:
    """The provenance block of a report: machine, software, threads in force, training
    processes (`--processes`), seed, commit."""
    import torch

    cpu_model, cpu_flags = _cpuinfo()
    commit, clean = _git(code_root or Path(__file__).resolve().parent.parent)
    return {
        "seed": seed,
        "threads": torch.get_num_threads(),
        "interop_threads": torch.get_num_interop_threads(),
        "processes": processes,
        "cores_available": available_cores(),
        "cpu_model": cpu_model,
        "cpu_flags": cpu_flags,
        "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "gpu": _gpu(),
        "platform": f"{platform.system()}-{platform.machine()}",
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": _package_version("transformers"),
        # what an installed (pip) copy has to say of its code: it has no git checkout
        "instructflow": _package_version("instructflow"),
        "git_commit": commit,
        "git_clean": clean,
    }


def mlflow_tags(prov: dict[str, Any]) -> dict[str, str]:
    """The provenance as MLflow tags (`provenance.<field>`), lists joined by spaces."""
    return {
        f"provenance.{k}": " ".join(map(str, v)) if isinstance(v, list) else str(v)
        for k, v in prov.items()
    }


def compare(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    """How two provenance blocks differ: {"same_machine", "same_software", "differences"}.

    `differences` maps each differing field to its two values. A comparison of
    figures across machines, versions, threads or seeds should say so.
    """
    fields = MACHINE_FIELDS + SOFTWARE_FIELDS + RUN_FIELDS
    differences = {f: [a.get(f), b.get(f)] for f in fields if a.get(f) != b.get(f)}
    return {
        "same_machine": not any(f in differences for f in MACHINE_FIELDS),
        "same_software": not any(f in differences for f in SOFTWARE_FIELDS),
        "differences": differences,
    }


def describe_comparison(result: dict[str, Any]) -> str:
    """One paragraph a person reads before trusting a difference between two reports."""
    diffs = result["differences"]
    if not diffs:
        return "Same machine, software, threads, seed and commit: the reports should be identical."
    lines = []
    if not result["same_machine"]:
        lines.append("Compared ACROSS MACHINES: figures may differ in the last bits and beyond.")
    if not result["same_software"]:
        lines.append("Compared across software versions.")
    for field, (left, right) in diffs.items():
        if field == "stage_keys":  # from input_differences
            lines.append(f"- other settings or inputs (cache keys differ): {', '.join(left)}")
        else:
            lines.append(f"- {field}: {left} vs {right}")
    return "\n".join(lines)


def input_differences(a: dict[str, Any], b: dict[str, Any]) -> dict[str, list]:
    """How two reports' `run` blocks differ in what the runs were made from: profile, data
    and, through the stage cache keys, every stage's settings and inputs."""
    differences = {f: [a.get(f), b.get(f)] for f in INPUT_FIELDS if a.get(f) != b.get(f)}
    keys_a, keys_b = a.get("stage_keys", {}), b.get("stage_keys", {})
    # A stage only one report keys (a skipped policy; a key older reports did not record)
    # is not a difference of inputs: the policy table names what only one report has.
    changed = sorted(s for s in set(keys_a) & set(keys_b) if keys_a[s] != keys_b[s])
    if "settings" in a and "settings" in b:  # each run's settings off its profile's defaults
        set_a, set_b = a["settings"], b["settings"]
        for name in [*set_a, *(n for n in set_b if n not in set_a)]:
            if set_a.get(name, ...) != set_b.get(name, ...):
                pair = [set_a.get(name, "default"), set_b.get(name, "default")]
                differences[f"setting {name}"] = pair
    if changed:
        differences["stage_keys"] = [changed, None]
    return differences
