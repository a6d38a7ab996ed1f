"""Run settings as a user sees them: the file, its schema, an example, one-line errors.

One shape everywhere: a params file is what the Prefect deployment form
sends, `{"params": {...PipelineParams fields...}}`; the bare fields
`{...}` are accepted too. Keys starting with `_` are comments and are
dropped at any depth, so `instructflow params --example` can say what each
field does inside a file that `instructflow run --params` reads as it is.

A bad value gives one line per problem naming the field and what it allows
(`ParamsError`), never pydantic's multi-line report.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from instructflow.flows.params import PipelineParams

INVALID = "invalid_params"  # pydantic error type carrying explain()'s lines
COMMENT = "_comment"  # key of the comment on a group; "_<field>" comments one field


class ParamsError(ValueError):
    """Run settings that cannot be used; the message is one line per problem."""


def strip_comments(value: Any) -> Any:
    """`value` without keys that start with `_`, at any depth."""
    if isinstance(value, dict):
        return {k: strip_comments(v) for k, v in value.items() if not str(k).startswith("_")}
    if isinstance(value, list):
        return [strip_comments(v) for v in value]
    return value


def read_params_file(path: str | Path) -> dict:
    """The PipelineParams fields in a params file (either shape), comments dropped; or in the
    JSON text itself, when `path` starts with `{` (`--params '{"ppo": {"lr": 3e-5}}'`). A value
    pydantic would convert (`"1e-4"`, `true` for a number) is refused naming the file."""
    file = Path(path)
    is_text = str(path).lstrip().startswith("{") and not file.exists()
    name = "--params text" if is_text else str(file)
    try:
        loaded = json.loads(str(path) if is_text else file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ParamsError(_missing(path)) from None
    except json.JSONDecodeError as error:
        if not is_text and file.suffix.lower() in (".yaml", ".yml"):
            # YAML is not read: it would take `lr: 1e-4` as the text "1e-4" (YAML 1.1 floats
            # need a dot), and "not valid JSON" at line 1 did not say what to write instead
            raise ParamsError(
                f"{file}: a params file is JSON, not YAML (`instructflow params --example >"
                " p.json` writes one to edit)"
            ) from None
        raise ParamsError(
            f"{name} line {error.lineno} column {error.colno}: not valid JSON ({error.msg})"
        ) from None
    except UnicodeDecodeError as error:  # a UTF-16 file (Notepad's "Unicode"), say
        raise ParamsError(
            f"{file}: not UTF-8 text (byte 0x{error.object[error.start]:02x} at offset"
            f" {error.start}); save it as UTF-8"
        ) from None
    except OSError as error:  # a folder, no permission
        raise ParamsError(f"{file}: cannot read the params file ({error.strerror})") from None
    if not isinstance(loaded, dict):
        raise ParamsError(f"{name}: must hold a JSON object of PipelineParams fields")
    loaded = strip_comments(loaded)
    if set(loaded) == {"params"} and isinstance(loaded["params"], dict):
        loaded = loaded["params"]  # the deployment form's shape
    _refuse_as_written(name, loaded)
    return loaded


def _refuse_as_written(name: str, fields: dict) -> None:
    """A value the file itself has wrong (a quoted number, `true` for a number), named with
    the file: pydantic would read `"1e-4"` as a number, so a template's quoted placeholder
    passed unnoticed; build_params refuses it too, but cannot say which file it came from."""
    from instructflow.flows.params_exact import converted_values

    lines = [
        f"{name}: {refused_value(loc, value)}"
        for loc, value in converted_values(PipelineParams, fields)
    ]
    if lines:
        raise ParamsError("\n".join(lines))


def _missing(path: str | Path) -> str:
    """A --params value that is no file: JSON other than an object (`[1, 2]`, `"x"`) is
    named as such, not as a missing file."""
    try:
        json.loads(str(path))
    except ValueError:
        return f"{path}: no such params file"
    return f"--params text {path}: must hold a JSON object of PipelineParams fields"


def _field_schema(path: tuple[str | int, ...]) -> tuple[dict, dict]:
    """(schema of the field at `path`, schema of the object holding it) in PipelineParams."""
    schema = PipelineParams.model_json_schema()
    defs = schema.get("$defs", {})

    def resolve(node: dict) -> dict:
        while "$ref" in node:
            node = defs[node["$ref"].rsplit("/", 1)[1]]
        return node

    def an_object(node: dict) -> dict:
        # an optional nested object (e.g. `sft.lora`: an object or null) is an anyOf: its
        # fields live in the object option, and without this every field under it said
        # only "see `instructflow params --schema`"
        options = [resolve(o) for o in node.get("anyOf", [])]
        return next((o for o in options if "properties" in o), node)

    parent, node = schema, schema
    for part in path:
        parent = an_object(resolve(node))
        node = resolve(parent.get("properties", {}).get(str(part), {}))
    return node, parent


def allowed(node: dict) -> str:
    """What a field's JSON schema allows, in words."""
    options = node.get("anyOf") or [node]
    words = []
    for option in options:
        kind = option.get("type")
        if "const" in option:
            words.append(json.dumps(option["const"]))
        elif kind == "array":
            least = option.get("minItems", 0)
            item = option.get("items", {}).get("type", "value")
            words.append(f"a list of at least {least} {item}" if least else f"a list of {item}s")
        elif "enum" in option:
            words.append("one of " + ", ".join(json.dumps(v) for v in option["enum"]))
        elif kind == "null":
            words.append("null")
        elif kind in ("integer", "number"):
            bounds = [
                f"{op} {option[key]}"
                for key, op in (
                    ("exclusiveMinimum", ">"),
                    ("minimum", ">="),
                    ("exclusiveMaximum", "<"),
                    ("maximum", "<="),
                )
                if key in option
            ]
            noun = "an integer" if kind == "integer" else "a number"
            words.append(noun + (" " + " and ".join(bounds) if bounds else ""))
        elif kind == "boolean":
            words.append("true or false")
        elif kind == "string":
            pattern = option.get("pattern")
            words.append("a string" + (f" matching {pattern}" if pattern else ""))
        elif kind == "object" or "properties" in option:
            words.append("an object with fields " + ", ".join(option.get("properties", {})))
    return " or ".join(words) or "see `instructflow params --schema`"


