"""The sweep spec's JSON Schema and its reference page, both derived from the spec's own declaration.

Types, defaults and ranges come from the pydantic models of `sweeps/spec.py` and the value types of
`proxy_models/settings.py` (the validators a field's type carries say what the YAML may hold: a token count
is a number or a size such as 2B). Descriptions come from the comments beside each field in the code, where
each setting is documented once: the spec's own sections in `sweeps/spec.py`, the `train:` and `run:`
settings on the dataclasses that use them (`ScheduleConfig`, `TrainConfig`, `DataConfig`).

>>> schema = spec_json_schema()
>>> schema["properties"]["search"]["$ref"]
'#/$defs/SearchSpec'
"""

from __future__ import annotations

import ast
import copy
import inspect
import io
import textwrap
import tokenize
from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import GenerateJsonSchema

from powersweep.proxy_models import settings
from powersweep.proxy_models.schedules import ScheduleConfig
from powersweep.proxy_models.shapes import ProxyConfig
from powersweep.proxy_models.train_config import DataConfig, TrainConfig
from powersweep.sweeps import spec

__all__ = ["spec_json_schema", "spec_reference_markdown", "SCHEMA_DIALECT"]

SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"
# YAML 1.1 (the loader's) reads 1e-3 without a dot as a string: the spec takes numbers written as strings
NUMERIC = r"^\s*[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?\s*$"
TOKENS = r"^\s*[0-9.eE+-]+\s*[KMBGT]?\s*$"  # settings.parse_tokens: 2e6, 500M, 12.5K, 2B
_NUMBER = {"anyOf": [{"type": "number"}, {"type": "string", "pattern": NUMERIC}]}
_TOKENS = {"anyOf": [{"type": "number"}, {"type": "string", "pattern": TOKENS}]}
# What a spec's YAML may hold for a value that a BeforeValidator converts: by the validator's function
_INPUTS = {
    settings.number: _NUMBER,
    settings.integer: {"type": "integer"},
    settings.parse_tokens: _TOKENS,
    settings.boolean: {"type": "boolean"},
    settings.compile_choice: {"anyOf": [{"const": "auto"}, {"type": "boolean"}]},
}
# the `_or_auto` checks of sweeps/spec.py: 'auto' or what the check takes
_OR_AUTO = {
    spec._non_negative: {**_NUMBER, "minimum": 0},
    spec._positive_integer: {"type": "integer", "minimum": 1},
}
# The dataclasses whose fields marked `spec_setting` make up a section built by `spec._section`
_SETTINGS_OF = {
    "DataSpec": ((DataConfig,), settings.TRAIN),
    "TrainSpec": ((ScheduleConfig, TrainConfig), settings.TRAIN),
    "RunSpec": ((TrainConfig,), settings.RUN),
}
# The sections in the order the reference lists them: (path in a spec, model)
SECTIONS = (
    ("", spec.SweepSpec),
    ("search", spec.SearchSpec),
    ("search.adaptive", spec.AdaptiveSpec),
    ("train", spec.TrainSpec),
    ("train.data", spec.DataSpec),
    ("run", spec.RunSpec),
)


class _SpecSchema(GenerateJsonSchema):
    """Pydantic's JSON Schema, with what each validator accepts and checks written out."""

    def function_before_schema(self, schema):
        function = schema["function"]["function"]
        check = inspect.getclosurevars(function).nonlocals.get("check") if _is_lambda(function) else None
        if function in _INPUTS:
            return copy.deepcopy(_INPUTS[function])
        if check in _OR_AUTO:
            return {"anyOf": [{"const": "auto"}, *_branches(copy.deepcopy(_OR_AUTO[check]))]}
        return super().function_before_schema(schema)

    def function_after_schema(self, schema):
        inner = self.generate_inner(schema["schema"])
        function = schema["function"]["function"]
        name = getattr(function, "__qualname__", "")
        bound = inspect.getclosurevars(function).nonlocals if "<locals>" in name else {}
        if name.startswith("at_least."):
            _limit(inner, "minimum", bound["low"])
            if bound["high"] is not None:
                _limit(inner, "exclusiveMaximum" if bound["high_open"] else "maximum", bound["high"])
        elif name.startswith("positive."):
            _limit(inner, "exclusiveMinimum", 0)
        elif name.startswith("one_of."):
            inner = {"enum": list(bound["choices"])}
        elif function is settings.model_overrides:
            keys = sorted(f for f in ProxyConfig.__dataclass_fields__)
            inner = {"type": "object", "propertyNames": {"enum": keys}}
        return inner

    def default_schema(self, schema):
        factory = schema.get("default_factory")
        if factory is not None and not schema.get("default_factory_takes_data"):
            value = factory()
            if not isinstance(value, BaseModel):  # a whole nested section: its fields carry their defaults
                schema = {k: v for k, v in schema.items() if k != "default_factory"} | {"default": value}
        return super().default_schema(schema)


def _is_lambda(function: Any) -> bool:
    return getattr(function, "__name__", "") == "<lambda>"


