"""Filling Prefect's parameter form (the deployment's Custom Run page) as a person does.

Prefect builds the form from the flow's parameter schema (PipelineParams):
one `.schema-form-property` per field, labelled with the field's title
("Max Prompts (Optional)"), nested models as nested properties. A value is
typed into the field found under its parents' labels, so a field the form
does not render, or renders under the wrong parent, fails the fill.
"""

import re
from typing import Any


def title(name: str) -> str:
    """The label pydantic gives a field: max_prompts -> "Max Prompts"."""
    return " ".join(word.capitalize() for word in name.split("_"))


def field(scope, label: str):
    """The form property directly labelled `label` (optional or not) inside `scope`."""
    own_label = scope.page.locator(":scope > .p-label__header .schema-form-property__label")
    pattern = re.compile(rf"^{re.escape(label)}( \(Optional\))?$")
    return scope.locator(".schema-form-property").filter(has=own_label.get_by_text(pattern)).first


def fill(scope, values: dict[str, Any], top_level: bool = False) -> None:
    """Type `values` (nested dicts for nested models) into the properties under `scope`."""
    page = scope.page
    for key, value in values.items():
        prop = field(scope, key if top_level else title(key))
        if isinstance(value, dict):
            fill(prop, value)
            continue
        body = prop.locator(":scope > .p-label__body")
        # `int | None` fields show a type switch first (None selected when the default is None).
        kinds = body.locator(":scope > .p-button-group")
        if kinds.count() and value is not None:
            kinds.get_by_role("button", name=type(value).__name__, exact=True).click()
        if isinstance(value, bool):
            # The switch's checkbox sits under its slider: click the label around both.
            box = body.locator("input[type=checkbox]")
            if box.is_checked() != value:
                body.locator("label").first.click()
        elif isinstance(value, str) and body.locator(".p-select-button__control").count():
            # Prefect's select (an enum or Literal field) opens from the keyboard, not a click.
            body.locator(".p-select-button__control").first.focus()
            page.keyboard.press("ArrowDown")
            page.get_by_role("option", name=value, exact=True).click()
        elif isinstance(value, str):
            body.locator("input, textarea").first.fill(value)
        else:
            body.locator("input").first.fill(str(value))
