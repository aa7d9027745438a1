"""One HCL loader for both config files, on pyhcl.

pyhcl (imported as ``hcl``) is the parser of record: it decides what is valid syntax and
what each value is. It loses three things a config loader needs, which a second pass over
the tokens of pyhcl's own lexer recovers:

- where each option is: pyhcl reports positions only for syntax errors, and its "column"
  there is an offset from the start of the file;
- repeated keys and repeated block labels, which pyhcl merges silently (last one wins);
- the shape of repeated blocks: two ``default`` blocks become one dict, or a list of dicts
  when they share a key, depending on their content.

The token pass builds a tree of items (key, labels, line, children) for the subset of HCL a
config needs: ``key = value`` where value is a string, number, boolean, list or ``{...}``,
and blocks ``key "label" { ... }``. Expressions pyhcl also accepts (arithmetic, function
calls, conditionals) are refused with the line they are on.
"""

from __future__ import annotations

import bisect
import re
import threading
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from certfleet.config.errors import ConfigError, ConfigErrors
from certfleet.config.section import Item, Problems, Section

_parser_lock = threading.Lock()
_parser: Any = None

_TOKEN_WORDS = {
    "STRING": "a quoted string",
    "IDENTIFIER": "a name",
    "NUMBER": "a number",
    "FLOAT": "a number",
    "BOOL": "true or false",
    "EQUAL": '"="',
    "COLON": '":"',
    "COMMA": '","',
    "LEFTBRACE": '"{"',
    "RIGHTBRACE": '"}"',
    "LEFTBRACKET": '"["',
    "RIGHTBRACKET": '"]"',
    "$end": "end of file",
}
_OPENERS = {"LEFTBRACE": "{", "LEFTBRACKET": "[", "LEFTPAREN": "("}
_CLOSERS = {"RIGHTBRACE": "LEFTBRACE", "RIGHTBRACKET": "LEFTBRACKET", "RIGHTPAREN": "LEFTPAREN"}
_KEY_TOKENS = ("IDENTIFIER", "STRING")
_SCALAR_TOKENS = ("STRING", "NUMBER", "FLOAT", "BOOL", "IDENTIFIER")
_LEXER_ERROR = re.compile(r"Line \d+, column \d+, index (\d+): (.*)", re.DOTALL)
_PARSER_ERROR = re.compile(
    r"Line \d+, column (\d+): unexpected (\S+?)(?:; expected (.*))?", re.DOTALL
)
_EOF_ERROR = re.compile(r"Unexpected end of file(?:; expected (.*))?", re.DOTALL)
_PLAIN_VALUES = "a quoted string, a number, true, false, a list [...] or a block {...}"


def load_hcl(text: str, source: str, repeatable: Sequence[str] = ()) -> Section:
    """Parse ``text`` (the contents of the file named ``source``) into its top Section.

    Raises ConfigErrors for syntax errors and expressions. Repeated options and block
    labels, and the errors found through the Section's accessors, are collected and raised
    together by ``Section.finish()``: call it once every option has been read.

    ``repeatable``: top-level block keys whose label may repeat (``dns "rfc2136"`` twice, for
    two servers). pyhcl would merge such blocks (the last value of each option wins), so
    each one's body is parsed again on its own.
    """
    data = _parse(text, source)
    positions = _Positions(text)
    tokens = _tokens(text, source, positions)
    items = _Walker(tokens, source).document()
    items = _own_data(items, frozenset(repeatable), text, source)
    problems = Problems(source)
    return Section(source, "", items, data, problems, repeatable=repeatable)


def _own_data(
    items: Sequence[Item], repeatable: frozenset[str], text: str, source: str
) -> tuple[Item, ...]:
    """``items`` with ``data`` set on every labelled block of a ``repeatable`` key whose
    labels repeat: the values pyhcl finds in that block's body alone."""
    counts = Counter((item.key, item.labels) for item in items if item.children is not None)
    own: list[Item] = []
    for item in items:
        if item.span is not None and item.key in repeatable and counts[(item.key, item.labels)] > 1:
            start, end = item.span
            item = replace(item, data=_parse(text[start:end], source))
        own.append(item)
    return tuple(own)


