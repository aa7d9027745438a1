"""A block of a parsed config file, with typed accessors that know every option's line.

A Section pairs the item tree of the token pass (names, labels, lines) with the values
pyhcl produced for the same block. Accessors never raise for a bad value: they record a
ConfigError in the file's shared Problems and return the default, so that one pass reports
every problem; ``finish()`` raises them all at once as ConfigErrors. Secret options are
read with ``secret=True`` and their values never appear in a message.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Callable, TypeVar

from certfleet.config.duration import format_duration, parse_duration
from certfleet.config.errors import ConfigError, ConfigErrors, DurationError
from certfleet.errors import CertfleetError

T = TypeVar("T")


@dataclass(frozen=True)
class Item:
    """One option (``children is None``) or block of the file, where the token pass found it."""

    key: str
    labels: tuple[str, ...]
    line: int
    children: tuple[Item, ...] | None
    # A labelled block's own values, when pyhcl would merge it with a block of the same key
    # and labels (see ``Section(repeatable=)``); None: the values come from pyhcl's tree.
    data: dict[str, Any] | None = field(default=None, repr=False, compare=False)
    # Where a labelled block's body (between its braces) is in the file's text.
    span: tuple[int, int] | None = field(default=None, repr=False, compare=False)


class Problems:
    """The errors and notices found in one file so far."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.errors: list[ConfigError] = []
        self.notices: list[str] = []


def shown(value: object) -> str:
    """A short, quoted rendering of a non-secret value for an error message."""
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


