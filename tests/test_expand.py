"""Prompt specs → jobs: batch files on disk, identity, the matrix, presets, templates, errors."""

from __future__ import annotations

import asyncio
import hashlib
import json
from pathlib import Path

import pytest

from bananaflow.config import ExpandSettings, GenerateSettings, load_settings
from bananaflow.errors import InputError
from bananaflow.expand import ImageJob, PromptSpec, expand, load_batch, rewrite_jobs

PRESETS = ExpandSettings(presets={"catalogue": "white background", "social": "bold colours"})
DEFAULTS = GenerateSettings(aspect_ratio="1:1", image_size="1K")
DEMO = Path(__file__).resolve().parent.parent / "configs" / "demo-batch.yaml"


def write(tmp_path: Path, name: str, text: str | bytes) -> Path:
    path = tmp_path / name
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


def jobs_for(*specs: PromptSpec | dict, settings: ExpandSettings = PRESETS) -> list[ImageJob]:
    parsed = [s if isinstance(s, PromptSpec) else PromptSpec.model_validate(s) for s in specs]
    return expand(parsed, settings, DEFAULTS)


def load_error(path: Path) -> InputError:
    with pytest.raises(InputError) as info:
        load_batch(path)
    message = str(info.value)
    assert "\n" not in message, message
    return info.value


# --------------------------------------------------------------------------- batch formats


def test_yaml_list_with_bare_string_items(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "b.yaml",
        """
- a red kite over a field
- id: hero
  template: a $animal in ${place}
  variables: {animal: fox, place: snow}
  presets: [catalogue]
  aspect_ratios: ["1:1", 16:9]
  image_sizes: [2K]
  variants: 2
""",
    )
    specs = load_batch(path)
    assert specs[0] == PromptSpec(text="a red kite over a field")
    assert specs[1].id == "hero"
    # An unquoted 16:9 is base-60 969 in YAML 1.1; the batch reader keeps it a ratio.
    assert specs[1].aspect_ratios == ["1:1", "16:9"]
    assert specs[1].variants == 2
    jobs = expand(specs, PRESETS, DEFAULTS)
    assert [j.prompt for j in jobs[1:]] == ["a fox in snow, white background"] * 4


def test_yaml_mapping_with_prompts_key(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "b.yml",
        "prompts:\n  - text: one\n  - text: two\n    variables: {n: 3, ok: true}\n",
    )
    specs = load_batch(path)
    assert [s.text for s in specs] == ["one", "two"]
    assert specs[1].variables == {"n": "3", "ok": "true"}


def test_jsonl_skips_blank_lines(tmp_path: Path) -> None:
    lines = [
        json.dumps({"id": "a", "text": "first"}),
        "",
        "   ",
        json.dumps({"template": "x $y", "variables": {"y": "z"}, "image_sizes": ["4K"]}),
        # U+2028 is legal raw inside a JSON string; it must not split the line.
        json.dumps({"text": "with\u2028separator"}, ensure_ascii=False),
    ]
    specs = load_batch(write(tmp_path, "b.jsonl", "\n".join(lines) + "\n"))
    assert [s.id for s in specs] == ["a", None, None]
    assert specs[1].image_sizes == ["4K"]
    assert specs[2].text == "with\u2028separator"


def test_csv_with_var_columns_and_semicolon_lists(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "b.csv",
        "id,text,template,var.animal,var.place,presets,aspect_ratios,image_sizes,variants\n"
        'plain,"a cat, sleeping",,,,,,,\n'
        "tpl,,A $animal in $place,owl,a barn,catalogue;social,1:1; 16:9,1K;2K,2\n"
        ",,,,,,,,\n",
    )
    specs = load_batch(path)
    assert len(specs) == 2  # the all-blank row is skipped
    assert specs[0] == PromptSpec(id="plain", text="a cat, sleeping")
    tpl = specs[1]
    assert tpl.variables == {"animal": "owl", "place": "a barn"}
    assert tpl.presets == ["catalogue", "social"]
    assert tpl.aspect_ratios == ["1:1", "16:9"]
    assert tpl.image_sizes == ["1K", "2K"]
    assert tpl.variants == 2
    jobs = expand(specs, PRESETS, DEFAULTS)
    assert len(jobs) == 1 + 2 * 2 * 2
    assert jobs[1].prompt == "A owl in a barn, white background, bold colours"


def test_csv_with_utf8_bom_from_spreadsheets(tmp_path: Path) -> None:
    specs = load_batch(write(tmp_path, "b.csv", "\ufeffid,text\nx,café\n"))
    assert specs == [PromptSpec(id="x", text="café")]


