"""Request validation with the real services' rules and messages.

The emulator is strict where Google is strict (unknown fields, Vertex roles, Vertex-only image
options on the Gemini API, one candidate) so a client that passes here does not fail on its
first real call. Input may use camelCase or snake_case keys, as Google's JSON parser accepts both.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from bananaflow.emulator import messages as msg
from bananaflow.emulator.catalog import (
    ALL_RATIOS,
    EXTREME_RATIOS,
    SERVICE_TIERS,
    SIZE_SPELLINGS,
    ImageModel,
    image_model,
)
from bananaflow.emulator.routing import Route
from bananaflow.emulator.textgen import count_tokens

_COMMON_TOP = {
    "contents", "systemInstruction", "safetySettings", "tools", "toolConfig",
    "cachedContent", "generationConfig", "serviceTier",
}
TOP_FIELDS = {
    "aistudio": frozenset(_COMMON_TOP | {"store"}),
    "vertex": frozenset(_COMMON_TOP | {"labels", "modelArmorConfig"}),
}
_COMMON_GEN = {
    "temperature", "topP", "topK", "candidateCount", "maxOutputTokens", "stopSequences", "seed",
    "presencePenalty", "frequencyPenalty", "responseMimeType", "responseSchema",
    "responseJsonSchema", "responseModalities", "mediaResolution", "speechConfig",
    "thinkingConfig", "imageConfig", "responseLogprobs", "logprobs",
}
GENERATION_FIELDS = {
    "aistudio": frozenset(_COMMON_GEN | {"enableEnhancedCivicAnswers"}),
    "vertex": frozenset(_COMMON_GEN | {"routingConfig", "audioTimestamp", "modelConfig"}),
}
IMAGE_FIELDS_COMMON = frozenset({"aspectRatio", "imageSize"})
VERTEX_ONLY_IMAGE_FIELDS = frozenset(
    {
        "personGeneration", "imageOutputOptions", "prominentPeople", "outputMimeType",
        "outputCompressionQuality",
    }
)
IMAGE_FIELDS = {
    "aistudio": IMAGE_FIELDS_COMMON,
    "vertex": IMAGE_FIELDS_COMMON | VERTEX_ONLY_IMAGE_FIELDS,
}
OUTPUT_OPTION_FIELDS = frozenset({"mimeType", "compressionQuality"})
THINKING_FIELDS = frozenset({"includeThoughts", "thinkingBudget", "thinkingLevel"})
CONTENT_FIELDS = frozenset({"role", "parts"})
PART_FIELDS = frozenset(
    {
        "text", "inlineData", "fileData", "thought", "thoughtSignature", "functionCall",
        "functionResponse", "executableCode", "codeExecutionResult", "videoMetadata",
        "mediaResolution", "partMetadata",
    }
)
PART_DATA_FIELDS = frozenset(
    {
        "text", "inlineData", "fileData", "functionCall", "functionResponse", "executableCode",
        "codeExecutionResult",
    }
)
BLOB_FIELDS = frozenset({"mimeType", "data", "displayName"})
SAFETY_FIELDS = {
    "aistudio": frozenset({"category", "threshold"}),
    "vertex": frozenset({"category", "threshold", "method"}),
}
MODALITIES = frozenset({"TEXT", "IMAGE", "AUDIO"})
OUTPUT_MIMES = ("image/png", "image/jpeg")
PERSON_GENERATION = frozenset({"ALLOW_ALL", "ALLOW_ADULT", "ALLOW_NONE"})
PROMINENT_PEOPLE = frozenset(
    {"PROMINENT_PEOPLE_UNSPECIFIED", "ALLOW_PROMINENT_PEOPLE", "BLOCK_PROMINENT_PEOPLE"}
)
UPSCALE_FACTORS = {"x2": 2, "x3": 3, "x4": 4}
MAX_UPSCALE_INPUT_BYTES = 10 * 1024 * 1024

# Thought signatures Google documents for history it did not produce (reference §1.6).
DUMMY_SIGNATURES = frozenset(
    {"skip_thought_signature_validator", "context_engineering_is_the_way_to_go"}
)

_SNAKE = re.compile(r"_([a-z0-9])")
_UPPER = re.compile(r"([A-Z])")


def camel(name: str) -> str:
    return _SNAKE.sub(lambda m: m.group(1).upper(), name)


def snake(name: str) -> str:
    """The proto field name Google quotes in paths: ``imageConfig`` -> ``image_config``."""
    return _UPPER.sub(lambda m: "_" + m.group(1).lower(), name)


# ---------------------------------------------------------------------------- schemas
#
# Google parses the whole JSON body against the proto before it validates anything, and lists
# every unknown name it met, so unknown fields are collected in one pass over these trees
# (a dict is a message to descend into, None a field whose content is not checked here).

Schema = dict[str, "Schema | None"]

_BLOB: Schema = dict.fromkeys(BLOB_FIELDS)
_FILE_DATA: Schema = dict.fromkeys(("mimeType", "fileUri", "displayName"))
_PART: Schema = {
    **dict.fromkeys(PART_FIELDS), "inlineData": _BLOB, "fileData": _FILE_DATA,
}
_CONTENT: Schema = {"role": None, "parts": _PART}
_THINKING: Schema = dict.fromkeys(THINKING_FIELDS)


def _image_schema(backend: str) -> Schema:
    out: Schema = dict.fromkeys(IMAGE_FIELDS[backend])
    if backend == "vertex":
        out["imageOutputOptions"] = dict.fromkeys(OUTPUT_OPTION_FIELDS)
    return out


def _top_schema(backend: str) -> Schema:
    generation: Schema = {
        **dict.fromkeys(GENERATION_FIELDS[backend]),
        "imageConfig": _image_schema(backend),
        "thinkingConfig": _THINKING,
    }
    return {
        **dict.fromkeys(TOP_FIELDS[backend]),
        "contents": _CONTENT,
        "systemInstruction": _CONTENT,
        "safetySettings": dict.fromkeys(SAFETY_FIELDS[backend]),
        "generationConfig": generation,
    }


GENERATE_SCHEMA: dict[str, Schema] = {b: _top_schema(b) for b in ("aistudio", "vertex")}
COUNT_SCHEMA: dict[str, Schema] = {
    "aistudio": {
        "contents": _CONTENT,
        "generateContentRequest": {**GENERATE_SCHEMA["aistudio"], "model": None},
    },
    "vertex": {
        "contents": _CONTENT,
        "systemInstruction": _CONTENT,
        "tools": None,
        "generationConfig": GENERATE_SCHEMA["vertex"]["generationConfig"],
        "instances": None,
        "model": None,
    },
}


def collect_unknown(obj: Any, schema: Schema, where: str, out: list[tuple[str, str]]) -> None:
    """Append ``(name as sent, parent path)`` for every field the schema does not know."""
    if not isinstance(obj, dict):
        return
    for key, value in obj.items():
        name = camel(str(key))
        if name not in schema:
            out.append((str(key), where))
            continue
        child = schema[name]
        if child is None:
            continue
        path = f"{where}.{snake(name)}" if where else snake(name)
        if isinstance(value, list):
            for i, item in enumerate(value):
                collect_unknown(item, child, f"{path}[{i}]", out)
        else:
            collect_unknown(value, child, path, out)


def reject_unknown(body: Any, schema: Schema) -> None:
    found: list[tuple[str, str]] = []
    collect_unknown(body, schema, "", found)
    if found:
        raise msg.unknown_fields(found)


def fields(obj: Any, allowed: frozenset[str], where: str) -> dict[str, Any]:
    """The object's fields under camelCase names; unknown names are a 400, as at Google."""
    if not isinstance(obj, dict):
        what = f"'{where}'" if where else "the request"
        raise msg.invalid_json(f"Invalid value at {what}: expected an object.")
    out: dict[str, Any] = {}
    for key, value in obj.items():
        name = camel(key)
        if name not in allowed:
            raise msg.unknown_field(key, where)
        out[name] = value
    return out


