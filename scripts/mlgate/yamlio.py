"""The one YAML loader for files a user controls: mlgate.yaml, dvc.yaml, dvc.lock and workflow files.

PyYAML's safe loader builds no objects but is lenient in three ways that hurt a gate, so this one:

- refuses duplicate keys, naming both lines: with PyYAML the last value silently wins, so a
  check declared twice (or a section written twice) would vanish without a word;
- bounds aliases: an alias re-uses its anchor's node, so a "billion laughs" file is small and
  parses fast, but everything that walks the result (validation, the key-line index, a JSON dump)
  walks the expansion. Aliases may add at most MAX_ALIAS_NODES nodes to those written out, the
  expansion may be at most MAX_DEPTH deep, and an anchor may not contain an alias to itself;
- bounds nesting at MAX_DEPTH levels, so deep input is an error with a line, not a RecursionError.

A refusal or a syntax error becomes YamlRefused with the problem and its line only: PyYAML's own
messages quote the offending lines, and the file may be one that must not be echoed.
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from mlgate.errors import MlgateError
from mlgate.paths import MAX_TEXT_BYTES, FileRefused, read_text

MAX_DEPTH = 64
MAX_ALIAS_NODES = 10_000
_MAX_PROBLEM_CHARS = 120
_MERGE_TAG = "tag:yaml.org,2002:merge"
_FLATTEN = f"flatten the nesting: mlgate reads at most {MAX_DEPTH} levels"
_UNALIAS = "write the repeated values out, or use fewer anchors and aliases (&name / *name)"


class YamlRefused(Exception):
    """Not YAML, or YAML mlgate will not load; `problem` is safe to print (no file contents)."""

    def __init__(self, problem: str, line: int | None = None, *, hint: str | None = None) -> None:
        super().__init__(problem)
        self.problem = problem
        self.line = line
        # A syntax error has no hint of its own; a refusal of valid YAML says what to change.
        self.syntax = hint is None
        self.hint = hint or "fix the YAML syntax at that line"

    def describe(self) -> str:
        """`not valid YAML: <problem>` for a syntax error, else the refusal itself."""
        return f"not valid YAML: {self.problem}" if self.syntax else self.problem


@dataclass(frozen=True)
class YamlDocument:
    """The loaded value and the node graph it came from (for the line of each key)."""

    data: Any
    node: yaml.Node | None


class _SafeLoader(yaml.SafeLoader):
    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0
        self.alias_lines: list[int] = []
        # The keys each mapping was written with: merge keys (`<<`) later splice others in.
        self._written_keys: dict[int, list[yaml.Node]] = {}

    def compose_node(self, parent: yaml.Node | None, index: int) -> yaml.Node | None:
        if self.check_event(yaml.AliasEvent):
            self.alias_lines.append(self._next_line())
            return super().compose_node(parent, index)
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                line = self._next_line()
                raise YamlRefused(f"nested more than {MAX_DEPTH} levels deep", line, hint=_FLATTEN)
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def _next_line(self) -> int:
        event: yaml.Event = self.peek_event()  # type: ignore[no-untyped-call]  # untyped in types-PyYAML
        return event.start_mark.line + 1 if event.start_mark is not None else 0

    def compose_mapping_node(self, anchor: Any) -> yaml.MappingNode:
        node = super().compose_mapping_node(anchor)
        self._written_keys[id(node)] = [key_node for key_node, _ in node.value]
        return node

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Hashable, Any]:
        seen: dict[Any, int] = {}
        for key_node in self._written_keys.get(id(node), []):
            if key_node.tag == _MERGE_TAG:
                continue  # `<<: *base` then `key: override` is how merge keys are meant to be used
            key = self.construct_object(key_node, deep=True)
            try:
                known = key in seen
            except TypeError:
                continue  # unhashable: the base class reports it
            line = key_node.start_mark.line + 1
            if known:
                shown = _short(repr(key), 60)
                raise YamlRefused(
                    f"duplicate key {shown} at lines {seen[key]} and {line}",
                    line,
                    hint="keep one of the two: YAML keys must be unique, and a loader would silently use the last",
                )
            seen[key] = line
        return super().construct_mapping(node, deep)


def _short(text: str, limit: int = _MAX_PROBLEM_CHARS) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def _check_graph(root: yaml.Node, alias_lines: list[int]) -> None:
    """Refuse cyclic anchors and expansions too large or too deep, without expanding anything."""
    where = alias_lines[0] if alias_lines else None
    # Per distinct node: (expanded node count, expanded depth); an iterative walk, as the depth is the question.
    done: dict[int, tuple[int, int]] = {}
    open_nodes: set[int] = set()
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, children_done = stack.pop()
        ident = id(node)
        if children_done:
            open_nodes.discard(ident)
            size, depth = 1, 1
            for child in _children(node):
                child_size, child_depth = done[id(child)]
                size += child_size
                depth = max(depth, child_depth + 1)
            done[ident] = (size, depth)
            if depth > MAX_DEPTH:
                raise YamlRefused(f"aliases expand it more than {MAX_DEPTH} levels deep", where, hint=_FLATTEN)
            if size - len(done) > MAX_ALIAS_NODES:
                problem = f"aliases expand to more than {MAX_ALIAS_NODES} nodes beyond those written out"
                raise YamlRefused(problem, where, hint=_UNALIAS)
            continue
        if ident in done:
            continue
        if ident in open_nodes:
            raise YamlRefused("an anchor contains an alias to itself", where, hint=_UNALIAS)
        open_nodes.add(ident)
        stack.append((node, True))
        stack.extend((child, False) for child in _children(node) if id(child) not in done)


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.MappingNode):
        return [part for pair in node.value for part in pair]
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    return []


def parse_yaml(text: str) -> YamlDocument:
    """One YAML document from `text`, loaded safely; YamlRefused on any problem."""
    try:
        return _load(text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        problem = exc.problem or exc.context or type(exc).__name__
        if exc.context and exc.problem and exc.problem.startswith("but "):
            problem = f"{exc.context}, {exc.problem}"  # "expected a single document ..., but found another"
        raise YamlRefused(_short(problem), mark.line + 1 if mark is not None else None) from None
    except yaml.reader.ReaderError as exc:
        line = text.count("\n", 0, exc.position) + 1 if isinstance(exc.position, int) else None
        shown = f"#x{exc.character:04x}" if isinstance(exc.character, int) else "(not printable)"
        raise YamlRefused(f"unacceptable character {shown}", line) from None
    except yaml.YAMLError as exc:
        raise YamlRefused(_short(type(exc).__name__)) from None
    except RecursionError:
        raise YamlRefused(f"nested too deeply (more than {MAX_DEPTH} levels)", hint=_FLATTEN) from None


def load_yaml_file(
    path: Path,
    error: type[MlgateError],
    *,
    max_bytes: int = MAX_TEXT_BYTES,
    what: str = "",
    file_hint: str | None = None,
    also: str = "",
) -> YamlDocument:
    """`path` read and parsed safely, or `error` naming the file (and, for a YAML problem, its line).

    `what` starts both messages ("not a readable workflow: "), `file_hint` is the hint for a file that
    is not read at all, and `also` extends the YAML problem's own hint ("; or regenerate it ...").
    """
    try:
        text = read_text(path, max_bytes=max_bytes)
    except FileRefused as exc:
        raise error(f"{path}: {what}{exc.reason}", hint=file_hint, file=str(path)) from None
    try:
        return parse_yaml(text)
    except YamlRefused as exc:
        hint = f"{exc.hint}{also}" if exc.hint else (also.removeprefix("; ") or None)
        raise error(
            f"{path}:{exc.line or '?'}: {what}{exc.describe()}", hint=hint, file=str(path), line=exc.line
        ) from None


def _load(text: str) -> YamlDocument:
    loader = _SafeLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return YamlDocument(data=None, node=None)
        _check_graph(node, loader.alias_lines)
        return YamlDocument(data=loader.construct_document(node), node=node)
    finally:
        loader.dispose()
