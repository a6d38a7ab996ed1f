"""CSV cells a person opens in a spreadsheet: text stays text.

A cell starting with =, +, -, @, a tab or a carriage return is a formula to Excel,
LibreOffice and Google Sheets: a sampled response "=SUM(...)" or "-3 + 4" in
`eval export`'s labeling.csv would be computed (or run). A leading apostrophe
makes such a cell text; the spreadsheet shows the text without it and drops it
when it saves, while a file edited as plain text keeps it: `as_exported` reads
either back as the text exported.
"""

FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def spreadsheet_text(text: str) -> str:
    """`text` as a CSV cell a spreadsheet shows as text, never as a formula."""
    return f"'{text}" if text.startswith(FORMULA_START) else text


def as_exported(text: str) -> str:
    """A cell read back: the apostrophe `spreadsheet_text` added, if still there, removed."""
    return text[1:] if text.startswith("'") and text[1:].startswith(FORMULA_START) else text