def read_config_text(path: str | Path) -> str:
    """The text of a config file; a ConfigError naming the file when it cannot be read."""
    try:
        return Path(path).read_bytes().decode("utf-8")
    except OSError as err:
        reason = err.strerror or type(err).__name__
        raise ConfigErrors([ConfigError(str(path), None, None, f"cannot read: {reason}")]) from err
    except UnicodeDecodeError as err:
        raise ConfigErrors(
            [ConfigError(str(path), None, None, f"is not UTF-8 text (byte {err.start})")]
        ) from err


def _parse(text: str, source: str) -> dict[str, Any]:
    global _parser
    from hcl.parser import HclParser  # imported here: only config loading needs pyhcl

    try:
        with _parser_lock:
            if _parser is None:
                _parser = HclParser()
            result = _parser.parse(text)
    except ValueError as err:
        raise ConfigErrors([_syntax_error(str(err), text, source)]) from err
    except Exception as err:  # pyhcl also fails with TypeError,
        # ZeroDivisionError, RecursionError... on odd input; none may reach the user as a
        # traceback, and the file's text is not repeated (it may hold secrets).
        problem = f"syntax error: pyhcl could not read this file ({type(err).__name__})"
        raise ConfigErrors(
            [ConfigError(source, None, None, problem, valid=f"plain values: {_PLAIN_VALUES}")]
        ) from err
    if not isinstance(result, dict):
        raise ConfigErrors([ConfigError(source, 1, None, "expected options and blocks")])
    return result


class _Positions:
    """Offsets in the text to 1-based line and column numbers."""

    def __init__(self, text: str) -> None:
        self._starts = [0] + [i + 1 for i, char in enumerate(text) if char == "\n"]
        self._length = len(text)

    def line_column(self, offset: int) -> tuple[int, int]:
        offset = max(0, min(offset, self._length))
        index = bisect.bisect_right(self._starts, offset) - 1
        return index + 1, offset - self._starts[index] + 1


def _syntax_error(message: str, text: str, source: str) -> ConfigError:
    positions = _Positions(text)
    lexer = _LEXER_ERROR.fullmatch(message)
    if lexer:
        line, column = positions.line_column(int(lexer.group(1)))
        return ConfigError(
            source, line, None, "syntax error: " + _lexer_problem(lexer.group(2)), column=column
        )
    parser = _PARSER_ERROR.fullmatch(message)
    if parser:
        line, column = positions.line_column(int(parser.group(1)))
        problem = f"syntax error: unexpected {_word(parser.group(2))}"
        return ConfigError(
            source, line, None, problem, valid=_expected(parser.group(3)), column=column
        )
    eof = _EOF_ERROR.fullmatch(message)
    if eof:
        problem = "syntax error: unexpected end of file"
        unclosed = _unclosed(text, positions)
        if unclosed:
            problem += f'; the "{unclosed[0]}" opened at line {unclosed[1]} is never closed'
        return ConfigError(source, None, None, problem, valid=_expected(eof.group(1)), at_end=True)
    return ConfigError(source, None, None, "syntax error")


def _lexer_problem(text: str) -> str:
    if text.startswith("Illegal character '") and len(text) == len("Illegal character '?'"):
        return (
            f"unexpected character {text[-2]!r} "
            "(strings take double quotes; ${...} only inside a string)"
        )
    return text


def _word(token_type: str) -> str:
    return _TOKEN_WORDS.get(token_type, token_type.lower())


def _expected(names: str | None) -> str | None:
    if not names:
        return None
    words: list[str] = []
    for name in names.split(","):
        name = name.strip()
        if name in _TOKEN_WORDS and _TOKEN_WORDS[name] not in words:
            words.append(_TOKEN_WORDS[name])
    return ", ".join(words) or None


def _unclosed(text: str, positions: _Positions) -> tuple[str, int] | None:
    try:
        tokens = _lex(text)
    except ValueError:
        return None
    stack: list[Any] = []
    for token in tokens:
        if token.type in _OPENERS:
            stack.append(token)
        elif token.type in _CLOSERS and stack and stack[-1].type == _CLOSERS[token.type]:
            stack.pop()
    if not stack:
        return None
    return _OPENERS[stack[-1].type], positions.line_column(stack[-1].lexpos)[0]


