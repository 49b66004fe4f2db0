"""Object names: always relative to the store, expanded from the upload name template.

Templates are data, not code: only named fields and slices, so a config cannot reach for
attributes or escape the store with ``..``.
"""

from __future__ import annotations

import re

from bananaflow.errors import InputError


def check_relative(path: str, *, field: str = "storage.path") -> str:
    """Reject anything that could escape the store's root or alias another object name."""
    problem = None
    if not path:
        problem = "the object path is empty"
    elif "\\" in path:
        problem = f"{path!r} contains a backslash"
    elif path.startswith("/") or "://" in path or re.match(r"^[A-Za-z]:", path):
        problem = f"{path!r} is absolute; object paths are relative to the store"
    elif any(ord(c) < 32 for c in path):
        problem = f"{path!r} contains a control character"
    else:
        for seg in path.split("/"):
            if seg in ("", ".", ".."):
                problem = f"{path!r} has an empty, '.' or '..' segment"
                break
    if problem:
        raise InputError(field, problem, fix="use a relative path like images/ab/abcdef.webp")
    return path


_FIELD = re.compile(r"^(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:\[(?P<a>-?\d*):(?P<b>-?\d*)\])?$")


def _expand_field(expr: str, fields: dict[str, str]) -> str:
    m = _FIELD.match(expr)
    if not m:
        raise InputError(
            "upload.name_template",
            f"{{{expr}}} is not allowed; only {{name}} and {{name[a:b]}} are",
            fix="use fields like {prefix}, {sha}, {sha[:2]}, {ext}",
        )
    name = m["name"]
    if name not in fields:
        raise InputError(
            "upload.name_template",
            f"unknown field {{{name}}}; known: {', '.join(sorted(fields))}",
            fix="use one of the known fields",
        )
    value = str(fields[name])
    if m["a"] is None:
        return value
    a = int(m["a"]) if m["a"] else None
    b = int(m["b"]) if m["b"] else None
    return value[a:b]


def object_name(template: str, **fields: str) -> str:
    """Expand a name template with plain fields and slices only (no attribute/index access).

    ``str.format`` would allow ``{sha.__class__}``-style lookups from a config file, so the
    template is parsed by hand; the result must be a clean relative path.
    """
    out: list[str] = []
    pos = 0
    for m in re.finditer(r"\{\{|\}\}|\{([^{}]*)\}|[{}]", template):
        out.append(template[pos : m.start()])
        token = m.group(0)
        if token in ("{{", "}}"):
            out.append(token[0])
        elif m.group(1) is None:
            raise InputError(
                "upload.name_template",
                f"unbalanced brace in {template!r}",
                fix="write {{ or }} for a literal brace",
            )
        else:
            out.append(_expand_field(m.group(1).strip(), fields))
        pos = m.end()
    out.append(template[pos:])
    return check_relative("".join(out), field="upload.name_template")