def _proto_type(route: Route, name: str) -> str:
    if route.backend == "aistudio":
        return f"type.googleapis.com/google.ai.generativelanguage.{route.version}.{name}"
    return f"type.googleapis.com/google.cloud.aiplatform.{route.version}.{name}"


def decode_base64(value: Any, where: str) -> bytes:
    """Bytes fields are standard or URL-safe base64, like proto3 JSON."""
    if not isinstance(value, str):
        raise msg.bad_request(f"Invalid value at '{where}' (TYPE_BYTES), expected a string.")
    text = value.strip()
    try:
        if "-" in text or "_" in text:
            return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        shown = text if len(text) <= 40 else text[:40] + "..."
        raise msg.bad_request(
            f"Invalid value at '{where}' (TYPE_BYTES), Base64 decoding failed for \"{shown}\""
        ) from None


@dataclass(frozen=True)
class GenerateRequest:
    """What a generateContent body asks for, reduced to what shapes the answer."""

    prompt: str
    aspect_ratio: str = "1:1"
    image_size: str = "1K"
    want_text: bool = True
    include_thoughts: bool = False
    output_mime: str | None = None
    output_quality: int | None = None
    reference_digest: str = ""
    reference_count: int = 0
    # Decoded input images (user references and earlier model images in the history), drawn
    # as thumbnails so a test can see them arrive; not part of equality (the digest is).
    references: tuple[bytes, ...] = field(default=(), compare=False, repr=False)
    # Tokens of every text in the request (all turns and the system instruction).
    text_tokens: int = 0
    seed: int | None = None
    service_tier: str | None = None
    # A multi-turn conversation (edits): every turn's role, and the thought signatures the
    # model turns' images came back with, for the request log (tests read them there).
    roles: tuple[str, ...] = field(default=(), compare=False)
    signatures: tuple[str, ...] = field(default=(), compare=False)
    # The ``fileData`` uris of the images, for the request log (tests read them there).
    file_uris: tuple[str, ...] = field(default=(), compare=False)

    @property
    def user_turns(self) -> int:
        return sum(1 for role in self.roles if role != "model") or 1


