"""The Dataset section of a dataset run's report.md: what was read, how it was split and
judged, and what was left out or ignored."""

from pathlib import Path

from instructflow.tasks.dataset_names import notes
from instructflow.tasks.gate import gate_verdict
from instructflow.tasks.report_judge import GATE, SAID_IN, verdict_said_above
from instructflow.tasks.schemas import SPLITS


def dataset_markdown(result: dict) -> str:
    """Markdown after the report's own sections (result: the run's report.json content)."""
    summary = result["dataset"]
    lines = ["", "## Dataset", "", f"- directory: `{summary['dir']}`"]
    lines += [
        f"- {name}: `{t['file']}`, {t['rows']} rows, md5 `{t['md5']}`"
        for name, t in summary["tables"].items()
    ]
    lines += [
        f"- preferences: {summary['preference_shape']}, K counts {_k_counts(summary)}"
        + _left_out(summary),
        f"- splits by {summary['split_rule']}: {split_counts_text(summary['split_counts'])}",
        *[f"- warning: {w}" for w in summary.get("split_warnings", [])],
        *[f"- {line}" for line in notes(summary)],  # ignored columns, files not read
        f"- SFT trained on {summary['sft_source']}; prompts rendered: {summary['rendering']}",
        f"- rows longer than the context: {overlong_text(summary.get('overlong', {}), summary.get('overlong_rows'))}",
        "- gold score: none (no gold oracle on a user's dataset)",
    ]
    lines += [f"- {name}: {reason}" for name, reason in result["skipped"].items()]
    lines += [
        f"- judge: {result['judge']['kind']}, {result['judge']['training_pairs']} training pairs,"
        f" accuracy {result['judge']['accuracy_heldout_pairs']:.3f} on held-out pairs"
        f" ({verdict_said_above(result)})",  # its reason is said once, earlier in report.md
        # its reason is said once, in the Promotion gate section that opens report.md
        f"- gate ({result['gate']['evidence']}): {gate_verdict(result['gate']).lower()}"
        f" (see {SAID_IN[GATE]})",
    ]
    return "\n".join(lines) + "\n"


def _k_counts(summary: dict) -> str:
    """{K: rankings}, read alike from the run's own summary (int K) and from report.json (str
    K, as JSON keys are): `eval import` renders report.md again from the latter."""
    return "{" + ", ".join(f"{k}: {n}" for k, n in summary["k_counts"].items()) + "}"


def split_counts_text(counts: dict[str, dict[str, int]]) -> str:
    """Rows per split of each table in words ('preferences 240 train, 30 valid, 30 test; ...'),
    where the summary's nested dict, printed as it was, read as code. Splits in the order
    train, valid, test: the counts come in the order rows met them ('94 train, 15 test, 11
    valid' beside '289 train, 33 valid, 78 test')."""
    order = {split: i for i, split in enumerate(SPLITS)}
    return "; ".join(
        f"{table} "
        + ", ".join(
            f"{splits[split]} {split}" for split in sorted(splits, key=lambda s: order.get(s, 3))
        )
        for table, splits in counts.items()
    )


def _left_out(summary: dict) -> str:
    """The conversation pairs left out for sharing no prompt: said of conversations only (a
    table of text pairs or rankings has no turns to share, and '0 conversation pairs' there
    read as if its pairs had been looked for and not found)."""
    if summary["preference_shape"] != "conversation":
        return ""
    n = summary.get("no_shared_prefix", 0)
    return f", {n} conversation pairs without a shared prompt (left out{left_out_rows(summary)})"


def left_out_rows(summary: dict) -> str:
    """'; rows 4, 9 of preferences.jsonl' (the first rows left out, '...' when there are more)."""
    rows = summary.get("no_shared_prefix_rows") or []
    if not rows:
        return ""
    named = rows_named(summary.get("no_shared_prefix", 0), rows)
    return f"; {named} of {summary['tables']['preferences']['file']}"


def training_example(dataset, tokenizer, room: int = 240) -> str | None:
    """SFT's first example as the base model reads it, its special tokens written out (its
    end, where the prompt's frame meets the answer, when it is longer than `room`):
    'demonstrations.jsonl row 1: "[INST] Say it. [/INST] it</s>"'. None without one."""
    from instructflow.models.batching import encode_pair

    item = next((i for i in [*dataset.demonstrations, *dataset.preferences] if i.responses), None)
    if item is None:
        return None
    ids, _ = encode_pair(tokenizer, item.prompt, item.responses[0], 10**9)
    text = tokenizer.decode(ids, skip_special_tokens=False)
    shown = text if len(text) <= room else "..." + text[-room:]
    return f"{Path(item.file).name} row {item.row}: {shown!r}"


def left_out_notes(summary: dict) -> list[str]:
    """Lines on the valid rows a run leaves out: conversation pairs with no shared prompt,
    rows longer than the context that dataset.overlong dropped or cut; none without."""
    lines = []
    if n := summary.get("no_shared_prefix", 0):
        pairs = "pair whose sides differ" if n == 1 else "pairs whose sides differ"
        lines.append(
            f"left out: {n} conversation {pairs} before the last turn"
            f" (no shared prompt{left_out_rows(summary)})"
        )
    overlong = summary.get("overlong", {})
    if any(counts for file, counts in overlong.items() if file != "policy"):
        text = overlong_text(overlong, summary.get("overlong_rows"))
        lines.append(f"rows longer than the context: {text}")
    return lines


def rows_named(n: int, named: list[int]) -> str:
    """'row 7', or 'rows 4, 9' of `n` rows ('rows 4, 9, ...' when `named` holds only the first)."""
    more = ", ..." if n > len(named) else ""
    return f"{'row' if n == 1 else 'rows'} {', '.join(map(str, named))}{more}"


def overlong_text(overlong: dict, rows: dict | None = None) -> str:
    """The rows longer than the base model's context, in words: 'none (dataset.overlong:
    refuse)', or each file's dropped or truncated rows under the policy, the first of them
    named (`rows`: the summary's overlong_rows). The summary's dict (`{'policy': 'refuse'}`),
    printed as it was, read as code and said nothing of the rows."""
    policy = f"dataset.overlong: {overlong.get('policy', 'refuse')}"
    files = [
        f"{file} {_counted(counts, (rows or {}).get(file, {}))}"
        for file, counts in overlong.items()
        if file != "policy" and counts
    ]
    return f"{'; '.join(files)} ({policy})" if files else f"none ({policy})"


def _counted(counts: dict[str, int], named: dict[str, list[int]]) -> str:
    """'1 dropped, 2 truncated' or, with their rows, '1 dropped (row 7), 2 truncated (rows 2,
    3)' ('...' when more were)."""
    return ", ".join(
        f"{n} {what} ({rows_named(n, named[what])})" if named.get(what) else f"{n} {what}"
        for what, n in counts.items()
    )
