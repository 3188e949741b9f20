"""Tests for chatd.config: options read from a TOML file, checked as the command line is."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, ClassVar

import pytest
from twisted.python import usage
from twisted.scripts.twistd import ServerOptions

from chatd import config
from chatd.config import ConfigFileOptions, apply_config, file_keys, options_given, read_config
from chatd.tap import Options as ChatdOptions

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "etc" / "chatd.toml"


def _positive_int(value: str) -> int:
    number = int(value)
    if number <= 0:
        raise ValueError(f"must be greater than 0, not {value}")
    return number


class Demo(ConfigFileOptions):
    """A small Options with every kind of option: flag, parameters, repeatable and flag methods."""

    optFlags: ClassVar[list[list[Any]]] = [["verbose", "v", "Say more."]]
    optParameters: ClassVar[list[list[Any]]] = [
        ["limit", "l", 10, "A positive number.", _positive_int],
        ["name", None, "anon", "Any text."],
    ]

    def __init__(self) -> None:
        super().__init__()
        self["ports"] = []
        self["quiet"] = False

    def opt_port(self, port: str) -> None:
        """Listen on a port; repeatable."""
        if not port.isdigit():
            raise usage.UsageError(f"invalid --port {port!r}")
        self["ports"].append(port)

    opt_p = opt_port

    def opt_level(self, level: str) -> None:
        """A level from 1 to 3 (refuses others with ValueError)."""
        self["level"] = int(level)
        if not 1 <= self["level"] <= 3:
            raise ValueError(f"level must be from 1 to 3, not {level}")

    def opt_quiet(self) -> None:
        """Say less."""
        self["quiet"] = True

    def postOptions(self) -> None:
        self["ports-in-post"] = list(self["ports"])
        if not self["ports"]:
            self["ports"] = ["55555"]


@pytest.fixture
def write(tmp_path: Path) -> Any:
    """Write a configuration file and return its path."""

    def write(text: str, name: str = "chatd.toml") -> Path:
        path = tmp_path / name
        path.write_text(text, encoding="utf-8")
        return path

    return write


def parse(*args: str) -> Demo:
    options = Demo()
    options.parseOptions(list(args))
    return options


def refusal(*args: str) -> str:
    """The message of the UsageError that parsing ``args`` raises."""
    with pytest.raises(usage.UsageError) as error:
        parse(*args)
    return str(error.value)


# Reading the file.


def test_file_sets_every_kind_of_option(write: Any) -> None:
    """Each key sets its option: coerced parameters, flags, flag methods and repeatable methods."""
    path = write(
        'port = ["4000", 4001]\n'
        "limit = 42\n"
        'name = "Zoë"\n'
        "verbose = true\n"
        "quiet = true\n"
        "level = 2\n"
    )
    options = parse("--config", str(path))
    assert options["ports"] == ["4000", "4001"]
    assert options["limit"] == 42
    assert options["name"] == "Zoë"
    assert options["verbose"] == 1
    assert options["quiet"] is True
    assert options["level"] == 2
    assert options["config"] == str(path)


def test_single_string_for_a_repeatable_option(write: Any) -> None:
    """A repeatable option takes a single value as well as an array."""
    assert parse("--config", str(write('port = "4000"\n')))["ports"] == ["4000"]


def test_false_flags_leave_the_defaults(write: Any) -> None:
    """``false`` for a flag or a flag method does nothing: the default stays."""
    options = parse("--config", str(write("verbose = false\nquiet = false\n")))
    assert (options["verbose"], options["quiet"]) == (0, False)


def test_post_options_sees_the_file(write: Any) -> None:
    """The file is applied before postOptions, which sees its values."""
    options = parse("--config", str(write('port = ["4000"]\n')))
    assert options["ports-in-post"] == ["4000"]
    assert parse()["ports"] == ["55555"]


def test_without_config_nothing_is_read() -> None:
    """Without --config the options are the command line's alone."""
    options = parse("--limit", "3")
    assert options["config"] is None
    assert options["limit"] == 3


def test_config_equals_form_and_last_one_wins(write: Any) -> None:
    """--config=FILE works, and of several --config the last is read."""
    first = write("limit = 1\n", "first.toml")
    second = write("limit = 2\n", "second.toml")
    assert parse(f"--config={first}", "--config", str(second))["limit"] == 2


# The command line wins.