def _lex(text: str) -> list[Any]:
    from hcl.lexer import Lexer

    lexer = Lexer()
    lexer.input(text)
    tokens: list[Any] = []
    while True:
        token = lexer.token()
        if token is None:
            return tokens
        tokens.append(token)


@dataclass(frozen=True)
class _Token:
    type: str
    value: Any
    line: int
    offset: int


def _tokens(text: str, source: str, positions: _Positions) -> list[_Token]:
    try:
        raw = _lex(text)
    except ValueError as err:  # pyhcl accepted the text, so its lexer should too
        raise ConfigErrors([_syntax_error(str(err), text, source)]) from err
    return [_Token(t.type, t.value, positions.line_column(t.lexpos)[0], t.lexpos) for t in raw]


class _Walker:
    """Builds the item tree from tokens that pyhcl has already accepted."""

    def __init__(self, tokens: list[_Token], source: str) -> None:
        self._tokens = tokens
        self._source = source
        self._index = 0

    def document(self) -> tuple[Item, ...]:
        return self._items(closed_by_brace=False)

    def _peek(self) -> _Token | None:
        return self._tokens[self._index] if self._index < len(self._tokens) else None

    def _next(self) -> _Token | None:
        token = self._peek()
        if token is not None:
            self._index += 1
        return token

    def _items(self, closed_by_brace: bool) -> tuple[Item, ...]:
        items: list[Item] = []
        while True:
            token = self._next()
            if token is None:
                if closed_by_brace:
                    raise self._refuse(None, None, "unexpected end of file")
                return tuple(items)
            if token.type == "RIGHTBRACE" and closed_by_brace:
                return tuple(items)
            if token.type == "COMMA":
                continue
            if token.type not in _KEY_TOKENS:
                found = _word(token.type)
                raise self._refuse(token, None, f"expected an option name, found {found}")
            items.append(self._item(token))

    def _item(self, key: _Token) -> Item:
        name = str(key.value)
        labels: list[str] = []
        while (peek := self._peek()) is not None and peek.type in _KEY_TOKENS:
            self._index += 1
            labels.append(str(peek.value))
        token = self._next()
        if token is None:
            raise self._refuse(key, name, "unexpected end of file")
        if token.type == "LEFTBRACE":
            children = self._items(closed_by_brace=True)
            closing = self._tokens[self._index - 1]  # the "}" that ended the block
            span = (token.offset + 1, closing.offset) if labels else None
            return Item(name, tuple(labels), key.line, children, span=span)
        if token.type not in ("EQUAL", "COLON") or labels:
            raise self._refuse(token, name, f"unexpected {_word(token.type)}")
        value = self._next()
        if value is None:
            raise self._refuse(key, name, "missing value")
        if value.type == "LEFTBRACE":
            return Item(name, (), key.line, self._items(closed_by_brace=True))
        if value.type == "LEFTBRACKET":
            self._skip_list(key, name)
        elif value.type not in _SCALAR_TOKENS:
            raise self._refuse(value, name, "expressions are not supported", _PLAIN_VALUES)
        following = self._peek()
        if following is not None and following.type not in ("RIGHTBRACE", "COMMA", *_KEY_TOKENS):
            raise self._refuse(following, name, "expressions are not supported", _PLAIN_VALUES)
        return Item(name, (), key.line, None)

    def _skip_list(self, key: _Token, name: str) -> None:
        depth = 1
        while depth:
            token = self._next()
            if token is None:
                raise self._refuse(key, name, "unexpected end of file")
            if token.type in _OPENERS:
                depth += 1
            elif token.type in _CLOSERS:
                depth -= 1

    def _refuse(
        self, token: _Token | None, option: str | None, problem: str, valid: str | None = None
    ) -> ConfigErrors:
        line = token.line if token is not None else None
        return ConfigErrors([ConfigError(self._source, line, option, problem, valid=valid)])