@dataclass
class _Contents:
    """What the turns carry: the prompt to draw, texts to count, images to acknowledge."""

    prompt: str = ""
    texts: list[str] = field(default_factory=list)
    images: list[bytes] = field(default_factory=list)
    digest: Any = field(default_factory=hashlib.sha256)
    roles: list[str] = field(default_factory=list)
    signatures: list[str] = field(default_factory=list)
    # ``fileData`` uris already fetched (``filedata.fetch_files``): their bytes are drawn.
    files: Mapping[str, bytes] = field(default_factory=dict)
    file_uris: list[str] = field(default_factory=list)


def _check_role(route: Route, role: Any) -> None:
    if role in ("user", "model"):
        return
    if route.backend == "aistudio" and role in (None, ""):
        return  # the Gemini API lets the role be left blank or unset
    raise msg.bad_request(msg.MSG_BAD_ROLE)


def _has_signature(f: dict[str, Any], where: str) -> bool:
    value = f.get("thoughtSignature")
    if value in (None, ""):
        return False
    if isinstance(value, str) and value in DUMMY_SIGNATURES:
        return True
    decode_base64(value, f"{where}.thought_signature")  # a bytes field: must be base64
    return True


def _check_part(route: Route, part: Any, where: str, acc: _Contents) -> tuple[str, bool]:
    """Validate one part; return its text (if a non-thought text part) and whether it is a
    non-thought image (the parts a model turn must have signed)."""
    f = fields(part, PART_FIELDS, where)
    if not PART_DATA_FIELDS & f.keys():
        raise msg.bad_request(
            f"* GenerateContentRequest.{where}.data: required oneof field 'data' must have one "
            "initialized field\n"
        )
    thought = bool(f.get("thought"))
    if "inlineData" in f:
        blob_where = f"{where}.inline_data"
        blob = fields(f["inlineData"], BLOB_FIELDS, blob_where)
        if not blob.get("mimeType"):
            raise msg.bad_request(f"* GenerateContentRequest.{blob_where}.mime_type: required\n")
        data = decode_base64(blob.get("data", ""), f"{blob_where}.data")
        if not thought:
            acc.digest.update(data)
            acc.images.append(data)
        return "", not thought
    if "fileData" in f and not thought:
        fd = fields(f["fileData"], frozenset(_FILE_DATA), f"{where}.file_data")
        if str(fd.get("mimeType", "")).startswith("image/"):
            uri = str(fd.get("fileUri", ""))
            data = acc.files.get(uri)
            # The same picture by file or inline is the same request; a uri the emulator
            # cannot fetch (gs:// without a GCS endpoint) is acknowledged without its pixels.
            acc.digest.update(data if data is not None else uri.encode())
            acc.images.append(data or b"")
            acc.file_uris.append(uri)
        return "", False
    text = f.get("text")
    if text is not None and not isinstance(text, str):
        raise msg.bad_request(f"Invalid value at '{where}.text' (TYPE_STRING), {text!r}")
    if text and not thought:
        return text, False
    return "", False


