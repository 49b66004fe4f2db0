"""Step 1 of the chain: prompt specs (files or flow parameters) become concrete ``ImageJob``s.

Everything here runs before any money is spent, so every problem a user can make in a batch file
is caught here and reported as ONE readable ``InputError`` naming the file, the line and the field,
instead of surfacing later as a backend 400 in the middle of a paid run.

Identity matters more than anything else in this module: a job's id is a hash of what it will
render (prompt, ratio, size, variant, backend, model), so re-running the same batch finds the
images it already paid for, and promotion can name exactly the dev images that were approved.

Templates use ``string.Template`` (``$name`` / ``${name}``) on purpose: it only substitutes
identifiers, in a single pass, so a batch file can never run code, read attributes or files, or
re-expand a value that itself contains ``$``. No ``str.format``, no Jinja, no eval.
"""

from __future__ import annotations

import asyncio
import csv
import hashlib
import io
import json
import string
import unicodedata
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from bananaflow.config import ExpandSettings, GenerateSettings
from bananaflow.errors import InputError
from bananaflow.models import ASPECT_RATIOS, IMAGE_SIZES, AspectRatio, BackendName, ImageSize
from bananaflow.yamlio import RatioSafeLoader

MAX_PROMPT_CHARS = 30_000  # the API's limit; ImageRequest enforces the same bound
MAX_VARIANTS = 16
BATCH_SUFFIXES = (".yaml", ".yml", ".jsonl", ".csv")
_LIST_FIELDS = ("presets", "aspect_ratios", "image_sizes")


# --------------------------------------------------------------------------- models


class PromptSpec(BaseModel):
    """What a user writes: one prompt plus the matrix it should be rendered over.

    Only structural checks live here (so constructing a spec never needs the config); checks
    that need settings or produce a prompt (presets, templates, length) happen in ``expand`` and
    are reported as ``InputError``.
    """

    model_config = ConfigDict(extra="forbid")

    id: str | None = None
    text: str | None = None
    template: str | None = None
    variables: dict[str, str] = Field(default_factory=dict)
    presets: list[str] = Field(default_factory=list)
    aspect_ratios: list[AspectRatio] | None = Field(None, min_length=1)
    image_sizes: list[ImageSize] | None = Field(None, min_length=1)
    variants: int = Field(1, ge=1, le=MAX_VARIANTS)
    backend: BackendName | None = None
    model: str | None = None

    @field_validator(*_LIST_FIELDS, mode="before")
    @classmethod
    def _single_value_is_a_list(cls, v: Any) -> Any:
        # `presets: catalogue` in YAML is an obvious intent; refusing it would only annoy.
        return [v] if isinstance(v, str) else v

    @field_validator("variables", mode="before")
    @classmethod
    def _scalars_are_text(cls, v: Any) -> Any:
        # YAML turns `count: 3` into an int; a template only ever substitutes text.
        if not isinstance(v, Mapping):
            return v
        out: dict[Any, Any] = {}
        for key, value in v.items():
            if isinstance(value, bool):
                value = "true" if value else "false"
            elif isinstance(value, int | float):
                value = str(value)
            out[key] = value
        return out

    @model_validator(mode="after")
    def _exactly_one_source(self) -> PromptSpec:
        if self.text is not None and self.template is not None:
            raise ValueError("both text and template are set; give exactly one")
        if self.text is None and self.template is None:
            raise ValueError("neither text nor template is set; give exactly one")
        return self


class ImageJob(BaseModel):
    """One image to render: fully resolved, so nothing downstream needs the spec or the config."""

    model_config = ConfigDict(extra="forbid")

    job_id: str
    spec_id: str
    prompt: str
    original_prompt: str
    aspect_ratio: AspectRatio
    image_size: ImageSize
    variant: int = 0
    presets: list[str] = Field(default_factory=list)
    backend: BackendName | None = None
    model: str | None = None
    rewritten: bool = False


def _canonical(data: Any) -> bytes:
    """Key order, whitespace and platform must never change a hash that names paid-for images."""
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def compute_job_id(
    *,
    prompt: str,
    aspect_ratio: str,
    image_size: str,
    variant: int,
    backend: str | None,
    model: str | None,
) -> str:
    """The identity of a render; re-runs and promotion find earlier images through it."""
    payload = {
        "prompt": prompt,
        "aspect_ratio": aspect_ratio,
        "image_size": image_size,
        "variant": variant,
        "backend": backend,
        "model": model,
    }
    return hashlib.sha256(_canonical(payload)).hexdigest()[:16]