def test_command_line_parameter_wins(write: Any) -> None:
    """A parameter given on the command line is not taken from the file."""
    path = write('limit = 42\nname = "from file"\n')
    options = parse("--config", str(path), "--limit", "7")
    assert (options["limit"], options["name"]) == (7, "from file")


def test_command_line_repeatable_option_replaces_the_files(write: Any) -> None:
    """A repeatable option on the command line replaces the file's list; it is not added to it."""
    path = write('port = ["4000", "4001"]\n')
    assert parse("--config", str(path), "--port", "5000")["ports"] == ["5000"]
    assert parse("-p", "5000", "--config", str(path))["ports"] == ["5000"]


def test_command_line_wins_under_any_spelling(write: Any) -> None:
    """Short options and abbreviated long ones count as given on the command line."""
    path = write("limit = 42\nverbose = true\n")
    options = parse("-l", "7", "--config", str(path))
    assert options["limit"] == 7
    options = parse("--lim=8", "--config", str(path))
    assert options["limit"] == 8
    assert options.given_on_command_line == {"limit", "config"}


def test_command_line_values_are_still_checked(write: Any) -> None:
    """A bad command-line value is refused as usual even when the file has a good one."""
    path = write("limit = 42\n")
    assert "must be greater than 0" in refusal("--config", str(path), "--limit", "0")


def test_a_refused_command_line_value_names_its_option() -> None:
    """A value an option's coercion refuses on the command line is reported with the option."""
    assert refusal("--limit", "0") == "--limit: must be greater than 0, not 0"
    assert refusal("--name") == "option --name requires argument"


def test_under_twistd_a_bad_file_is_one_line_and_exit_status_1(write: Any) -> None:
    """Parsed by twistd, a refused key is one line naming the file and key, with no usage text."""
    path = write('alias-timeout = "soon"\n')
    with pytest.raises(SystemExit) as exit_:
        ServerOptions().parseOptions(["--nodaemon", "chatd", "--config", str(path)])
    assert exit_.value.code == f"twistd chatd: {path}: alias-timeout: not a number: soon"


def test_bad_arguments_keep_their_usual_error(write: Any) -> None:
    """Arguments usage.Options refuses are refused with its own message, file or not."""
    path = write("limit = 42\n")
    assert refusal("--config", str(path), "--no-such-option") == (
        "option --no-such-option not recognized"
    )


def test_help_works_with_a_broken_file(write: Any, capsys: pytest.CaptureFixture[str]) -> None:
    """With --help the file is not read, so help is shown even if the file is broken."""
    path = write("this is not toml\n")
    with pytest.raises(SystemExit) as exit_:
        parse("--config", str(path), "--help")
    assert exit_.value.code == 0
    assert "--config=" in capsys.readouterr().out


def test_options_given() -> None:
    """options_given names the long option for every spelling in the arguments."""
    assert options_given(Demo(), ["-p", "1", "--port=2", "-v", "--lim", "3"]) == {
        "port",
        "verbose",
        "limit",
    }
    with pytest.raises(usage.UsageError, match="not recognized"):
        options_given(Demo(), ["--nope"])


# Problems: a usage error naming the file and the key.


def test_unknown_key_suggests_the_near_one(write: Any) -> None:
    """An unknown key is refused, naming the file and the key, with the closest option name."""
    path = write("limt = 3\n")
    assert refusal("--config", str(path)) == f"{path}: unknown key 'limt' (did you mean 'limit'?)"
    path = write("max_limit = 3\nverbos = true\n")
    assert "unknown key 'max_limit' (did you mean 'limit'?)" in refusal("--config", str(path))


def test_unknown_key_lists_the_keys_when_nothing_is_near(write: Any) -> None:
    """An unknown key that resembles nothing gets the list of valid keys."""
    path = write("xyzzy = 1\n")
    assert refusal("--config", str(path)) == (
        f"{path}: unknown key 'xyzzy' (the keys are the long option names: "
        "level, limit, name, port, quiet, verbose)"
    )


def test_short_names_are_not_keys(write: Any) -> None:
    """A short option name is refused as a key, pointing to the long name."""
    path = write('p = "4000"\n')
    assert refusal("--config", str(path)) == (
        f"{path}: unknown key 'p': use the long option name 'port'"
    )


