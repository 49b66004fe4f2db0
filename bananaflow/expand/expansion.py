"""Specs to jobs: templates filled, presets appended, ratios x sizes x variants multiplied.
"""

from __future__ import annotations

import string
import unicodedata
from collections.abc import Iterable, Mapping
from typing import Any

from bananaflow.config import ExpandSettings, GenerateSettings, QualityPreset
from bananaflow.errors import InputError
from bananaflow.expand.identity import compute_job_id, spec_hash
from bananaflow.expand.references import ReferenceResolver
from bananaflow.expand.specs import MAX_PROMPT_CHARS, ImageJob, PromptSpec
from bananaflow.generation import is_blank_text
from bananaflow.records import EditStep, ReferenceRef


def short_text(value: Any, limit: int = 60) -> str:
    """A one-line, bounded rendering of user input for an error message."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def normalise(text: str) -> str:
    # NFC + LF so a file saved on macOS/Windows hashes like the same file saved on Linux.
    return unicodedata.normalize("NFC", text.replace("\r\n", "\n").replace("\r", "\n")).strip()


def spec_label(spec: PromptSpec, index: int) -> str:
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
                f"{label} has an invalid placeholder {short_text(template[pos : pos + 40])} "
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


def base_prompt(spec: PromptSpec, label: str) -> str:
    """The user's prompt before presets and rewrite: what ``original_prompt`` records."""
    if spec.template is not None:
        source = "template"
        text = _render_template(spec.template, spec.variables, label)
    else:
        source = "text"
        text = spec.text or ""
    text = normalise(text)
    if is_blank_text(text):  # zero-width and other invisible characters only: still blank
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
    for name in unique(spec.presets):
        if name not in settings.presets:
            known = ", ".join(sorted(settings.presets))
            fix = (
                f"use one of: {known}"
                if known
                else "define it under expand.presets in the config (none are defined)"
            )
            raise InputError("presets", f"unknown preset {name!r} in {label}", fix=fix)
        text = normalise(settings.presets[name])
        if text:
            texts.append(text)
    return texts


def _with_presets(base: str, preset_texts: list[str]) -> str:
    if not preset_texts:
        return base
    return ", ".join([base.rstrip(" ,"), *preset_texts])


def unique(items: Iterable[Any]) -> list[Any]:
    return list(dict.fromkeys(items))


def quality_preset(
    defaults: GenerateSettings, name: str | None, label: str
) -> QualityPreset | None:
    """The preset called ``name`` (None: no preset); an unknown name lists the known ones."""
    if name is None:
        return None
    preset = defaults.quality_presets.get(name)
    if preset is None:
        known = ", ".join(defaults.quality_presets) or "none are defined"
        raise InputError(
            "quality",
            f"unknown quality {name!r} in {label}",
            fix=f"use one of: {known} (generate.quality_presets)",
        )
    return preset


def _references(
    spec: PromptSpec, resolver: ReferenceResolver | None, label: str
) -> list[ReferenceRef]:
    if not spec.references:
        return []
    if resolver is None:
        raise InputError(
            "references", f"{label} has references, but this entry point cannot read them"
        )
    return [resolver.resolve(ref, label) for ref in spec.references]