def _branches(schema: dict) -> list[dict]:
    """The alternatives of `schema` (one, unless it is an anyOf), keeping keywords set beside the anyOf."""
    if "anyOf" not in schema:
        return [schema]
    extra = {k: v for k, v in schema.items() if k != "anyOf"}
    return [_limited(branch, extra) for branch in schema["anyOf"]]


def _limited(branch: dict, limits: dict) -> dict:
    numeric = branch.get("type") in ("number", "integer")
    return {**branch, **limits} if numeric else branch


def _limit(schema: dict, keyword: str, value: float) -> None:
    """Put a numeric bound on `schema`'s numeric alternatives (a numeric string's pattern cannot carry it)."""
    for branch in schema.get("anyOf", [schema]):
        if branch.get("type") in ("number", "integer"):
            branch[keyword] = value
        elif branch.get("type") == "array" or "anyOf" in branch:
            _limit(branch.get("items", branch), keyword, value)


def _field_comments(source: str, body: list[ast.stmt], first_line: int = 1) -> dict[str, str]:
    """name -> the comment that documents it, for the fields assigned in `body` (class fields, or keyword
    arguments of a call). A field's comment is the full-line comments above it and the one at its end; the
    full-line comments under a field that ends in a comment continue it when the next field has its own."""
    comments: dict[int, tuple[bool, str]] = {}  # line -> (whole line, text)
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type == tokenize.COMMENT:
            whole = tok.line[: tok.start[1]].strip() == ""
            comments[tok.start[0] + first_line - 1] = (whole, tok.string.lstrip("#").strip())
    fields = [(name, start, end) for name, start, end in body]
    found: dict[str, list[str]] = {}
    previous_end, previous_name, previous_trailing = 0, None, False
    for name, start, end in fields:
        above = [comments[n][1] for n in range(previous_end + 1, start) if comments.get(n, (False,))[0]]
        trailing = [comments[n][1] for n in range(start, end + 1) if n in comments and not comments[n][0]]
        if above and previous_trailing and trailing and previous_name in found:
            found[previous_name] += above
            above = []
        if name is not None:
            found[name] = above + trailing
        previous_end, previous_name, previous_trailing = end, name, bool(trailing)
    return {name: " ".join(text) for name, text in found.items() if text}


def _class_comments(cls: type) -> dict[str, str]:
    """Field name -> comment of the class `cls` (a dataclass or a pydantic model)."""
    lines, first = inspect.getsourcelines(cls)
    source = "".join(lines)
    node = ast.parse(textwrap.dedent(source)).body[0]
    body = []
    for stmt in node.body:
        name = (
            stmt.target.id if isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name) else None
        )
        body.append((name, stmt.lineno + first - 1, stmt.end_lineno + first - 1))
    return _field_comments(source, body, first)


def _call_comments(module: Any, assigned: str) -> dict[str, str]:
    """Keyword -> comment of the call assigned to `assigned` at the top of `module` (a section's own fields
    given to `spec._section`)."""
    source = inspect.getsource(module)
    for node in ast.parse(source).body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == assigned for t in node.targets):
            body = [(k.arg, k.lineno, k.end_lineno) for k in node.value.keywords]
            body.insert(0, (None, node.lineno, node.value.args[-1].end_lineno))
            return _field_comments(source, body)
    raise AssertionError(f"{assigned} is not assigned in {module.__name__}")


def _descriptions(model: type[BaseModel]) -> dict[str, str]:
    """Spec key -> description of the fields of the section `model`."""
    found: dict[str, str] = {}
    sources, section = _SETTINGS_OF.get(model.__name__, ((), None))
    for cls in sources:
        comments = _class_comments(cls)
        for key, field, _ in settings.spec_fields(cls, section):
            if field.name in comments:
                found[key] = comments[field.name]
    if model.__name__ == "TrainSpec":
        found.update(_call_comments(spec, "TrainSpec"))
    try:
        found.update(_class_comments(model))
    except OSError:  # a section made by spec._section (create_model) has no class statement
        pass
    return found


def spec_json_schema() -> dict:
    """The JSON Schema of a sweep spec (`SweepSpec`), with every field's description, default and range;
    editors validate spec YAML against it (docs/reference/spec.md)."""
    schema = spec.SweepSpec.model_json_schema(schema_generator=_SpecSchema)
    definitions = schema.get("$defs", {})
    for _, model in SECTIONS:
        target = schema if model is spec.SweepSpec else definitions[model.__name__]
        described = _descriptions(model)
        for key, prop in target["properties"].items():
            prop.pop("title", None)
            if key in described:
                prop["description"] = described[key]
            elif "$ref" in prop:  # a section: its model's docstring
                prop["description"] = definitions[prop["$ref"].rsplit("/", 1)[-1]]["description"]
    schema["description"] = inspect.getdoc(spec).split("\n\n")[0].replace("\n", " ")
    return {"$schema": SCHEMA_DIALECT, "title": "powersweep sweep spec", **schema}


