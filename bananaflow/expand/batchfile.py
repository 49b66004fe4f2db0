"""Batch files (YAML, JSONL, CSV) read into specs; every error names the file, line and field.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import (
    ValidationError,
)

from bananaflow.errors import InputError
from bananaflow.expand.expansion import base_prompt, short_text, spec_label
from bananaflow.expand.references import absolute
from bananaflow.expand.specs import LIST_FIELDS, MAX_EDIT_STEPS, MAX_VARIANTS, PromptSpec
from bananaflow.generation import ASPECT_RATIOS, IMAGE_SIZES
from bananaflow.yamlio import AliasLimitError, RatioSafeLoader

BATCH_SUFFIXES = (".yaml", ".yml", ".jsonl", ".csv")
_BatchLoader = RatioSafeLoader


@dataclass
class _Item:
    """One raw spec from a file, with where it came from for error messages."""

    raw: Any
    path: Path
    line: int
    unit: str = "line"
    prompt_no: int | None = None
    field_lines: dict[str, int] = field(default_factory=dict)

    @property
    def where(self) -> str:
        return self.locate(None)

    def locate(self, field_name: str | None) -> str:
        """Point at the field's own line when the format lets us (YAML), else at the item."""
        line = self.field_lines.get(field_name or "", self.line)
        which = f", prompt {self.prompt_no}" if self.prompt_no is not None else ""
        return f"{self.path} {self.unit} {line}{which}"


def _relocated(err: InputError, where: str) -> InputError:
    return InputError(err.field, f"{err.problem} (in {where})", fix=err.fix)


def _read_text(path: Path) -> str:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise InputError(
            "batch file",
            f"{path} does not exist",
            fix="check the path (relative paths start at the current directory)",
        ) from None
    except IsADirectoryError:
        raise InputError("batch file", f"{path} is a directory", fix="pass a file") from None
    except OSError as e:
        reason = e.strerror or e.__class__.__name__
        raise InputError("batch file", f"cannot read {path}: {reason}") from None
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        raise InputError(
            "batch file",
            f"{path} is not UTF-8 text (byte 0x{data[e.start]:02x} at line {line})",
            fix="save the file as UTF-8",
        ) from None