def explain(error: ValidationError) -> str:
    """One line per problem: the dotted field, what was wrong, what is allowed."""
    lines = []
    for item in error.errors():
        if item["type"] == INVALID:  # already explained (PipelineParams' own validator)
            lines.append(item["msg"])
            continue
        loc = tuple(item["loc"])
        dotted = ".".join(str(p) for p in loc) or "params"
        if item["type"] == "extra_forbidden":
            _, parent = _field_schema(loc)
            fields = ", ".join(parent.get("properties", {}))
            lines.append(f"unknown field {dotted!r}; allowed fields here: {fields}")
            continue
        lines.append(refused_value(loc, item.get("input")))
    return "\n".join(lines)


def refused_value(loc: tuple[str | int, ...], value: Any) -> str:
    """`<dotted field> = <value> is not allowed; expected <what its schema allows>`, and for a
    quoted number or bool (text to JSON) how to write it."""
    from instructflow.flows.params_exact import unquoted

    node, _ = _field_schema(loc)
    dotted = ".".join(str(p) for p in loc) or "params"
    line = f"{dotted} = {json.dumps(value, default=str)} is not allowed; expected {allowed(node)}"
    if (meant := unquoted(value)) is not None:
        line += f" (the quotes make it text: write {meant} without them)"
    return line


def build_params(fields: dict) -> PipelineParams:
    """PipelineParams from plain fields, or a ParamsError naming each bad field."""
    try:
        return PipelineParams(**fields)
    except ValidationError as error:
        lines = explain(error).splitlines()
        raise ParamsError("\n".join(f"params: {line}" for line in lines)) from None
    except TypeError as error:  # e.g. a non-string key
        raise ParamsError(f"params: {error}") from None


def schema() -> dict:
    return PipelineParams.model_json_schema()


def _commented(model: BaseModel) -> dict:
    """A model's fields with their values, each preceded by its description under `_<field>`."""
    out: dict[str, Any] = {}
    doc = (type(model).__doc__ or "").strip().splitlines()
    if doc:
        out[COMMENT] = doc[0]
    for name, info in type(model).model_fields.items():
        value = getattr(model, name)
        if info.description:
            out[f"_{name}"] = f"{info.description} Allowed: {allowed(_json_of(model, name))}."
        out[name] = _commented(value) if isinstance(value, BaseModel) else value
    return out