class Section:
    """The options and sub-blocks of one block (or of the whole file)."""

    def __init__(
        self,
        source: str,
        context: str,
        items: Sequence[Item],
        data: dict[str, Any],
        problems: Problems,
        *,
        kind: str = "",
        line: int | None = None,
        repeatable: Iterable[str] = (),
    ) -> None:
        """``repeatable``: the keys of labelled blocks that may repeat a label (each such
        block is read on its own, its values from its ``Item.data``); any other repeated
        label is an error."""
        self.source = source
        self.context = context
        self.kind = kind
        self.line = line
        self.problems = problems
        self._data = data
        self._options: dict[str, Item] = {}
        self._blocks: dict[str, list[Item]] = {}
        # pyhcl merged the values of these, so they are reported and then left unread
        self._repeated: set[str] = set()
        self._repeated_labels: set[tuple[str, tuple[str, ...]]] = set()
        self._repeatable = frozenset(repeatable)
        self._index(items)

    # -- structure ---------------------------------------------------------------------

    def _index(self, items: Sequence[Item]) -> None:
        labelled: dict[tuple[str, tuple[str, ...]], Item] = {}
        for item in items:
            first = self._options.get(item.key)
            if item.children is None:
                earlier = first or (self._blocks[item.key][0] if item.key in self._blocks else None)
                if earlier is not None:
                    self._duplicate(item, f"set twice (first at line {earlier.line})")
                    self._repeated.add(item.key)
                    continue
                self._options[item.key] = item
                continue
            if first is not None:
                self._duplicate(item, f"set as an option at line {first.line} and as a block")
                self._repeated.add(item.key)
                continue
            if item.labels and item.key not in self._repeatable:
                seen = labelled.get((item.key, item.labels))
                if seen is not None:
                    names = " ".join(f'"{label}"' for label in item.labels)
                    self._duplicate(item, f"{names} is defined twice (first at line {seen.line})")
                    self._repeated_labels.add((item.key, item.labels))
                    continue
                labelled[(item.key, item.labels)] = item
            self._blocks.setdefault(item.key, []).append(item)

    def _duplicate(self, item: Item, problem: str) -> None:
        self.problems.errors.append(
            ConfigError(self.source, item.line, item.key, problem, context=self.context)
        )

    def allow(self, options: Iterable[str] = (), blocks: Iterable[str] = ()) -> None:
        """Record an error for every option or block not named here."""
        options, blocks = tuple(options), tuple(blocks)
        valid = sorted(options + blocks)
        for name, item in self._options.items():
            if name in blocks:
                self.error(name, "is a block, not an option", valid=f"{name} {{ ... }}")
            elif name not in options:
                self._unknown(item, valid)
        for name, found in self._blocks.items():
            if name in options:
                self.error(name, "is an option, not a block", valid=f"{name} = ...")
            elif name not in blocks:
                self._unknown(found[0], valid)

    def _unknown(self, item: Item, valid: list[str]) -> None:
        kind = "option" if item.children is None else "block"
        problem = f"unknown {kind}"
        close = difflib.get_close_matches(item.key, valid, n=1, cutoff=0.6)
        if close:
            problem += f'; did you mean "{close[0]}"?'
        self.problems.errors.append(
            ConfigError(
                self.source,
                item.line,
                item.key,
                problem,
                valid=", ".join(valid) or "nothing here",
                context=self.context,
            )
        )

    def has(self, name: str) -> bool:
        return name in self._options or name in self._blocks

    def line_of(self, name: str) -> int | None:
        if name in self._options:
            return self._options[name].line
        if name in self._blocks:
            return self._blocks[name][0].line
        return None

    def error(self, name: str, problem: str, *, valid: str | None = None) -> None:
        """Record a problem with option ``name`` (at its line; if absent, the block's)."""
        line = self.line_of(name)
        self.problems.errors.append(
            ConfigError(
                self.source,
                self.line if line is None else line,
                name,
                problem,
                valid=valid,
                context=self.context,
            )
        )

    def notice(self, name: str, text: str) -> None:
        """Record a warning about option ``name`` that does not stop the config loading."""
        line = self.line_of(name)
        where = f"{self.source}:{line}" if line is not None else self.source
        self.problems.notices.append(f'{where}: option "{name}": {text}')

    def block_error(self, problem: str, *, valid: str | None = None) -> None:
        """Record a problem with this block itself (its name, or a missing part)."""
        parent = self.context.rpartition(" > ")[0]
        self.problems.errors.append(
            ConfigError(self.source, self.line, self.kind, problem, valid=valid, context=parent)
        )

    def finish(self) -> None:
        """Raise ConfigErrors with every problem recorded in this file, if there is any."""
        if self.problems.errors:
            unique = {str(error): error for error in self.problems.errors}
            raise ConfigErrors(list(unique.values()))

    # -- blocks ------------------------------------------------------------------------

    def block(self, name: str) -> Section | None:
        """The unlabelled block ``name``; repeated blocks are merged into one."""
        items = self._blocks.get(name)
        if not items:
            return None
        children: list[Item] = []
        for item in items:
            if item.labels:
                self.error(name, "takes no name", valid=f"{name} {{ ... }}")
                return None
            children.extend(item.children or ())
        context = f"{self.context} > {name}" if self.context else name
        data = _merged(self._data.get(name))
        line = items[0].line
        section = Section(self.source, context, children, data, self.problems, kind=name, line=line)
        return section

    def blocks(self, name: str) -> list[tuple[str, int, Section]]:
        """The blocks ``name "LABEL" { ... }`` as (label, line, section), in file order."""
        found: list[tuple[str, int, Section]] = []
        by_label = _merged(self._data.get(name))
        for item in self._blocks.get(name, ()):
            if len(item.labels) != 1:
                self.problems.errors.append(
                    ConfigError(
                        self.source,
                        item.line,
                        name,
                        "needs exactly one name",
                        valid=f'{name} "NAME" {{ ... }}',
                        context=self.context,
                    )
                )
                continue
            if (name, item.labels) in self._repeated_labels:
                continue
            label = item.labels[0]
            context = f'{name} "{label}"'
            if self.context:
                context = f"{self.context} > {context}"
            data = _merged(by_label.get(label)) if item.data is None else item.data
            section = Section(
                self.source,
                context,
                item.children or (),
                data,
                self.problems,
                kind=name,
                line=item.line,
            )
            found.append((label, item.line, section))
        return found

    # -- values ------------------------------------------------------------------------

    def _raw(self, name: str) -> tuple[bool, Any]:
        if name not in self._options or name in self._repeated:
            return False, None
        if name not in self._data:
            self.error(name, "could not read this value")
            return False, None
        return True, self._data[name]

    def optional_string(
        self, name: str, *, secret: bool = False, valid: str | None = None
    ) -> str | None:
        present, value = self._raw(name)
        if not present:
            return None
        if not isinstance(value, str):
            what = "a value of another type" if secret else shown(value)
            self.error(name, f"expected a quoted string, got {what}", valid=valid)
            return None
        return value

    def string(self, name: str, default: str, *, secret: bool = False) -> str:
        value = self.optional_string(name, secret=secret)
        return default if value is None else value

    def required_string(self, name: str, valid: str, *, secret: bool = False) -> str:
        """The value of ``name``; when absent an error is recorded and "" returned."""
        if name not in self._options:
            if name not in self._blocks:
                self.error(name, "is required", valid=valid)
            return ""
        return self.string(name, "", secret=secret)

    def strings(self, name: str, *, secret: bool = False) -> tuple[str, ...]:
        """One string or a list of strings, as a tuple (empty when absent or wrong)."""
        present, value = self._raw(name)
        if not present:
            return ()
        values = value if isinstance(value, list) else [value]
        if not all(isinstance(v, str) for v in values):
            self.error(name, "expected a quoted string or a list of quoted strings")
            return ()
        return tuple(values)

    def integer(
        self, name: str, default: int, *, minimum: int | None = None, maximum: int | None = None
    ) -> int:
        value = self.optional_integer(name, minimum=minimum, maximum=maximum)
        return default if value is None else value

    def optional_integer(
        self, name: str, *, minimum: int | None = None, maximum: int | None = None
    ) -> int | None:
        present, value = self._raw(name)
        if not present:
            return None
        valid = _range(minimum, maximum, str)
        if isinstance(value, bool) or not isinstance(value, int):
            self.error(name, f"expected a whole number, got {shown(value)}", valid=valid)
            return None
        if (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
            self.error(name, f"{value} is out of range", valid=valid)
            return None
        return value

    def optional_boolean(self, name: str) -> bool | None:
        present, value = self._raw(name)
        if not present:
            return None
        if not isinstance(value, bool):
            self.error(name, f"expected true or false, got {shown(value)}", valid="true, false")
            return None
        return value

    def boolean(self, name: str, default: bool) -> bool:
        value = self.optional_boolean(name)
        return default if value is None else value

    def optional_choice(self, name: str, choices: Sequence[str]) -> str | None:
        value = self.optional_string(name)
        if value is None:
            return None
        if value not in choices:
            self.error(name, f"{shown(value)} is not a valid choice", valid=", ".join(choices))
            return None
        return value

    def choice(self, name: str, choices: Sequence[str], default: str) -> str:
        value = self.optional_choice(name, choices)
        return default if value is None else value

    def optional_duration(
        self, name: str, *, minimum: float = 0.0, maximum: float | None = None
    ) -> float | None:
        present, value = self._raw(name)
        if not present:
            return None
        valid = '"90s", "5m", "1h30m", "7d" or a number of seconds'
        limits = _range(minimum or None, maximum, format_duration)
        if limits:
            valid += f"; {limits}"
        try:
            seconds = parse_duration(value)
        except DurationError as err:
            self.error(name, f"bad duration {shown(value)}: {err.problem}", valid=valid)
            return None
        if seconds < minimum or (maximum is not None and seconds > maximum):
            self.error(name, f"{shown(value)} is out of range", valid=valid)
            return None
        return seconds

    def duration(
        self, name: str, default: float, *, minimum: float = 0.0, maximum: float | None = None
    ) -> float:
        value = self.optional_duration(name, minimum=minimum, maximum=maximum)
        return default if value is None else value

    def parsed(
        self,
        name: str,
        parse: Callable[[str], T],
        *,
        valid: str,
        secret: bool = False,
        many: bool = False,
    ) -> tuple[T, ...]:
        """``parse`` applied to the string (or, with ``many``, each string of the list).

        A CertfleetError or ValueError from ``parse`` becomes a ConfigError at the option's
        line. For secret options the parser's message is kept only when it does not contain
        the text it was given.
        """
        if many:
            texts = self.strings(name, secret=secret)
            present, value = self._raw(name)
            if present and value == []:
                self.error(name, "is an empty list", valid=valid)
        else:
            one = self.optional_string(name, secret=secret)
            texts = () if one is None else (one,)
        results: list[T] = []
        for position, text in enumerate(texts):
            try:
                results.append(parse(text))
            except (CertfleetError, ValueError) as err:
                reason = str(err)
                if secret and (not text.strip() or text.strip() in reason or len(reason) > 300):
                    reason = "malformed"
                which = f"entry {position + 1}: " if len(texts) > 1 else ""
                what = "" if secret else f"{shown(text)}: "
                self.error(name, f"{which}{what}{reason}", valid=valid)
        return tuple(results)


def _range(minimum: Any, maximum: Any, render: Callable[[Any], str]) -> str | None:
    if minimum is not None and maximum is not None:
        return f"from {render(minimum)} to {render(maximum)}"
    if minimum is not None:
        return f"at least {render(minimum)}"
    if maximum is not None:
        return f"at most {render(maximum)}"
    return None


def _merged(value: Any) -> dict[str, Any]:
    """pyhcl's value for a block as one dict: it gives a dict, or a list of dicts when
    repeated blocks share a key (repeated options were already refused by the token pass)."""
    parts = value if isinstance(value, list) else [value]
    merged: dict[str, Any] = {}
    for part in parts:
        if isinstance(part, dict):
            for key, item in part.items():
                merged.setdefault(key, item)
    return merged
