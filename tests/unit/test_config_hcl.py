"""The shared HCL loader: syntax errors with line:column, repeated keys and labels, the
shapes of repeated blocks, line numbers of options, and random text."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from certfleet.config import ConfigError, ConfigErrors, load_hcl


def error_text(text: str) -> str:
    with pytest.raises(ConfigError) as caught:
        section = load_hcl(text, "t.conf")
        section.finish()
    return str(caught.value)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            'a = "x"\n\n  b = = 2\n',
            't.conf:3:7: syntax error: unexpected "=" '
            '(valid: true or false, a quoted string, a name, "{", "[", a number)',
        ),
        (
            "a = 'x'\n",
            't.conf:1:5: syntax error: unexpected character "\'" '
            "(strings take double quotes; ${...} only inside a string)",
        ),
        (
            'a = "x"\nb = ${X}\n',
            "t.conf:2:5: syntax error: unexpected character '$' "
            "(strings take double quotes; ${...} only inside a string)",
        ),
        (
            'a = 1\ncluster "w" {\n  secret = "x"\n',
            't.conf: at end of file: syntax error: unexpected end of file; the "{" opened at '
            'line 2 is never closed (valid: "}", ",", a name, a quoted string, a number)',
        ),
        (
            "a = [\n 1,\n",
            't.conf: at end of file: syntax error: unexpected end of file; the "[" opened at '
            'line 1 is never closed (valid: "]", a name, a quoted string, "{", a number)',
        ),
        ('a = "abc', "t.conf:1:9: syntax error: EOF before closing string quote"),
        (
            '{"a": 1}',
            't.conf:1:1: syntax error: unexpected "{" '
            "(valid: end of file, a name, a quoted string, a number)",
        ),
        (
            "a = 1 + 2\n",
            't.conf:1: option "a": expressions are not supported '
            "(valid: a quoted string, a number, true, false, a list [...] or a block {...})",
        ),
        (
            "x = 1\nflag = b ? c : d\n",
            't.conf:2: option "flag": expressions are not supported '
            "(valid: a quoted string, a number, true, false, a list [...] or a block {...})",
        ),
        ('a = "1"\nb = 2\na = "3"\n', 't.conf:3: option "a": set twice (first at line 1)'),
        ("x = 1\nx { }\n", 't.conf:2: option "x": set as an option at line 1 and as a block'),
        (
            'cluster "w" { a = 1 }\ncluster "w" { a = 2 }\n',
            't.conf:2: option "cluster": "w" is defined twice (first at line 1)',
        ),
    ],
)
def test_broken_input(text: str, message: str) -> None:
    assert error_text(text) == message


def test_pyhcl_column_offset_is_turned_into_a_column() -> None:
    # pyhcl says "Line 5, column 23" here: 23 is the offset from the start of the file.
    with pytest.raises(ConfigError) as caught:
        load_hcl("a = 1\nb = 2\nc = 3\nd = 4\ne = ]\n", "t.conf")
    assert (caught.value.line, caught.value.column) == (5, 5)
    assert caught.value.option is None


def test_several_errors_are_reported_together() -> None:
    text = "a = 1\na = 2\nb { c = 1 }\nb { c = 2 }\nd = 1\nd = 2\n"
    section = load_hcl(text, "t.conf")
    section.block("b")
    with pytest.raises(ConfigErrors) as caught:
        section.finish()
    assert [(e.line, e.option) for e in caught.value.errors] == [(2, "a"), (4, "c"), (6, "d")]
    assert str(caught.value).splitlines() == [
        't.conf:2: option "a": set twice (first at line 1)',
        't.conf:4: option "c" in b: set twice (first at line 3)',
        't.conf:6: option "d": set twice (first at line 5)',
    ]


@pytest.mark.parametrize(
    "text",
    [
        # pyhcl merges these two into one dict...
        'default { on_update = ["a"] }\ndefault { files { key = "/k" } }\n',
        # ...and these into a list of two dicts
        'default { on_update = ["a"] }\ndefault { files { key = "/k" } on_update = [] }\n',
    ],
)
def test_repeated_unlabelled_blocks_are_merged(text: str) -> None:
    section = load_hcl(text, "t.conf")
    default = section.block("default")
    assert default is not None
    files = default.block("files")
    assert files is not None
    assert files.optional_string("key") == "/k"
    if "on_update = []" in text:
        # set in both blocks: reported, and neither value is used
        assert default.strings("on_update") == ()
        with pytest.raises(ConfigErrors) as caught:
            section.finish()
        assert (
            str(caught.value)
            == 't.conf:2: option "on_update" in default: set twice (first at line 1)'
        )
    else:
        assert default.strings("on_update") == ("a",)
        section.finish()


def test_labelled_blocks_keep_their_lines_and_values() -> None:
    text = (
        "# comment\n"
        'cluster "a" {\n'
        '  secret = "x"\n'
        "}\n"
        "/* a\n multi-line\n comment */\n"
        "cluster b {\n"  # unquoted labels are accepted by pyhcl
        '  secret = ["y", "z",]\n'
        '  order "o.example" { key_type = "ecdsa" }\n'
        '  order "p.example" { key_type = "rsa" }\n'
        "}\n"
    )
    root = load_hcl(text, "t.conf")
    clusters = root.blocks("cluster")
    assert [(label, line) for label, line, _ in clusters] == [("a", 2), ("b", 8)]
    b = clusters[1][2]
    assert b.strings("secret") == ("y", "z")
    assert b.line_of("secret") == 9
    orders = b.blocks("order")
    assert [(label, line, o.optional_string("key_type")) for label, line, o in orders] == [
        ("o.example", 10, "ecdsa"),
        ("p.example", 11, "rsa"),
    ]
    root.finish()


def test_unknown_option_suggests_the_closest() -> None:
    root = load_hcl('stor = "x"\ncluster "web" { secrett = "x" }\n', "t.conf")
    root.allow(("store", "api_key"), ("cluster",))
    for _, _, cluster in root.blocks("cluster"):
        cluster.allow(("secret", "publisher"))
    with pytest.raises(ConfigErrors) as caught:
        root.finish()
    assert str(caught.value).splitlines() == [
        't.conf:1: option "stor": unknown option; did you mean "store"? '
        "(valid: api_key, cluster, store)",
        't.conf:2: option "secrett" in cluster "web": unknown option; did you mean "secret"? '
        "(valid: publisher, secret)",
    ]


@pytest.mark.parametrize(
    ("text", "call", "message"),
    [
        ("a = 1", lambda s: s.string("a", ""), 'option "a": expected a quoted string, got 1'),
        ('a = "1"', lambda s: s.integer("a", 0), "option \"a\": expected a whole number, got '1'"),
        ("a = 1.5", lambda s: s.integer("a", 0), 'option "a": expected a whole number, got 1.5'),
        ("a = true", lambda s: s.integer("a", 0), 'option "a": expected a whole number, got True'),
        ("a = 5", lambda s: s.integer("a", 0, maximum=3), 'option "a": 5 is out of range'),
        ('a = "yes"', lambda s: s.boolean("a", False), "expected true or false, got 'yes'"),
        ('a = [2, "x"]', lambda s: s.strings("a"), "expected a quoted string or a list of"),
        ('a = "1s"', lambda s: s.duration("a", 0, minimum=5), "'1s' is out of range"),
        ('a = "z"', lambda s: s.choice("a", ("x", "y"), "x"), "(valid: x, y)"),
        ("a { }", lambda s: s.allow(("a",)), 'option "a": is an option, not a block'),
        ('a "x" { }', lambda s: s.block("a"), 'option "a": takes no name'),
        ("a { }", lambda s: s.blocks("a"), 'option "a": needs exactly one name'),
        ("a = 1", lambda s: s.allow((), ("a",)), 'option "a": is a block, not an option'),
    ],
)
def test_accessor_errors(text: str, call: object, message: str) -> None:
    root = load_hcl(text, "t.conf")
    call(root)  # type: ignore[operator]
    with pytest.raises(ConfigError) as caught:
        root.finish()
    assert str(caught.value).startswith("t.conf:1: ")
    assert message in str(caught.value)


def test_secret_values_are_not_quoted() -> None:
    root = load_hcl("api_key = 12345678", "t.conf")
    root.string("api_key", "", secret=True)
    with pytest.raises(ConfigError) as caught:
        root.finish()
    assert "12345678" not in str(caught.value)


@settings(max_examples=150, deadline=None)
@given(st.text(alphabet=st.sampled_from(list('ab = "{}[]#/*\n,:$1.-x\\')), max_size=60))
def test_random_hcl_like_text_raises_only_config_errors(text: str) -> None:
    try:
        root = load_hcl(text, "t.conf")
        root.allow(("a", "b"), ("x",))
        root.finish()
    except ConfigError as err:
        assert str(err).startswith("t.conf")


@settings(max_examples=100, deadline=None)
@given(st.text(max_size=80))
def test_random_text_raises_only_config_errors(text: str) -> None:
    try:
        load_hcl(text, "t.conf").finish()
    except ConfigError as err:
        assert str(err).startswith("t.conf")


def test_a_repeatable_label_keeps_each_blocks_own_values() -> None:
    # pyhcl alone merges the three (the last value of each option wins).
    text = (
        'dns "a" {\n  server = "one"\n  zones = ["x"]\n}\n'
        'dns "b" { server = "two" }\n'
        'dns "a" { server = "three"  port = 53 }\n'
    )
    section = load_hcl(text, "t.conf", repeatable=("dns",))
    blocks = section.blocks("dns")
    read = [
        (label, line, block.optional_string("server"), block.strings("zones"))
        for label, line, block in blocks
    ]
    assert read == [("a", 1, "one", ("x",)), ("b", 5, "two", ()), ("a", 6, "three", ())]
    assert blocks[2][2].optional_integer("port") == 53
    assert not blocks[0][2].has("port")
    section.finish()
    # Not repeatable: the same text names the repeated label.
    assert error_text(text) == 't.conf:6: option "dns": "a" is defined twice (first at line 1)'