def _describe_type(prop: dict) -> str:
    """A field's type in words, e.g. 'list of token counts', 'number ≥ 0 or auto'."""
    if "$ref" in prop:
        name = prop["$ref"].rsplit("/", 1)[-1]
        path = next(p for p, m in SECTIONS if m.__name__ == name)
        return f"section [`{path}`](#{path.replace('.', '')})"
    if "const" in prop:
        return f"`{prop['const']}`"
    if "enum" in prop:
        return "one of " + ", ".join(f"`{v}`" for v in prop["enum"])
    if prop.get("pattern") == TOKENS:
        return "token count"
    if "anyOf" in prop:
        words = [_describe_type(b) for b in prop["anyOf"] if b.get("pattern") != NUMERIC]
        if {"pattern": TOKENS, "type": "string"} in prop["anyOf"]:
            words = ["token count (a number, or a size such as 500M or 2B)"]
        return " or ".join(dict.fromkeys(words))
    kind = prop.get("type")
    if kind == "array" and "prefixItems" in prop:
        return "[" + ", ".join(_describe_type(p) for p in prop["prefixItems"]) + "]"
    if kind == "array":
        return "list of " + _describe_type(prop.get("items", {}))
    if kind == "object" and "propertyNames" in prop:
        return "mapping of model fields"
    return {"null": "null", None: "any"}.get(kind, kind)


def _describe_range(prop: dict) -> str:
    """The bounds of a numeric field (its alternatives' and its items'), e.g. '> 0', '≥ 0 and < 1'."""
    words = []
    for branch in prop.get("anyOf", [prop]):
        branch = branch.get("items", branch)
        for sub in branch.get("anyOf", [branch]):
            bounds = []
            for keyword, sign in (
                ("minimum", "≥"),
                ("exclusiveMinimum", ">"),
                ("maximum", "≤"),
                ("exclusiveMaximum", "<"),
            ):
                if keyword in sub:
                    bounds.append(f"{sign} {_number_text(sub[keyword])}")
            if bounds:
                words.append(" and ".join(bounds))
    for key, word in (("minItems", "items ≥"), ("maxItems", "items ≤"), ("minLength", "length ≥")):
        if key in prop and not ("prefixItems" in prop and key in ("minItems", "maxItems")):
            words.append(f"{word} {prop[key]}")
    return "; ".join(dict.fromkeys(words))


def _number_text(value: float) -> str:
    return str(int(value)) if float(value).is_integer() and abs(value) < 1e12 else f"{value:g}"


def _cell(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _default(prop: dict) -> str:
    if "default" not in prop:
        return "required" if prop.get("$ref") is None else ""
    value = prop["default"]
    if isinstance(value, float) and value.is_integer() and abs(value) >= 1e4:
        value = f"{value:g}"
    return f"`{_json_text(value)}`"


def _json_text(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_json_text(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {_json_text(v)}" for k, v in value.items()) + "}"
    return str(value)


def spec_reference_markdown(schema: dict | None = None) -> str:
    """The spec reference page (Markdown): per section, every field with its type, default, range and
    description, rendered from `spec_json_schema()`."""
    schema = schema or spec_json_schema()
    out = [
        "# Spec reference",
        "",
        "<!-- generated by `make docs` (docs/gen_reference.py) from the spec's declaration: do not edit -->",
        "",
        "A sweep spec is a YAML file with the sections below; unknown keys are errors. Types, defaults and",
        "ranges come from the validators in the code, descriptions from the comments beside each field.",
        "Numbers may also be written as strings (`1e-3` without a dot reads as one in YAML 1.1).",
        "The same declaration is a JSON Schema, [`spec.schema.json`](../spec.schema.json), for editors:",
        "see [Validating a spec in your editor](#validating-a-spec-in-your-editor).",
        "",
    ]
    for path, model in SECTIONS:
        target = schema if model is spec.SweepSpec else schema["$defs"][model.__name__]
        out += [f"## {path or 'top level'}", ""]
        if model is not spec.SweepSpec:
            out += [_cell(target.get("description", "")), ""]
        out += ["| key | type | default | range | description |", "| --- | --- | --- | --- | --- |"]
        required = set(target.get("required", ()))
        for key, prop in target["properties"].items():
            default = "required" if key in required else _default(prop)
            row = (
                f"`{key}`",
                _describe_type(prop),
                default,
                _describe_range(prop),
                prop.get("description", ""),
            )
            out.append("| " + " | ".join(_cell(c) for c in row) + " |")
        out.append("")
    out += [
        "## Validating a spec in your editor",
        "",
        "Editors that read JSON Schema for YAML (VS Code with the YAML extension, or any editor running",
        "`yaml-language-server`) check a spec as you type, complete its keys and show these descriptions",
        "when the spec's first line names the schema:",
        "",
        "```yaml",
        "# yaml-language-server: $schema=../../docs/spec.schema.json",
        "name: my-sweep",
        "```",
        "",
        "The path is relative to the spec file (the line above is for a spec in `sweeps/specs/`). The schema",
        "checks what a file can hold (keys, types, ranges); `powersweep plan SPEC` also checks what depends",
        "on several fields (a budget with a stable phase after warmup, presets that exist, a batch that fits",
        "one optimizer step).",
        "",
    ]
    return "\n".join(out)
