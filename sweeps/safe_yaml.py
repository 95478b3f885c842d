"""Reading a spec file defensively: bounded size, depth and node count, no duplicate keys.

`yaml.safe_load` builds no arbitrary objects, but it still reads a 100k-deep nesting into a RecursionError, an
alias bomb (anchors referring to anchors) into a structure whose expansion exhausts memory downstream, and a
repeated key into its last value without a word. `load_yaml` composes the YAML node graph first, measures it
with every alias expanded (memoised, so the measuring itself stays linear), and refuses before any Python
object is built.
"""

from __future__ import annotations

import os
import sys

import yaml

MAX_BYTES = 1_000_000  # a spec is a few hundred bytes; a grid of 100k values fits in under 1 MB
MAX_DEPTH = 32  # a spec nests 4 levels deep (spec > section > field > list)
MAX_NODES = 200_000  # scalars, lists and mappings, with every alias expanded


class YamlLimitError(ValueError):
    """The file is not a YAML spec this tool reads: the message says which limit and the fix."""


class _NoDuplicatesLoader(yaml.SafeLoader):
    """SafeLoader that refuses a key given twice in one mapping (plain SafeLoader keeps the last)."""

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            if not isinstance(key_node, yaml.ScalarNode):
                continue  # a list or mapping as a key: the spec's own checks refuse it
            key = self.construct_object(key_node)
            if key in seen:
                line = key_node.start_mark.line + 1
                raise YamlLimitError(f"key {key!r} is given twice in one mapping (line {line}): keep one")
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def load_yaml(path: str) -> object:
    """The YAML document at `path`; YamlLimitError for a file too large, too deep, too many nodes (aliases
    expanded) or with a duplicate key; OSError / yaml.YAMLError as reading and parsing raise them."""
    size = os.path.getsize(path)
    if size > MAX_BYTES:
        raise YamlLimitError(f"{size:,} bytes, more than {MAX_BYTES:,}: a spec is a short YAML file")
    with open(path, "rb") as f:
        text = f.read()
    if b"\0" in text:
        raise YamlLimitError("holds NUL bytes: it is a binary file, not a YAML spec")
    loader = _NoDuplicatesLoader(text)
    try:
        node = _compose(loader)
        if node is None:
            return None
        _measure(node)
        return loader.construct_document(node)
    finally:
        loader.dispose()


def _compose(loader: yaml.SafeLoader):
    """The document's node graph; nesting deeper than the parser's recursion can take is refused."""
    limit = sys.getrecursionlimit()
    try:
        return loader.get_single_node()
    except RecursionError:
        raise YamlLimitError(f"nests deeper than {MAX_DEPTH} levels: flatten it") from None
    finally:
        sys.setrecursionlimit(limit)


def _measure(root) -> None:
    """Refuse a graph deeper than MAX_DEPTH or larger than MAX_NODES once aliases are expanded (a node reached
    twice through an alias counts twice; an alias to its own ancestor, a cycle, is too deep)."""
    measured: dict[int, tuple[int, int]] = {}  # id(node) -> (values, levels) of its expansion
    stack = [(root, 1, False)]
    while stack:
        node, depth, children_done = stack.pop()
        if id(node) in measured:
            continue
        if depth > MAX_DEPTH:
            raise YamlLimitError(f"nests deeper than {MAX_DEPTH} levels: flatten it")
        children = _children(node)
        if children and not children_done:
            stack.append((node, depth, True))
            stack.extend((child, depth + 1, False) for child in children)
            continue
        values = 1 + sum(measured[id(c)][0] for c in children)
        levels = 1 + max((measured[id(c)][1] for c in children), default=0)
        if values > MAX_NODES:
            raise YamlLimitError(
                f"expands to more than {MAX_NODES:,} values (anchors and aliases counted every "
                "time they are used): write the values out, fewer of them"
            )
        if levels > MAX_DEPTH:
            raise YamlLimitError(f"nests deeper than {MAX_DEPTH} levels: flatten it")
        measured[id(node)] = values, levels


def _children(node) -> list:
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    if isinstance(node, yaml.MappingNode):
        return [part for pair in node.value for part in pair]
    return []
