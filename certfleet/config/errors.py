"""The errors of the config loaders.

Every message has the form ``FILE:LINE: option "x": what is wrong (valid: ...)`` so that an
operator can go straight to the line. Values of secret options (API keys, cluster secrets,
signing keys, passwords) are never quoted in a message; other values are, shortened.
"""

from __future__ import annotations

from collections.abc import Sequence

from certfleet.errors import CertfleetError


class ConfigError(CertfleetError):
    """One problem in one config file.

    ``line`` is 1-based, or None when the problem has no place in the file (a missing
    option, an unreadable file, or a syntax error at end of file). ``column`` is 1-based
    and only known for syntax errors. ``option`` is the option or block name, or None for
    syntax errors. ``context`` is the block it sits in, e.g. ``cluster "web"`` (empty at
    the top level). ``valid`` says what would be accepted, when that can be said briefly.
    """

    def __init__(
        self,
        source: str,
        line: int | None,
        option: str | None,
        problem: str,
        *,
        valid: str | None = None,
        context: str = "",
        column: int | None = None,
        at_end: bool = False,
    ) -> None:
        self.source = source
        self.line = line
        self.column = column
        self.option = option
        self.problem = problem
        self.valid = valid
        self.context = context
        self.at_end = at_end
        super().__init__(self._render())

    def _render(self) -> str:
        where = self.source
        if self.line is not None:
            where += f":{self.line}"
            if self.column is not None:
                where += f":{self.column}"
        parts = [where + ":"]
        if self.at_end:
            parts.append("at end of file:")
        if self.option is not None:
            subject = f'option "{self.option}"'
            if self.context:
                subject += f" in {self.context}"
            parts.append(subject + ":")
        text = " ".join(parts) + " " + self.problem
        if self.valid:
            text += f" (valid: {self.valid})"
        return text


class ConfigErrors(ConfigError):
    """Several problems found in one pass over a file; ``errors`` lists them in file order.

    It is a ConfigError itself (its fields are those of the first problem), so a caller
    that handles one kind handles both; ``str()`` lists every problem, one per line.
    """

    def __init__(self, errors: Sequence[ConfigError]) -> None:
        if not errors:
            raise ValueError("ConfigErrors needs at least one error")
        self.errors: tuple[ConfigError, ...] = tuple(
            sorted(errors, key=lambda e: (e.line is None, e.line or 0))
        )
        first = self.errors[0]
        super().__init__(
            first.source,
            first.line,
            first.option,
            first.problem,
            valid=first.valid,
            context=first.context,
            column=first.column,
            at_end=first.at_end,
        )

    def _render(self) -> str:
        return "\n".join(str(error) for error in self.errors)


class DurationError(CertfleetError, ValueError):
    """A duration that is not a plain number of seconds nor like "90s", "5m", "1h30m"."""

    def __init__(self, value: str, problem: str) -> None:
        self.value = value
        self.problem = problem
        super().__init__(f"bad duration {value!r}: {problem}")


class UnsafeFilesPathError(CertfleetError):
    """An expanded ``files`` path would leave the directory its template names."""

    def __init__(self, template: str, name: str, problem: str) -> None:
        self.template = template
        self.name = name
        self.problem = problem
        shown = repr(name)
        if len(shown) > 80:
            shown = shown[:77] + "..."
        super().__init__(f"refusing files path {template!r} for order name {shown}: {problem}")


class UnknownClusterError(CertfleetError):
    """A cluster name that the config does not define."""

    def __init__(self, source: str, name: str, known: Sequence[str]) -> None:
        self.source = source
        self.name = name
        self.known = tuple(known)
        valid = ", ".join(self.known) if self.known else "none defined"
        super().__init__(f"{source}: no cluster {name!r} in this config (clusters: {valid})")