def test_demo_batch_is_nine_quick_jobs_with_three_variants() -> None:
    settings = load_settings("local", environ={})
    jobs = expand(load_batch(DEMO), settings.expand, settings.generate)
    assert len(jobs) == 9
    variants = [j for j in jobs if j.spec_id == "variants"]
    assert sorted(j.variant for j in variants) == [0, 1, 2]
    assert len({j.seed for j in variants}) == 3
    assert {j.image_size for j in jobs} == {"1K"}
    assert {j.aspect_ratio for j in jobs} == {"1:1", "16:9"}
    assert any(j.presets for j in jobs)


# --------------------------------------------------------------------------- identity


def test_job_id_is_sha256_of_canonical_resolved_fields() -> None:
    [job] = jobs_for({"text": "a lighthouse", "presets": ["social"]})
    payload = {
        "aspect_ratio": "1:1",
        "backend": None,
        "image_size": "1K",
        "model": None,
        "prompt": "a lighthouse, bold colours",
        "variant": 0,
    }
    canonical = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    assert job.job_id == hashlib.sha256(canonical.encode()).hexdigest()[:16]


def test_job_id_stable_across_runs_and_key_order() -> None:
    a = {"template": "a $x and $y", "variables": {"x": "1", "y": "2"}, "aspect_ratios": ["4:3"]}
    b = {"aspect_ratios": ["4:3"], "variables": {"y": "2", "x": "1"}, "template": "a $x and $y"}
    first, again, reordered = jobs_for(a)[0], jobs_for(a)[0], jobs_for(b)[0]
    assert first.job_id == again.job_id == reordered.job_id
    assert first.spec_id == reordered.spec_id  # hash of the spec when it has no id


def test_job_id_changes_with_what_is_rendered() -> None:
    base = jobs_for({"text": "a boat"})[0].job_id
    assert jobs_for({"text": "a boat", "aspect_ratios": ["16:9"]})[0].job_id != base
    assert jobs_for({"text": "a boat", "image_sizes": ["2K"]})[0].job_id != base
    assert jobs_for({"text": "a boat", "backend": "vertex"})[0].job_id != base
    assert jobs_for({"text": "a boat", "presets": ["social"]})[0].job_id != base
    # ... but not with the spec's name, which is bookkeeping, not pixels.
    assert jobs_for({"id": "named", "text": "a boat"})[0].job_id == base


def test_same_text_via_text_or_template_is_the_same_job() -> None:
    plain = jobs_for({"text": "a red door"})[0]
    templated = jobs_for({"template": "a $c door", "variables": {"c": "red"}})[0]
    assert plain.job_id == templated.job_id


# --------------------------------------------------------------------------- matrix and presets


def test_matrix_ratios_sizes_variants() -> None:
    jobs = jobs_for(
        {
            "id": "m",
            "text": "a kite",
            "aspect_ratios": ["1:1", "9:16"],
            "image_sizes": ["1K", "4K"],
            "variants": 3,
        }
    )
    assert len(jobs) == 12
    assert len({j.job_id for j in jobs}) == 12
    assert {(j.aspect_ratio, j.image_size, j.variant) for j in jobs} == {
        (r, s, v) for r in ("1:1", "9:16") for s in ("1K", "4K") for v in range(3)
    }
    assert {j.spec_id for j in jobs} == {"m"}


def test_defaults_fill_missing_ratio_and_size() -> None:
    defaults = GenerateSettings(aspect_ratio="21:9", image_size="2K")
    [job] = expand([PromptSpec(text="a canyon")], PRESETS, defaults)
    assert (job.aspect_ratio, job.image_size) == ("21:9", "2K")


def test_presets_are_appended_and_original_prompt_kept() -> None:
    [job] = jobs_for({"text": "a teapot,  ", "presets": ["catalogue", "social", "catalogue"]})
    assert job.prompt == "a teapot, white background, bold colours"
    assert job.original_prompt == "a teapot,"
    assert job.presets == ["catalogue", "social"]


def test_unknown_preset_lists_known_ones() -> None:
    with pytest.raises(InputError) as info:
        jobs_for({"id": "p1", "text": "x", "presets": ["cataloge"]})
    message = str(info.value)
    assert "'cataloge'" in message and "'p1'" in message
    assert "catalogue" in message and "social" in message
    assert info.value.field == "presets"


def test_unknown_preset_without_any_configured_says_where_to_define() -> None:
    with pytest.raises(InputError, match=r"expand\.presets"):
        jobs_for({"text": "x", "presets": ["social"]}, settings=ExpandSettings())