def _spec_hash(spec: PromptSpec) -> str:
    return hashlib.sha256(_canonical(spec.model_dump(mode="json", exclude={"id"}))).hexdigest()[:12]


# --------------------------------------------------------------------------- prompts


def _short(value: Any, limit: int = 60) -> str:
    """A one-line, bounded rendering of user input for an error message."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _normalise(text: str) -> str:
    # NFC + LF so a file saved on macOS/Windows hashes like the same file saved on Linux.
    return unicodedata.normalize("NFC", text.replace("\r\n", "\n").replace("\r", "\n")).strip()


def _label(spec: PromptSpec, index: int) -> str:
    return f"prompt {spec.id!r}" if spec.id else f"prompt #{index + 1}"


def _render_template(template: str, variables: Mapping[str, str], label: str) -> str:
    tpl = string.Template(template)
    for match in tpl.pattern.finditer(template):
        if match.group("invalid") is not None:
            pos = match.start()  # the `$` itself, where the user will look
            line = template.count("\n", 0, pos) + 1
            col = pos - (template.rfind("\n", 0, pos) + 1) + 1
            raise InputError(
                "template",
                f"{label} has an invalid placeholder {_short(template[pos : pos + 40])} "
                f"at line {line}, column {col}",
                fix="placeholders are $name or ${name} (letters, digits, _); write $$ for a "
                "literal $",
            )
    missing = [name for name in tpl.get_identifiers() if name not in variables]
    if missing:
        names = ", ".join(f"${n}" for n in missing)
        known = ", ".join(sorted(variables)) or "none"
        raise InputError(
            "variables",
            f"{label} uses {names} but no value is given (variables given: {known})",
            fix=f"add {missing[0]} under variables (or a var.{missing[0]} CSV column)",
        )
    # One pass only: a value containing `$other` stays literal text.
    return tpl.substitute(variables)


def _base_prompt(spec: PromptSpec, label: str) -> str:
    """The user's prompt before presets and rewrite: what ``original_prompt`` records."""
    if spec.template is not None:
        source = "template"
        text = _render_template(spec.template, spec.variables, label)
    else:
        source = "text"
        text = spec.text or ""
    text = _normalise(text)
    if not text:
        what = "expands to a blank prompt" if source == "template" else "is blank"
        raise InputError(source, f"{label} {what}", fix="write the prompt to render")
    if len(text) > MAX_PROMPT_CHARS:
        raise InputError(
            source,
            f"{label} is {len(text):,} characters, over the {MAX_PROMPT_CHARS:,} limit",
            fix="shorten the prompt",
        )
    return text


def _preset_texts(spec: PromptSpec, settings: ExpandSettings, label: str) -> list[str]:
    texts: list[str] = []
    for name in _unique(spec.presets):
        if name not in settings.presets:
            known = ", ".join(sorted(settings.presets))
            fix = (
                f"use one of: {known}"
                if known
                else "define it under expand.presets in the config (none are defined)"
            )
            raise InputError("presets", f"unknown preset {name!r} in {label}", fix=fix)
        text = _normalise(settings.presets[name])
        if text:
            texts.append(text)
    return texts


def _with_presets(base: str, preset_texts: list[str]) -> str:
    if not preset_texts:
        return base
    return ", ".join([base.rstrip(" ,"), *preset_texts])


def _unique(items: Iterable[Any]) -> list[Any]:
    return list(dict.fromkeys(items))


# --------------------------------------------------------------------------- expand


def expand(
    specs: list[PromptSpec], settings: ExpandSettings, defaults: GenerateSettings
) -> list[ImageJob]:
    """Specs → jobs over each spec's ratios × sizes × variants, deterministic and deduplicated.

    Duplicate jobs (two specs that resolve to the same render) collapse to the first, because
    paying twice for one identical image is never what a batch author meant.
    """
    jobs: list[ImageJob] = []
    seen: set[str] = set()
    by_id: dict[str, tuple[int, PromptSpec]] = {}
    for index, spec in enumerate(specs):
        label = _label(spec, index)
        if spec.id:
            earlier = by_id.get(spec.id)
            if earlier is not None and earlier[1] != spec:
                raise InputError(
                    "id",
                    f"{spec.id!r} names two different prompts (#{earlier[0] + 1} and #{index + 1})",
                    fix="give each prompt its own id",
                )
            by_id.setdefault(spec.id, (index, spec))
        base = _base_prompt(spec, label)
        prompt = _with_presets(base, _preset_texts(spec, settings, label))
        if len(prompt) > MAX_PROMPT_CHARS:
            raise InputError(
                "presets",
                f"{label} is {len(prompt):,} characters with its presets, over the "
                f"{MAX_PROMPT_CHARS:,} limit",
                fix="shorten the prompt or use fewer presets",
            )
        spec_id = spec.id or _spec_hash(spec)
        ratios = _unique(spec.aspect_ratios or [defaults.aspect_ratio])
        sizes = _unique(spec.image_sizes or [defaults.image_size])
        for ratio in ratios:
            for size in sizes:
                for variant in range(spec.variants):
                    job_id = compute_job_id(
                        prompt=prompt,
                        aspect_ratio=ratio,
                        image_size=size,
                        variant=variant,
                        backend=spec.backend,
                        model=spec.model,
                    )
                    if job_id in seen:
                        continue
                    seen.add(job_id)
                    jobs.append(
                        ImageJob(
                            job_id=job_id,
                            spec_id=spec_id,
                            prompt=prompt,
                            original_prompt=base,
                            aspect_ratio=ratio,
                            image_size=size,
                            variant=variant,
                            presets=_unique(spec.presets),
                            backend=spec.backend,
                            model=spec.model,
                        )
                    )
    return jobs