@pytest.mark.parametrize("key", ["config", "help", "version"])
def test_keys_that_make_no_sense_in_a_file(write: Any, key: str) -> None:
    """config, help and version cannot be set from a file."""
    path = write(f"{key} = true\n")
    assert refusal("--config", str(path)) == (
        f"{path}: '{key}' cannot be set in a configuration file"
    )


def test_tables_are_unknown_keys(write: Any) -> None:
    """A [section] is not an option: it is refused as an unknown key."""
    path = write("[chatd]\nlimit = 3\n")
    assert "unknown key 'chatd'" in refusal("--config", str(path))


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("limit = true", "limit: expected a string or a number, not a boolean"),
        ("limit = [1, 2]", "limit: expected a string or a number, not an array"),
        ("limit = {a = 1}", "limit: expected a string or a number, not a table"),
        ("name = 1979-05-27", "name: expected a string or a number, not a date or time"),
        ('verbose = "yes"', "verbose: expected true or false, not a string"),
        ("quiet = 1", "quiet: expected true or false, not an integer"),
        (
            'port = ["4000", true]',
            "port: expected a string or a number, or an array of them, not a boolean",
        ),
        (
            "port = [[4000]]",
            "port: expected a string or a number, or an array of them, not an array",
        ),
    ],
)
def test_wrong_types_are_refused(write: Any, text: str, problem: str) -> None:
    """A value of a type the option cannot take is refused, naming the file, key and type."""
    path = write(text + "\n")
    assert refusal("--config", str(path)) == f"{path}: {problem}"


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("limit = 0", "limit: must be greater than 0, not 0"),
        ("limit = 2.5", "limit: invalid literal for int() with base 10: '2.5'"),
        ('limit = "many"', "limit: invalid literal for int() with base 10: 'many'"),
        ('port = ["4000", "http"]', "port: invalid --port 'http'"),
        ("level = 9", "level: level must be from 1 to 3, not 9"),
    ],
)
def test_values_go_through_the_options_own_checks(write: Any, text: str, problem: str) -> None:
    """A value the option's coercion or opt_ method refuses is a usage error naming file, key."""
    path = write(text + "\n")
    assert refusal("--config", str(path)) == f"{path}: {problem}"


def test_a_bad_array_item_sets_nothing(write: Any) -> None:
    """An array with an item of the wrong type is refused before any item is used."""
    options = Demo()
    with pytest.raises(usage.UsageError):
        apply_config(options, write('port = ["4000", false]\n'))
    assert options["ports"] == []


def test_toml_syntax_error_names_the_line(write: Any) -> None:
    """A TOML syntax error is a usage error with the file and the line."""
    path = write("limit = 3\nname =\n")
    assert refusal("--config", str(path)) == (
        f"{path}: not valid TOML: Invalid value (at line 2, column 7)"
    )
    path = write("limit = 3\nlimit = 4\n")
    assert "Cannot overwrite a value (at line 2" in refusal("--config", str(path))


def test_missing_or_unreadable_file(tmp_path: Path) -> None:
    """A missing file, or a directory, is a usage error naming it, not a traceback."""
    missing = tmp_path / "nowhere.toml"
    assert refusal("--config", str(missing)) == (
        f"cannot read the configuration file {missing}: No such file or directory"
    )
    assert refusal("--config", str(tmp_path)) == (
        f"cannot read the configuration file {tmp_path}: Is a directory"
    )


def test_file_that_is_not_utf8(tmp_path: Path) -> None:
    """A file that is not UTF-8 is refused with the line of the first bad byte."""
    path = tmp_path / "latin1.toml"
    path.write_bytes(b"limit = 3\nname = 'caf\xe9'\n")
    assert refusal("--config", str(path)) == f"{path}: line 2: not valid UTF-8"