def _parse_contents(
    route: Route, contents: Any, *, signed: bool, files: Mapping[str, bytes] | None = None
) -> _Contents:
    """Validate turns; collect the last user turn's text and every text and image.

    ``signed``: the model validates thought signatures (Gemini 3), so a model turn's image
    without one is a 400 naming its 1-based content and part positions.
    """
    if contents is None or contents == []:
        raise msg.bad_request(msg.MSG_NO_CONTENTS)
    if not isinstance(contents, list):
        raise msg.invalid_json("Invalid value at 'contents': expected a list.")
    acc = _Contents(files=files or {})
    for i, content in enumerate(contents):
        where = f"contents[{i}]"
        c = fields(content, CONTENT_FIELDS, where)
        role = c.get("role")
        _check_role(route, role)
        parts = c.get("parts")
        if not parts:
            raise msg.bad_request(msg.MSG_EMPTY_INPUT)
        if not isinstance(parts, list):
            raise msg.invalid_json(f"Invalid value at '{where}.parts': expected a list.")
        acc.roles.append(str(role or ""))
        texts: list[str] = []
        for j, part in enumerate(parts):
            part_where = f"{where}.parts[{j}]"
            text, image = _check_part(route, part, part_where, acc)
            if text:
                texts.append(text)
            if not (image and role == "model"):
                continue
            f = fields(part, PART_FIELDS, part_where)
            if signed and not _has_signature(f, part_where):
                raise msg.missing_signature(i + 1, j + 1)
            acc.signatures.append(str(f.get("thoughtSignature") or ""))
        acc.texts.extend(texts)
        if role in (None, "", "user"):
            acc.prompt = " ".join(texts)
    return acc


def _parse_modalities(route: Route, value: Any) -> bool:
    """True when a text part is wanted; ``["IMAGE"]`` alone suppresses the chatter text."""
    if value is None:
        return True
    if not isinstance(value, list):
        raise msg.invalid_json("Invalid value at 'generation_config.response_modalities'.")
    names: list[str] = []
    for i, item in enumerate(value):
        name = str(item).upper()
        if name not in MODALITIES:
            raise msg.bad_request(
                f"Invalid value at 'generation_config.response_modalities[{i}]' "
                f"({_proto_type(route, 'GenerationConfig.Modality')}), \"{item}\""
            )
        names.append(name)
    return not names or "TEXT" in names


def _parse_output_options(opts: Any, where: str) -> tuple[str | None, int | None]:
    o = fields(opts, OUTPUT_OPTION_FIELDS, where)
    return _check_output_mime(o.get("mimeType"), where), _check_quality(
        o.get("compressionQuality"), where
    )