async def rewrite_jobs(
    jobs: list[ImageJob],
    rewrite: Callable[[str], Awaitable[str]],
    *,
    concurrency: int = 4,
) -> list[ImageJob]:
    """Model-assisted prompt rewriting that never changes a job's identity.

    The id stays the hash of the user's spec so a re-run skips what it already rendered even
    though a model's rewrite is not deterministic. Each distinct prompt is rewritten once, so a
    ratio matrix compares one rewritten prompt across ratios rather than several. A blank (or
    over-long) rewrite keeps the original; a failing ``rewrite`` raises, because silently
    rendering un-rewritten prompts would defeat a run that asked for rewriting. Jobs already
    rewritten are left alone, so calling this twice is harmless.
    """
    if concurrency < 1:
        raise ValueError("concurrency must be at least 1")
    todo = _unique(job.prompt for job in jobs if not job.rewritten)
    gate = asyncio.Semaphore(concurrency)

    async def one(prompt: str) -> str:
        async with gate:
            return await rewrite(prompt)

    tasks = [asyncio.ensure_future(one(p)) for p in todo]
    try:
        results = await asyncio.gather(*tasks)
    except BaseException:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise
    new_prompts: dict[str, str] = {}
    for prompt, result in zip(todo, results, strict=True):
        if not isinstance(result, str):
            raise TypeError(f"rewrite returned {type(result).__name__}, expected str")
        new = _normalise(result)
        if new and new != prompt and len(new) <= MAX_PROMPT_CHARS:
            new_prompts[prompt] = new
    out: list[ImageJob] = []
    for job in jobs:
        new = None if job.rewritten else new_prompts.get(job.prompt)
        out.append(
            job if new is None else job.model_copy(update={"prompt": new, "rewritten": True})
        )
    return out


# --------------------------------------------------------------------------- batch files


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
                f"{path} has an unknown top-level key {_short(extra[0])}",
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
                elif name in _LIST_FIELDS:
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
    if kind == "extra_forbidden":
        problem = "unknown field"
        fix = f"remove it or use one of: {', '.join(PromptSpec.model_fields)}"
    elif kind == "literal_error":
        allowed = {"aspect_ratios": ASPECT_RATIOS, "image_sizes": IMAGE_SIZES}.get(top or "")
        problem = f"{_short(value)} is not allowed"
        expected = ", ".join(allowed) if allowed else (first.get("ctx") or {}).get("expected", "")
        fix = f"use one of {expected}"
    elif kind == "too_short":
        problem = "is an empty list"
        fix = "list at least one value, or leave the field out to use the config default"
    elif kind == "value_error":
        problem = str(first["msg"]).removeprefix("Value error, ")
        if not loc:
            fix = "write the prompt under text:, or a template under template: with variables:"
    else:
        problem = f"{str(first['msg']).rstrip('.').lower()} (got {_short(value)})"
        if top == "variants":
            fix = f"use a whole number from 1 to {MAX_VARIANTS}"
    return InputError(name, f"{problem} (in {item.locate(top)})", fix=fix)


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
        raise InputError("prompt", f"field name {_short(bad_key)} is not text (in {item.where})")
    try:
        spec = PromptSpec.model_validate(raw)
    except ValidationError as e:
        raise _from_validation(e, item) from None
    try:
        _base_prompt(spec, _label(spec, 0) if spec.id else "the prompt")
    except InputError as e:
        raise _relocated(e, item.locate(e.field)) from None
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