def _json_of(model: BaseModel, name: str) -> dict:
    node = type(model).model_json_schema()

    def resolved(prop: dict) -> dict:
        return node["$defs"][prop["$ref"].rsplit("/", 1)[1]] if "$ref" in prop else prop

    prop = resolved(node["properties"][name])
    if "anyOf" in prop:  # an optional object (LoRA: null or its settings)
        prop = {**prop, "anyOf": [resolved(option) for option in prop["anyOf"]]}
    return prop


def example() -> dict:
    """Every field at its default, commented, in the deployment form's shape."""
    params = _commented(PipelineParams())
    params[COMMENT] = (
        "PipelineParams of one run. Keys starting with '_' are comments. Stage sizes are the"
        " tiny profile's; a profile resizes the fields left at these defaults in a stage given"
        " whole, as here, and those left out of a stage given in part (a field given in part"
        " is kept, even at its default)."
    )
    return {
        COMMENT: (
            "instructflow run --params FILE reads this; the Prefect manual-run form and"
            " `prefect deployment run --params` take the same {'params': {...}}."
        ),
        "params": params,
    }


def settings_table(params: PipelineParams) -> list[dict[str, str]]:
    """Every setting the run uses, with who set it: `you`, `profile <name>` (a size the profile
    gives a field not set: PipelineParams.stage) or `default`; yours and the profile's first.

    The Prefect run's Parameters tab shows what the form sent, and the form shows the
    stage defaults (sized for tiny): on another profile they are not what the run uses.
    """
    in_force = params.settings_in_force()
    sized = PipelineParams(profile=params.profile).settings_in_force()
    defaults = PipelineParams().settings_in_force()
    rows = []
    for name, value in in_force.items():
        # A key only the user's settings have (`sft.lora.r` once LoRA is on) is the user's.
        if name != "profile" and value != sized.get(name, ...):
            by = "you"
        elif value != defaults.get(name, ...):
            by = "you" if name == "profile" else f"profile {params.profile}"
        else:
            by = "default"
        rows.append({"setting": name, "value": json.dumps(value), "set by": by})
    order = {"you": 0, "default": 2}
    return sorted(rows, key=lambda row: order.get(row["set by"], 1))


def settings_you_set(params: PipelineParams) -> dict[str, Any]:
    """The settings a run set away from its profile's defaults, by name (`ppo.lr`), as values:
    the report's `run.settings` (profile and seed are fields of their own there)."""
    return {
        row["setting"]: json.loads(row["value"])
        for row in settings_table(params)
        if row["set by"] == "you" and row["setting"] not in ("profile", "seed")
    }


SETTINGS = (
    "Every setting this run uses and who set it. The Parameters tab shows what the form "
    "sent (its stage defaults are tiny's, which a profile resizes where left at default), "
    "or for a command-line run its profile, seed and what it set."
)


def decided_at_run_time(params: PipelineParams, threads: int) -> dict[str, Any]:
    """The settings whose empty value means "the run decides", as this run decided them:
    the cores it pinned, whether stages run side by side, what it starts from, where it
    registers. Left empty (null) in the params and the table, two runs that differ in them
    (a smoke and a tiny run's lanes, say) would show the same value."""
    from instructflow.flows.stages import lanes  # torch: the flow has it loaded already

    policy, reward_model = params.registry.names(params.profile, params.data)
    return {
        "threads": threads,
        "side_by_side": lanes(params, threads) == 2,
        "base_model": params.base_model or "embedded",
        "registry.model_name": policy,
        "registry.reward_model_name": reward_model,
    }


def record_settings(params: PipelineParams, threads: int) -> None:
    """The settings in force as the active MLflow run's params (runs compare by them) and
    as the Prefect flow run's table artifact `settings-in-force`, with the values the run
    decided where a setting was left empty (`decided_at_run_time`)."""
    import mlflow
    from prefect.artifacts import create_table_artifact

    decided = decided_at_run_time(params, threads)
    mlflow.log_params(params.settings_in_force() | decided)
    table = [
        row | {"value": json.dumps(decided[row["setting"]])} if row["setting"] in decided else row
        for row in settings_table(params)
    ]
    create_table_artifact(table=table, key="settings-in-force", description=SETTINGS)