def _check_output_mime(mime: Any, where: str) -> str | None:
    if mime is None:
        return None
    if mime not in OUTPUT_MIMES:
        raise msg.bad_request(
            f"Unsupported output mime type '{mime}' at '{where}'. "
            f"Supported values are: {', '.join(OUTPUT_MIMES)}."
        )
    return str(mime)


def _check_quality(quality: Any, where: str) -> int | None:
    if quality is None:
        return None
    if isinstance(quality, bool) or not isinstance(quality, int) or not 0 <= quality <= 100:
        raise msg.bad_request(
            f"Invalid compression quality {quality!r} at '{where}': it must be an integer "
            "between 0 and 100."
        )
    return quality


def _check_ratio(route: Route, spec: ImageModel | None, ratio: Any) -> str:
    if ratio not in ALL_RATIOS:
        raise msg.bad_aspect_ratio(ratio)
    allowed = spec.ratios_for(route.backend) if spec is not None else ALL_RATIOS
    if ratio not in allowed or (spec is None and ratio in EXTREME_RATIOS):
        raise msg.ratio_not_for_model(ratio)
    return str(ratio)


def _check_size(spec: ImageModel | None, size: Any) -> str | None:
    """The canonical size, or None when the model ignores imageSize (2.5 Flash, even "8K")."""
    if spec is not None and not spec.sizes:
        return None
    canonical = SIZE_SPELLINGS.get(str(size).upper())
    if canonical is None:
        raise msg.bad_image_size(size)
    if spec is not None and canonical not in spec.sizes:
        raise msg.size_not_for_model(str(size))
    return canonical


def _parse_image_config(route: Route, value: Any) -> dict[str, Any]:
    where = "generation_config.image_config"
    ic = fields(value, IMAGE_FIELDS[route.backend], where)
    spec = image_model(route.model)
    out: dict[str, Any] = {}
    ratio = ic.get("aspectRatio")
    if ratio is not None:
        out["aspect_ratio"] = _check_ratio(route, spec, ratio)
    size = ic.get("imageSize")
    if size is not None:
        canonical = _check_size(spec, size)
        if canonical is not None:
            out["image_size"] = canonical
    person = ic.get("personGeneration")
    if person is not None and person not in PERSON_GENERATION:
        raise msg.bad_request(
            f"Invalid value at '{where}.person_generation' "
            f"({_proto_type(route, 'ImageConfig.PersonGeneration')}), \"{person}\""
        )
    prominent = ic.get("prominentPeople")
    if prominent is not None and prominent not in PROMINENT_PEOPLE:
        raise msg.bad_request(
            f"Invalid value at '{where}.prominent_people' "
            f"({_proto_type(route, 'ImageConfig.ProminentPeople')}), \"{prominent}\""
        )
    mime = _check_output_mime(ic.get("outputMimeType"), f"{where}.output_mime_type")
    quality = _check_quality(
        ic.get("outputCompressionQuality"), f"{where}.output_compression_quality"
    )
    if "imageOutputOptions" in ic:
        opt_mime, opt_quality = _parse_output_options(
            ic["imageOutputOptions"], f"{where}.image_output_options"
        )
        mime = opt_mime or mime
        quality = opt_quality if opt_quality is not None else quality
    if mime is not None:
        out["output_mime"] = mime
    if quality is not None:
        out["output_quality"] = quality
    return out


def _parse_seed(value: Any) -> int:
    """int32, or its decimal string (proto3 JSON accepts both)."""
    if isinstance(value, str) and re.fullmatch(r"-?\d+", value.strip()):
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or not -(2**31) <= value < 2**31:
        raise msg.bad_request(
            f"Invalid value at 'generation_config.seed' (TYPE_INT32), {value!r}"
        )
    return value


