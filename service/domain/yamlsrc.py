"""YAML in, plain Python values out, with the line of every key and value kept for errors.

`read_yaml(text, source)` composes the document with PyYAML's safe loader (so anchors and the
usual scalar types work) and walks the node tree itself, recording for each path (a tuple of
mapping keys and list indices) the 1-based line where its value starts. Duplicate keys, which
PyYAML silently accepts, are reported here. `Locator` turns a path into the nearest known line.
"""

from __future__ import annotations

import pathlib
from dataclasses import dataclass

import yaml

__all__ = ["Locator", "Problem", "Unreadable", "read_source", "read_yaml"]

Path = tuple[str | int, ...]


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a rulebook: where (file, line, dotted field) and what."""

    file: str
    line: int
    field: str
    message: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.field or '<document>'}: {self.message}"


class Locator:
    """Maps a path inside the document to the line it came from (or its nearest parent's)."""

    def __init__(self, source: str, lines: dict[Path, int]) -> None:
        self.source = source
        self.lines = lines

    def line(self, path: Path) -> int:
        """The line of `path`, or of its longest prefix that has one (1 for the document)."""
        for end in range(len(path), -1, -1):
            found = self.lines.get(tuple(path[:end]))
            if found is not None:
                return found
        return 1

    def problem(self, path: Path, message: str) -> Problem:
        """A `Problem` at `path`."""
        return Problem(self.source, self.line(path), dotted(path), message)


def dotted(path: Path) -> str:
    """`("actions", "x", "when", 0)` -> `actions.x.when[0]`."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


class Unreadable(Exception):
    """A file that cannot be read as UTF-8 text; the message is the reason (the OS's words)."""


def read_source(source: str) -> str:
    """The UTF-8 text of the file `source`, or `Unreadable` saying why not."""
    try:
        return pathlib.Path(source).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise Unreadable(reason) from None


def read_yaml(text: str, source: str) -> tuple[object, Locator, list[Problem]]:
    """Parse `text`; return (value, locator, problems). The value is None if parsing failed.

    libyaml's parser (`CSafeLoader`: the same nodes and marks; 8 against 39 ms for the
    default rulebook, in every replay process's start-up) when PyYAML has it; a document it
    refuses is parsed again by the pure-Python one, whose error messages are reported."""
    fast = getattr(yaml, "CSafeLoader", None)
    if fast is not None:
        try:
            return _read(text, source, fast)
        except yaml.YAMLError:
            pass
    return _read(text, source, yaml.SafeLoader)


def _read(text: str, source: str,
          loader_class: type[yaml.SafeLoader]) -> tuple[object, Locator, list[Problem]]:
    lines: dict[Path, int] = {(): 1}
    locator = Locator(source, lines)
    problems: list[Problem] = []
    loader = loader_class(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None, locator, [Problem(source, 1, "", "the rulebook is empty")]
        value = _walk(loader, node, (), lines, problems, source)
    except yaml.MarkedYAMLError as exc:
        if loader_class is not yaml.SafeLoader:
            raise  # read again by the pure-Python parser, for its message
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else 1
        what = " ".join(part for part in (exc.context, exc.problem) if part)
        return None, locator, [Problem(source, line, "", f"not valid YAML: {what}")]
    except yaml.YAMLError as exc:
        if loader_class is not yaml.SafeLoader:
            raise
        return None, locator, [Problem(source, 1, "", f"not valid YAML: {exc}")]
    finally:
        loader.dispose()
    return value, locator, problems


def _walk(
    loader: yaml.SafeLoader,
    node: yaml.Node,
    path: Path,
    lines: dict[Path, int],
    problems: list[Problem],
    source: str,
) -> object:
    lines[path] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        loader.flatten_mapping(node)
        out: dict[str, object] = {}
        for key_node, value_node in node.value:
            key = loader.construct_object(key_node, deep=True)
            line = key_node.start_mark.line + 1
            if not isinstance(key, str | int | float | bool) or isinstance(key, bool):
                problems.append(Problem(source, line, dotted(path), "keys must be strings"))
                continue
            key = str(key)
            if key in out:
                problems.append(
                    Problem(source, line, dotted((*path, key)), "duplicate key (first one wins)")
                )
                continue
            out[key] = _walk(loader, value_node, (*path, key), lines, problems, source)
            lines[(*path, key)] = line
        return out
    if isinstance(node, yaml.SequenceNode):
        return [
            _walk(loader, item, (*path, index), lines, problems, source)
            for index, item in enumerate(node.value)
        ]
    return loader.construct_object(node, deep=True)