def expand(
    specs: list[PromptSpec],
    settings: ExpandSettings,
    defaults: GenerateSettings,
    resolver: ReferenceResolver | None = None,
) -> list[ImageJob]:
    """Specs → jobs over each spec's ratios × sizes × variants, deterministic and deduplicated.

    Duplicate jobs (two specs that resolve to the same render) collapse to the first, because
    paying twice for one identical image is never what a batch author meant.

    A quality preset (the spec's ``quality``, else ``generate.quality``) stands in for the
    model, size and backend the spec leaves out: it is resolved here into the job, so the job
    id, the route and the price all see the same model. References are read and hashed here
    (``resolver``) because their hashes are part of the job id.
    """
    jobs: list[ImageJob] = []
    seen: set[str] = set()
    by_id: dict[str, tuple[int, PromptSpec]] = {}
    for index, spec in enumerate(specs):
        label = spec_label(spec, index)
        if spec.id:
            earlier = by_id.get(spec.id)
            if earlier is not None and earlier[1] != spec:
                raise InputError(
                    "id",
                    f"{spec.id!r} names two different prompts (#{earlier[0] + 1} and #{index + 1})",
                    fix="give each prompt its own id",
                )
            by_id.setdefault(spec.id, (index, spec))
        if spec.edits is not None:
            for job in _edit_chains(spec, label, defaults, resolver):
                if job.job_id not in seen:  # a step shared with an earlier chain
                    seen.add(job.job_id)
                    jobs.append(job)
            continue
        base = base_prompt(spec, label)
        prompt = _with_presets(base, _preset_texts(spec, settings, label))
        if len(prompt) > MAX_PROMPT_CHARS:
            raise InputError(
                "presets",
                f"{label} is {len(prompt):,} characters with its presets, over the "
                f"{MAX_PROMPT_CHARS:,} limit",
                fix="shorten the prompt or use fewer presets",
            )
        spec_id = spec.id or spec_hash(spec)
        quality = spec.quality or defaults.quality
        preset = quality_preset(defaults, quality, label) or QualityPreset()
        model = spec.model or preset.model
        backend = spec.backend or preset.backend
        references = _references(spec, resolver, label)
        ratios = unique(spec.aspect_ratios or [defaults.aspect_ratio])
        sizes = unique(spec.image_sizes or [preset.image_size or defaults.image_size])
        for ratio in ratios:
            for size in sizes:
                for variant in range(spec.variants):
                    job_id = compute_job_id(
                        prompt=prompt,
                        aspect_ratio=ratio,
                        image_size=size,
                        variant=variant,
                        backend=backend,
                        model=model,
                        references=[r.sha256 for r in references],
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
                            presets=unique(spec.presets),
                            backend=backend,
                            model=model,
                            quality=quality,
                            references=references,
                            delivery=spec.delivery,
                            preset_delivery=preset.delivery,
                        )
                    )
    return jobs


def _instructions(spec: PromptSpec, label: str) -> list[str]:
    out: list[str] = []
    for i, raw in enumerate(spec.edits or []):
        text = normalise(raw)
        if len(text) > MAX_PROMPT_CHARS:
            raise InputError(
                f"edits[{i}]",
                f"{label}: instruction {i + 1} is {len(text):,} characters, over the "
                f"{MAX_PROMPT_CHARS:,} limit",
                fix="shorten the instruction",
            )
        out.append(text)
    return out


def _edit_chains(
    spec: PromptSpec,
    label: str,
    defaults: GenerateSettings,
    resolver: ReferenceResolver | None,
) -> list[ImageJob]:
    """An edit spec → one chain per ratio × size × variant, each a job per instruction.

    Step k's id hashes the chain up to k (start image and other references, the instructions
    before it, its own, model, size...), so every step is claimed, paid and reused like any
    job, and a chain extended by a step re-renders only the new one. ``references[0]`` is the
    start image; any other references ride along in the first turn.
    """
    assert spec.start_image is not None  # PromptSpec refuses edits without one
    if resolver is None:
        raise InputError(
            "start_image", f"{label} is an edit chain, but this entry point cannot read images"
        )
    instructions = _instructions(spec, label)
    references = [resolver.resolve(spec.start_image, label), *_references(spec, resolver, label)]
    shas = [r.sha256 for r in references]
    spec_id = spec.id or spec_hash(spec)
    quality = spec.quality or defaults.quality
    preset = quality_preset(defaults, quality, label) or QualityPreset()
    model = spec.model or preset.model
    backend = spec.backend or preset.backend
    jobs: list[ImageJob] = []
    for ratio in unique(spec.aspect_ratios or [defaults.aspect_ratio]):
        for size in unique(spec.image_sizes or [preset.image_size or defaults.image_size]):
            for variant in range(spec.variants):
                ids = [
                    compute_job_id(
                        prompt=instruction,
                        aspect_ratio=ratio,
                        image_size=size,
                        variant=variant,
                        backend=backend,
                        model=model,
                        references=shas,
                        earlier_edits=instructions[:k],
                    )
                    for k, instruction in enumerate(instructions)
                ]
                jobs += [
                    ImageJob(
                        job_id=job_id,
                        spec_id=spec_id,
                        prompt=instructions[k],
                        original_prompt=instructions[k],
                        aspect_ratio=ratio,
                        image_size=size,
                        variant=variant,
                        backend=backend,
                        model=model,
                        quality=quality,
                        references=references,
                        delivery=spec.delivery,
                        preset_delivery=preset.delivery,
                        edit=EditStep(
                            chain_id=ids[-1],
                            step=k + 1,
                            steps=len(ids),
                            instructions=instructions[: k + 1],
                            earlier_jobs=ids[:k],
                        ),
                    )
                    for k, job_id in enumerate(ids)
                ]
    return jobs