def _parse_generation_config(route: Route, value: Any) -> dict[str, Any]:
    where = "generation_config"
    gc = fields(value, GENERATION_FIELDS[route.backend], where)
    out: dict[str, Any] = {}
    count = gc.get("candidateCount")
    if count is not None:
        if isinstance(count, bool) or not isinstance(count, int):
            raise msg.bad_request(
                f"Invalid value at '{where}.candidate_count' (TYPE_INT32), {count!r}"
            )
        if count > 1:
            raise msg.bad_request(msg.MSG_MULTI_CANDIDATES)
    out["want_text"] = _parse_modalities(route, gc.get("responseModalities"))
    if gc.get("seed") is not None:
        out["seed"] = _parse_seed(gc["seed"])
    if "thinkingConfig" in gc:
        tc = fields(gc["thinkingConfig"], THINKING_FIELDS, f"{where}.thinking_config")
        out["include_thoughts"] = bool(tc.get("includeThoughts"))
    if "imageConfig" in gc:
        out.update(_parse_image_config(route, gc["imageConfig"]))
    return out


def _check_safety_settings(route: Route, value: Any) -> None:
    if not isinstance(value, list):
        raise msg.invalid_json("Invalid value at 'safety_settings': expected a list.")
    for i, item in enumerate(value):
        s = fields(item, SAFETY_FIELDS[route.backend], f"safety_settings[{i}]")
        category = str(s.get("category", ""))
        if route.backend == "aistudio" and category.startswith("HARM_CATEGORY_IMAGE_"):
            raise msg.bad_request(
                f"Invalid value at 'safety_settings[{i}].category' "
                f"({_proto_type(route, 'HarmCategory')}), \"{category}\""
            )


def _parse_service_tier(route: Route, value: Any) -> str | None:
    """``flex|standard|priority`` (``unspecified`` means standard); lower case on the wire."""
    name = str(value).lower()
    if name == "unspecified":
        return None
    if name not in SERVICE_TIERS:
        raise msg.bad_request(
            f"Invalid value at 'service_tier' ({_proto_type(route, 'ServiceTier')}), \"{value}\""
        )
    return name


def _system_texts(value: Any) -> list[str]:
    """Texts of the system instruction (billed as prompt; its role is not checked)."""
    si = fields(value, CONTENT_FIELDS, "system_instruction")
    parts = si.get("parts") or []
    if not isinstance(parts, list):
        raise msg.invalid_json("Invalid value at 'system_instruction.parts': expected a list.")
    out: list[str] = []
    for j, part in enumerate(parts):
        f = fields(part, PART_FIELDS, f"system_instruction.parts[{j}]")
        if isinstance(f.get("text"), str) and f["text"]:
            out.append(f["text"])
    return out


def _signs(route: Route) -> bool:
    spec = image_model(route.model)
    return spec is not None and spec.thinks


def _text_tokens(texts: list[str]) -> int:
    return count_tokens(" ".join(texts)) if texts else 0


def parse_generate(
    route: Route, body: Any, files: Mapping[str, bytes] | None = None
) -> GenerateRequest:
    """Validate a generateContent body for this route; raise ``ApiError`` like Google would.

    ``files``: the bytes of its ``fileData`` uris, fetched beforehand (``filedata``)."""
    reject_unknown(body, GENERATE_SCHEMA[route.backend])
    top = fields(body, TOP_FIELDS[route.backend], "")
    acc = _parse_contents(route, top.get("contents"), signed=_signs(route), files=files)
    texts = list(acc.texts)
    if top.get("systemInstruction") is not None:
        texts.extend(_system_texts(top["systemInstruction"]))
    if "safetySettings" in top:
        _check_safety_settings(route, top["safetySettings"])
    options: dict[str, Any] = {}
    if top.get("generationConfig") is not None:
        options = _parse_generation_config(route, top["generationConfig"])
    if top.get("serviceTier") is not None:
        options["service_tier"] = _parse_service_tier(route, top["serviceTier"])
    return GenerateRequest(
        prompt=acc.prompt,
        reference_digest=acc.digest.hexdigest() if acc.images else "",
        reference_count=len(acc.images),
        references=tuple(acc.images),
        text_tokens=_text_tokens(texts),
        roles=tuple(acc.roles),
        signatures=tuple(acc.signatures),
        file_uris=tuple(acc.file_uris),
        **options,
    )