def test_without_a_toml_parser(write: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without tomllib or tomli (Python 3.10 bare), --config says what to install."""
    monkeypatch.setattr(config, "tomllib", None)
    with pytest.raises(usage.UsageError, match=r"Python 3.11 or later, or the tomli package"):
        read_config(write("limit = 3\n"))


# The real chatd options and the example file.


def test_works_on_any_usage_options(write: Any) -> None:
    """apply_config needs no ConfigFileOptions: it works on chatd's Options as they are."""
    options = ChatdOptions()
    path = write(
        'port = ["4000", "unix:/tmp/chatd.sock"]\nalias-timeout = 2.5\n'
        'default-room = "#main"\nhistory-replay = 0\n'
    )
    apply_config(options, path, given_on_command_line={"history-replay"})
    options.parseOptions(["--history-replay", "5"])
    assert options["ports"] == ["tcp:4000:interface=127.0.0.1", "unix:/tmp/chatd.sock"]
    assert options["alias-timeout"] == 2.5
    assert options["default-room"] == "#main"
    assert options["history-replay"] == 5


def test_chatd_option_checks_apply_in_the_file(write: Any) -> None:
    """chatd's own checks (endpoints, room names) refuse bad values in the file too."""
    path = write('default-room = "lobby"\n')
    with pytest.raises(usage.UsageError, match=rf"^{re.escape(str(path))}: default-room: "):
        apply_config(ChatdOptions(), path)
    path = write('port = "bogus:1"\n')
    with pytest.raises(usage.UsageError, match=r": port: invalid --port 'bogus:1'"):
        apply_config(ChatdOptions(), path)


def _example_settings() -> dict[str, list[str]]:
    """The commented-out settings of etc/chatd.toml: key -> the TOML text of each example."""
    settings: dict[str, list[str]] = {}
    block: list[str] = []
    for line in EXAMPLE.read_text(encoding="utf-8").splitlines():
        text = line.removeprefix("# ").removeprefix("#")
        if block:
            block.append(text)
        elif re.match(r"[a-z][a-z-]* = ", text):
            block = [text]
        if block and (not block[0].rstrip().endswith("[") or text.strip() == "]"):
            key = block[0].split(" = ")[0]
            settings.setdefault(key, []).append("\n".join(block))
            block = []
    return settings


def test_example_shows_every_option() -> None:
    """etc/chatd.toml has an example for every option that chatd's Options can take from a file."""
    assert sorted(_example_settings()) == file_keys(ChatdOptions())


def test_example_examples_are_valid_toml() -> None:
    """Every example in etc/chatd.toml, uncommented, is TOML for the key it documents."""
    for key, examples in _example_settings().items():
        for example in examples:
            assert list(config.tomllib.loads(example)) == [key]


# Options whose default is "none", which TOML cannot write: the example shows a value.
NO_DEFAULT = {
    "oper",
    "json-port",
    "motd",
    "history-max-age",
    "metrics",
    "redis",
    "tls-cert",
    "tls-key",
    "web",
    "irc",
    "web-origin",
    "ssh",
}


def test_example_first_values_are_the_defaults(tmp_path: Path) -> None:
    """Uncommented, the first example of each option gives chatd's default (if it has one)."""
    settings = _example_settings()
    path = tmp_path / "defaults.toml"
    path.write_text(
        "\n".join(examples[0] for key, examples in settings.items() if key not in NO_DEFAULT),
        encoding="utf-8",
    )
    from_file = ChatdOptions()
    apply_config(from_file, path)
    from_file.postOptions()
    defaults = ChatdOptions()
    defaults.parseOptions([])
    assert dict(from_file) == dict(defaults)


def test_example_port_arrays_apply(tmp_path: Path) -> None:
    """The example port arrays that need no key files are accepted by chatd's --port checks."""
    for example in _example_settings()["port"]:
        if "ssl:" in example:
            continue
        path = tmp_path / "ports.toml"
        path.write_text(example, encoding="utf-8")
        apply_config(ChatdOptions(), path)


class ConfiguredChatdOptions(ChatdOptions, ConfigFileOptions):
    """chatd's Options as they are once chatd/tap.py derives them from ConfigFileOptions."""


SOME_HASH = "$argon2id$v=19$m=65536,t=3,p=4$c2FsdA$aGFzaA"


def test_chatd_options_with_config(write: Any) -> None:
    """With ConfigFileOptions as a base, chatd's Options take --config, command line winning."""
    motd = write("Be nice.\n", "motd.txt")
    path = write(
        f'port = ["4000", "4001"]\nmotd = "{motd}"\nmax-line-bytes = 512\n'
        f'oper = ["alice:{SOME_HASH}"]\n'
    )
    options = ConfiguredChatdOptions()
    options.parseOptions(["--config", str(path), "--max-line-bytes", "1024"])
    assert options["ports"] == ["tcp:4000:interface=127.0.0.1", "tcp:4001:interface=127.0.0.1"]
    assert options["motd-text"] == "Be nice."
    assert options["max-line-bytes"] == 1024
    assert options["operators"] == {"alice": SOME_HASH}
    assert "--config=" in str(options)