def _yaml_items(text: str, path: Path) -> list[_Item]:
    loader = _BatchLoader(text)
    try:
        node = loader.get_single_node()
        data = loader.construct_document(node) if node is not None else None
    except AliasLimitError as e:
        raise InputError(
            "batch file",
            f"{path}: {str(getattr(e, 'problem', '') or e).strip()}",
            fix="write the repeated values out, or split the batch",
        ) from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None) or getattr(e, "context_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = str(getattr(e, "problem", "") or "").strip()
        detail = f": {problem}" if problem else ""
        raise InputError(
            "batch file", f"{path} is not valid YAML{where}{detail}", fix="fix the YAML syntax"
        ) from None
    finally:
        loader.dispose()
    if data is None:
        raise InputError("batch file", f"{path} is empty", fix="add a list of prompts")
    seq_node: yaml.Node | None = node
    if isinstance(data, dict):
        extra = [k for k in data if k != "prompts"]
        if extra:
            raise InputError(
                "batch file",
                f"{path} has an unknown top-level key {short_text(extra[0])}",
                fix="put the prompt list under `prompts:` (or make the file a plain list)",
            )
        if "prompts" not in data:
            raise InputError("prompts", f"{path} has no `prompts:` key", fix="add `prompts:`")
        data = data["prompts"]
        assert isinstance(node, yaml.MappingNode)
        seq_node = next(v for k, v in node.value if k.value == "prompts")
    if not isinstance(data, list):
        raise InputError(
            "prompts",
            f"{path} must hold a list of prompts, got {type(data).__name__}",
            fix="write each prompt as a `- ` list item",
        )
    assert isinstance(seq_node, yaml.SequenceNode)
    items: list[_Item] = []
    for i, (raw, item_node) in enumerate(zip(data, seq_node.value, strict=True)):
        field_lines: dict[str, int] = {}
        if isinstance(item_node, yaml.MappingNode):
            for key_node, value_node in item_node.value:
                if isinstance(key_node, yaml.ScalarNode):
                    field_lines[str(key_node.value)] = value_node.start_mark.line + 1
        line = item_node.start_mark.line + 1
        items.append(_Item(raw, path, line, prompt_no=i + 1, field_lines=field_lines))
    return items


def _jsonl_items(text: str, path: Path) -> list[_Item]:
    items: list[_Item] = []
    # Split on \n only: str.splitlines() would also split on U+2028, which JSON allows raw.
    for lineno, line in enumerate(text.split("\n"), 1):
        if not line.strip():
            continue
        try:
            raw = json.loads(line)
        except json.JSONDecodeError as e:
            raise InputError(
                "batch file",
                f"{path} line {lineno} is not valid JSON: {e.msg} at column {e.colno}",
                fix="write one JSON object per line",
            ) from None
        items.append(_Item(raw, path, lineno))
    return items


_CSV_COLUMNS = tuple(name for name in PromptSpec.model_fields if name != "variables")


def _csv_items(text: str, path: Path) -> list[_Item]:
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    try:
        header = [h.strip() for h in next(reader)]
        seen: set[str] = set()
        for name in header:
            if name in seen:
                raise InputError("column", f"{path} has the column {name!r} twice")
            seen.add(name)
            is_var = name.startswith("var.") and len(name) > len("var.")
            if name not in _CSV_COLUMNS and not is_var:
                raise InputError(
                    "column",
                    f"{path} has an unknown column {name!r}",
                    fix=f"use {', '.join(_CSV_COLUMNS)}, or var.<name> for a template variable",
                )
        items: list[_Item] = []
        previous_end = reader.line_num
        for row in reader:
            start, previous_end = previous_end + 1, reader.line_num
            if not any(cell.strip() for cell in row):
                continue
            if len(row) > len(header):
                raise InputError(
                    "batch file",
                    f"{path} row {start} has {len(row)} cells but the header has {len(header)}",
                    fix="quote cells that contain commas",
                )
            raw: dict[str, Any] = {}
            for name, cell in zip(header, row, strict=False):
                cell = cell.strip()
                if not cell:
                    continue  # empty cell = not set, so one CSV can mix texts and templates
                if name.startswith("var."):
                    raw.setdefault("variables", {})[name[len("var.") :]] = cell
                elif name in LIST_FIELDS:
                    raw[name] = [part.strip() for part in cell.split(";") if part.strip()]
                else:
                    raw[name] = cell
            items.append(_Item(raw, path, start, unit="row"))
        return items
    except csv.Error as e:
        raise InputError(
            "batch file", f"{path} is not valid CSV (line {reader.line_num}): {e}"
        ) from None


def _field_name(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _from_validation(err: ValidationError, item: _Item) -> InputError:
    first = err.errors(include_url=False)[0]
    loc = tuple(first["loc"])
    kind = first["type"]
    value = first.get("input")
    top = str(loc[0]) if loc else None
    name = _field_name(loc) or "text/template"
    fix = ""
    if top == "start_image":
        problem = f"{short_text(value)} is not an image reference"
        fix = "write a path, a file:// or gs:// URL, or {run: <run id>, job: <job id>}"
    elif top == "edits" and kind == "too_long":
        problem = f"has {len(value)} steps, over the {MAX_EDIT_STEPS} an edit chain may have"
        fix = "split it: start a second chain from this one's last image ({run, job})"
    elif top == "edits" and len(loc) > 1:
        name = _field_name(loc[:2])
        problem = f"{short_text(value)} is not an instruction"
        fix = "write each edit instruction as text"
    elif top == "edits" and kind == "value_error":
        problem = str(first["msg"]).removeprefix("Value error, ")
        fix = "write each edit as a non-empty instruction, or remove the empty one"
    elif top == "references" and len(loc) > 1:
        # A union (path or {run, job}): pydantic's first branch ("a valid string") misleads.
        name = _field_name(loc[:2])
        problem = f"{short_text(value)} is not a reference"
        fix = "write a path, a file:// or gs:// URL, or {run: <run id>, job: <job id>}"
    elif kind == "extra_forbidden":
        problem = "unknown field"
        fix = f"remove it or use one of: {', '.join(PromptSpec.model_fields)}"
    elif kind == "literal_error":
        allowed = {"aspect_ratios": ASPECT_RATIOS, "image_sizes": IMAGE_SIZES}.get(top or "")
        problem = f"{short_text(value)} is not allowed"
        expected = ", ".join(allowed) if allowed else (first.get("ctx") or {}).get("expected", "")
        fix = f"use one of {expected}"
    elif kind == "too_short":
        problem = "is an empty list"
        fix = "list at least one value, or leave the field out to use the config default"
    elif kind == "value_error":
        problem = str(first["msg"]).removeprefix("Value error, ")
        if not loc and _is_edit(item):  # PromptSpec._an_edit_chain: "<field> ...; <fix>"
            name = problem.split(" ", 1)[0]
            problem, _, fix = problem.partition("; ")
        elif not loc:
            fix = "write the prompt under text:, or a template under template: with variables:"
    else:
        problem = f"{str(first['msg']).rstrip('.').lower()} (got {short_text(value)})"
        if top == "variants":
            fix = f"use a whole number from 1 to {MAX_VARIANTS}"
    return InputError(name, f"{problem} (in {item.locate(top)})", fix=fix)


def _is_edit(item: _Item) -> bool:
    """Whether the raw spec is meant as an edit chain (its errors then name edit fields)."""
    return isinstance(item.raw, dict) and bool({"edits", "start_image"} & item.raw.keys())


def _to_spec(item: _Item) -> PromptSpec:
    raw = item.raw
    if isinstance(raw, str):
        raw = {"text": raw}
    if not isinstance(raw, dict):
        raise InputError(
            "prompt",
            f"expected a mapping or a string, got {type(raw).__name__} (in {item.where})",
            fix="write `text: ...` or `template: ...` with its fields",
        )
    bad_key = next((k for k in raw if not isinstance(k, str)), None)
    if bad_key is not None:
        raise InputError(
            "prompt", f"field name {short_text(bad_key)} is not text (in {item.where})"
        )
    try:
        spec = PromptSpec.model_validate(raw)
    except ValidationError as e:
        raise _from_validation(e, item) from None
    if spec.edits is None:
        try:
            base_prompt(spec, spec_label(spec, 0) if spec.id else "the prompt")
        except InputError as e:
            raise _relocated(e, item.locate(e.field)) from None
    base = item.path.resolve().parent  # a relative path means "next to the batch file"
    if spec.references:
        spec = spec.model_copy(update={"references": [absolute(r, base) for r in spec.references]})
    if spec.start_image is not None:
        spec = spec.model_copy(update={"start_image": absolute(spec.start_image, base)})
    return spec


def load_batch(path: str | Path) -> list[PromptSpec]:
    """Read a batch file (.yaml/.yml, .jsonl, .csv) into specs, or fail with ONE clear error.

    Prompt-level checks that need no config (template placeholders, missing variables, blank or
    over-long prompts) run here too, because only here do we still know the file line to point at.
    """
    p = Path(path)
    suffix = p.suffix.lower()
    text = _read_text(p)
    if suffix not in BATCH_SUFFIXES:
        raise InputError(
            "batch file",
            f"{p} has an unsupported extension {suffix or '(none)'}",
            fix=f"use one of {', '.join(BATCH_SUFFIXES)}",
        )
    if not text.strip():
        raise InputError("batch file", f"{p} is empty", fix="add at least one prompt")
    if suffix in (".yaml", ".yml"):
        items = _yaml_items(text, p)
    elif suffix == ".jsonl":
        items = _jsonl_items(text, p)
    else:
        items = _csv_items(text, p)
    if not items:
        raise InputError("batch file", f"{p} holds no prompts", fix="add at least one prompt")
    return [_to_spec(item) for item in items]