@dataclass(frozen=True)
class CountRequest:
    """What ``countTokens`` counts: the same texts and images generateContent bills."""

    text_tokens: int
    image_count: int
    characters: int


def parse_count_tokens(route: Route, body: Any) -> CountRequest:
    """Validate a countTokens body (AI Studio: ``contents`` or ``generateContentRequest``)."""
    reject_unknown(body, COUNT_SCHEMA[route.backend])
    top = fields(body, frozenset(COUNT_SCHEMA[route.backend]), "")
    inner = top.get("generateContentRequest")
    if inner is not None:
        inner = fields(inner, TOP_FIELDS["aistudio"] | {"model"}, "generate_content_request")
        top = {**inner, **({"contents": top["contents"]} if "contents" in top else {})}
    acc = _parse_contents(route, top.get("contents"), signed=False)
    texts = list(acc.texts)
    if top.get("systemInstruction") is not None:
        texts.extend(_system_texts(top["systemInstruction"]))
    return CountRequest(_text_tokens(texts), len(acc.images), sum(len(t) for t in texts))


@dataclass(frozen=True)
class UpscaleRequest:
    image: bytes
    factor: int
    output_mime: str = "image/png"
    output_quality: int | None = None


def parse_upscale(body: Any) -> UpscaleRequest:
    """Validate an Imagen upscale ``:predict`` body (the form python-genai sends)."""
    top = fields(body, frozenset({"instances", "parameters", "labels"}), "")
    instances = top.get("instances")
    if not isinstance(instances, list) or not instances:
        raise msg.bad_request("instances must contain exactly one image to upscale.")
    inst = fields(instances[0], frozenset({"prompt", "image"}), "instances[0]")
    image = fields(
        inst.get("image"),
        frozenset({"bytesBase64Encoded", "gcsUri", "mimeType"}),
        "instances[0].image",
    )
    data = image.get("bytesBase64Encoded")
    if not data:
        if image.get("gcsUri"):
            raise msg.bad_request("The emulator cannot read gcsUri; send bytesBase64Encoded.")
        raise msg.bad_request("instances[0].image.bytesBase64Encoded is required.")
    if isinstance(data, str) and len(data) > MAX_UPSCALE_INPUT_BYTES:
        raise msg.bad_request(
            f"Input image is {len(data) / 1e6:.1f} MB; the upscale input limit is 10 MB."
        )
    raw = decode_base64(data, "instances[0].image.bytes_base64_encoded")
    params = top.get("parameters")
    if not isinstance(params, dict):
        raise msg.bad_request("parameters.mode must be \"upscale\" for this model.")
    params = {camel(k): v for k, v in params.items()}
    if params.get("mode") != "upscale":
        raise msg.bad_request(
            f"Unsupported mode {params.get('mode')!r}: this model only supports mode \"upscale\"."
        )
    config = params.get("upscaleConfig") or {}
    if not isinstance(config, dict):
        raise msg.invalid_json("Invalid value at 'parameters.upscale_config'.")
    factor_name = {camel(k): v for k, v in config.items()}.get("upscaleFactor")
    if factor_name not in UPSCALE_FACTORS:
        raise msg.bad_request(
            f"Unsupported upscale factor {factor_name!r}. Supported values are: x2, x3, x4."
        )
    out = params.get("outputOptions") or {}
    if not isinstance(out, dict):
        raise msg.invalid_json("Invalid value at 'parameters.output_options'.")
    out = {camel(k): v for k, v in out.items()}
    mime = _check_output_mime(out.get("mimeType"), "parameters.output_options.mime_type")
    quality = _check_quality(
        out.get("compressionQuality"), "parameters.output_options.compression_quality"
    )
    return UpscaleRequest(raw, UPSCALE_FACTORS[factor_name], mime or "image/png", quality)