def test_duplicate_jobs_collapse_keeping_order() -> None:
    jobs = jobs_for(
        {"text": "one"},
        {"text": "two", "aspect_ratios": ["1:1", "1:1"]},
        {"id": "again", "text": "one"},
    )
    assert [j.prompt for j in jobs] == ["one", "two"]


def test_same_id_for_different_prompts_is_an_error() -> None:
    with pytest.raises(InputError, match="'dup'"):
        jobs_for({"id": "dup", "text": "a"}, {"id": "dup", "text": "b"})


# --------------------------------------------------------------------------- templates


def test_template_code_injection_is_refused_and_never_run(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    attack = "${__import__('os').system('touch " + str(marker) + "')}"
    with pytest.raises(InputError) as info:
        jobs_for({"template": attack, "variables": {"x": "y"}})
    assert info.value.field == "template"
    assert "\n" not in str(info.value)
    assert not marker.exists()


def test_format_style_fields_stay_literal() -> None:
    [job] = jobs_for({"template": "{0.__class__} {x.__globals__} $v", "variables": {"v": "ok"}})
    assert job.prompt == "{0.__class__} {x.__globals__} ok"


def test_values_are_not_re_expanded() -> None:
    [job] = jobs_for(
        {"template": "$a / ${b} costs $$5", "variables": {"a": "$b", "b": "${a}", "c": "zz"}}
    )
    assert job.prompt == "$b / ${a} costs $5"


def test_text_prompts_are_never_templated() -> None:
    [job] = jobs_for({"text": "save $5 on ${item}"})
    assert job.prompt == "save $5 on ${item}"


def test_missing_variable_is_named() -> None:
    with pytest.raises(InputError) as info:
        jobs_for({"template": "a $colour $thing", "variables": {"thing": "hat"}})
    assert info.value.field == "variables"
    assert "$colour" in str(info.value) and "$thing" not in str(info.value).split("(")[0]


def test_blank_prompts_are_errors() -> None:
    with pytest.raises(InputError, match="blank"):
        jobs_for({"text": "  \n "})
    with pytest.raises(InputError, match="blank"):
        jobs_for({"template": "$a", "variables": {"a": "   "}})


def test_prompt_length_limit_counts_presets() -> None:
    jobs_for({"text": "x" * 30_000})  # exactly at the limit is fine
    with pytest.raises(InputError, match="30,000"):
        jobs_for({"text": "x" * 30_001})
    with pytest.raises(InputError) as info:
        jobs_for({"text": "x" * 29_999, "presets": ["social"]})
    assert info.value.field == "presets"


def test_spec_requires_exactly_one_of_text_and_template() -> None:
    with pytest.raises(ValueError, match="exactly one"):
        PromptSpec(text="a", template="b")
    with pytest.raises(ValueError, match="exactly one"):
        PromptSpec()


# --------------------------------------------------------------------------- file errors


def test_missing_file(tmp_path: Path) -> None:
    err = load_error(tmp_path / "nope.yaml")
    assert "nope.yaml" in str(err) and "does not exist" in str(err)


def test_non_utf8_file_names_the_line(tmp_path: Path) -> None:
    path = write(tmp_path, "latin.yaml", "- fine\n- caf\xe9\n".encode("latin-1"))
    err = load_error(path)
    assert "latin.yaml" in str(err) and "UTF-8" in str(err) and "line 2" in str(err)


def test_bad_yaml_names_the_line(tmp_path: Path) -> None:
    err = load_error(write(tmp_path, "bad.yaml", "- text: ok\n- text: [unclosed\n"))
    assert "bad.yaml" in str(err) and "not valid YAML" in str(err) and "line" in str(err)


def test_bad_json_line(tmp_path: Path) -> None:
    err = load_error(write(tmp_path, "b.jsonl", '{"text": "ok"}\n{"text": \n'))
    assert "b.jsonl line 2" in str(err)


@pytest.mark.parametrize(
    ("body", "field", "needle"),
    [
        ("- text: a\n  colour: red\n", "colour", "unknown field"),
        ("- text: a\n  aspect_ratios: ['7:3']\n", "aspect_ratios[0]", "'7:3'"),
        ("- text: a\n  image_sizes: [8K]\n", "image_sizes[0]", "'8K'"),
        ("- text: a\n  aspect_ratios: []\n", "aspect_ratios", "empty list"),
        ("- text: a\n  variants: 17\n", "variants", "16"),
        ("- text: a\n  template: b\n", "text/template", "both"),
        ("- id: x\n", "text/template", "neither"),
    ],
)
def test_spec_errors_name_file_line_and_field(
    tmp_path: Path, body: str, field: str, needle: str
) -> None:
    err = load_error(write(tmp_path, "specs.yaml", "- fine\n" + body))
    message = str(err)
    assert err.field == field
    assert "specs.yaml line" in message and "prompt 2" in message
    assert needle in message


def test_bad_ratio_error_lists_the_allowed_ones(tmp_path: Path) -> None:
    err = load_error(write(tmp_path, "r.yaml", "- text: a\n  aspect_ratios: ['7:3']\n"))
    assert "r.yaml line 2" in str(err)  # the field's own line, not the item's
    assert "16:9" in err.fix and "21:9" in err.fix


def test_template_problems_are_reported_with_their_line(tmp_path: Path) -> None:
    body = "- text: ok\n- template: 'hello $name'\n  variables:\n    other: x\n"
    err = load_error(write(tmp_path, "t.yaml", body))
    assert err.field == "variables" and "$name" in str(err) and "t.yaml line 4" in str(err)
    err = load_error(write(tmp_path, "u.yaml", "- template: 'costs $5'\n"))
    assert err.field == "template" and "$$" in err.fix and "u.yaml" in str(err)


@pytest.mark.parametrize("body", ["", "   \n\n", "# only a comment\n"])
def test_empty_file(tmp_path: Path, body: str) -> None:
    err = load_error(write(tmp_path, "empty.yaml", body))
    assert "empty.yaml" in str(err) and "empty" in str(err)


@pytest.mark.parametrize("body", ["[]\n", "prompts: []\n"])
def test_empty_prompt_list(tmp_path: Path, body: str) -> None:
    err = load_error(write(tmp_path, "none.yaml", body))
    assert "none.yaml" in str(err) and "no prompts" in str(err)


def test_unknown_top_level_key(tmp_path: Path) -> None:
    err = load_error(write(tmp_path, "k.yaml", "prompts: [a]\ndefaults: {}\n"))
    assert "'defaults'" in str(err) and "k.yaml" in str(err)


def test_unsupported_extension(tmp_path: Path) -> None:
    err = load_error(write(tmp_path, "prompts.txt", "a cat\n"))
    assert "prompts.txt" in str(err) and ".jsonl" in err.fix


def test_csv_unknown_column_and_ragged_row(tmp_path: Path) -> None:
    err = load_error(write(tmp_path, "c.csv", "text,colour\na,red\n"))
    assert "'colour'" in str(err) and "var.<name>" in err.fix
    err = load_error(write(tmp_path, "d.csv", "id,text\nx,a,b\n"))
    assert "d.csv row 2" in str(err)


def test_csv_bad_value_names_the_row(tmp_path: Path) -> None:
    err = load_error(write(tmp_path, "e.csv", "text,image_sizes\na,1K\nb,1K;8K\n"))
    assert err.field == "image_sizes[1]" and "e.csv row 3" in str(err)


def test_non_mapping_item(tmp_path: Path) -> None:
    err = load_error(write(tmp_path, "n.jsonl", "42\n"))
    assert "n.jsonl line 1" in str(err) and "int" in str(err)


# --------------------------------------------------------------------------- rewrite


def test_rewrite_keeps_identity_and_original_prompt() -> None:
    jobs = jobs_for(
        {"text": "a cat", "presets": ["social"], "aspect_ratios": ["1:1", "16:9"]},
        {"text": "a dog"},
    )
    calls: list[str] = []

    async def rewrite(prompt: str) -> str:
        calls.append(prompt)
        return "" if prompt == "a dog" else f"  an elaborate {prompt}  "

    out = asyncio.run(rewrite_jobs(jobs, rewrite))
    assert sorted(calls) == ["a cat, bold colours", "a dog"]  # each distinct prompt once
    assert [j.job_id for j in out] == [j.job_id for j in jobs]
    assert out[0].prompt == "an elaborate a cat, bold colours" and out[0].rewritten
    assert out[0].original_prompt == "a cat"
    assert out[2].prompt == "a dog" and not out[2].rewritten  # blank rewrite keeps the original
    assert not jobs[0].rewritten  # inputs are not mutated


def test_rewrite_is_idempotent_and_propagates_failures() -> None:
    jobs = jobs_for({"text": "a cat"})

    async def once(prompt: str) -> str:
        return prompt.upper()

    first = asyncio.run(rewrite_jobs(jobs, once))
    assert asyncio.run(rewrite_jobs(first, once))[0].prompt == "A CAT"

    async def broken(prompt: str) -> str:
        raise RuntimeError("text model down")

    with pytest.raises(RuntimeError, match="text model down"):
        asyncio.run(rewrite_jobs(jobs, broken))
