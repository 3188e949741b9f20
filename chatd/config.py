"""``--config FILE``: command-line options read from a TOML file.

The file's keys are the long option names, exactly as on the command line
(``port``, ``alias-timeout``, ``data-dir`` ...), so a new option of
:class:`chatd.tap.Options` is valid in the file with no change here::

    port = ["tcp:55555:interface=0.0.0.0", "unix:/run/chatd.sock"]
    alias-timeout = 30
    default-room = "#lobby"

Every value goes through the option's own handling, as if it had been typed on
the command line: the ``opt_`` method (called once per item of an array, like a
repeated option), or the coercion function of ``optParameters``, or the flag
(``true`` sets it). So the file is checked exactly as the command line is, and
a key the command line also gives is skipped: the command line wins.

Every problem (an unreadable file, bad TOML, an unknown key, a value of the
wrong type or one the option refuses) is a :class:`~twisted.python.usage.UsageError`
naming the file and the key, never a traceback; a value refused on the command
line names its option.

``usage.Options`` does not record which options the command line gave, so
:class:`ConfigFileOptions` finds out by running :mod:`getopt` over the
arguments with the option table the instance has already built (``shortOpt``,
``longOpt``, ``synonyms``), then reads the file before ``usage.Options`` parses
the same arguments. Nothing is parsed twice with side effects: the first pass
only lists names.
"""

from __future__ import annotations

import difflib
import getopt
import sys
from collections.abc import Callable, Iterable, Sequence
from datetime import date, datetime, time
from pathlib import Path
from typing import Any, ClassVar

from twisted.python import reflect, usage, util

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10 only
    try:
        import tomli as tomllib
    except ImportError:
        tomllib = None

CONFIG_OPTION = "config"
# Options that make no sense in a file: the file itself, and those that print and exit.
NOT_IN_FILE = frozenset({CONFIG_OPTION, "help", "version"})


def read_config(path: Path) -> dict[str, Any]:
    """The TOML table in ``path``; any problem with the file is a UsageError naming it."""
    if tomllib is None:
        raise usage.UsageError(
            f"cannot read {path}: configuration files need Python 3.11 or later, "
            "or the tomli package (pip install tomli)"
        )
    try:
        data = path.read_bytes()
    except OSError as problem:
        raise usage.UsageError(
            f"cannot read the configuration file {path}: {problem.strerror or problem}"
        ) from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as problem:
        line = data[: problem.start].count(b"\n") + 1
        raise usage.UsageError(f"{path}: line {line}: not valid UTF-8") from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as problem:
        # The message ends in "(at line L, column C)".
        raise usage.UsageError(f"{path}: not valid TOML: {problem}") from None


def _toml_type(value: object) -> str:
    """What TOML calls the type of ``value``, for error messages."""
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a float"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, (datetime, date, time)):
        return "a date or time"
    return type(value).__name__  # pragma: no cover - TOML has no other types


def _as_text(value: object) -> str | None:
    """``value`` as the text it would be on a command line, or None if it has no such form."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (str, int, float)):
        return str(value)
    return None


class _Refused(Exception):
    """A value the option refused, or one of the wrong type; the message says why."""


def _set_flag(options: usage.Options, name: str, value: object) -> None:
    if not isinstance(value, bool):
        raise _Refused(f"expected true or false, not {_toml_type(value)}")
    if value:
        options[name] = 1  # as usage.Options sets a flag from the command line


def _call_flag_method(method: Callable[[], object], value: object) -> None:
    if not isinstance(value, bool):
        raise _Refused(f"expected true or false, not {_toml_type(value)}")
    if value:
        method()


def _call_method(method: Callable[[str], object], value: object) -> None:
    texts = []
    for item in value if isinstance(value, list) else [value]:
        text = _as_text(item)
        if text is None:
            raise _Refused(
                f"expected a string or a number, or an array of them, not {_toml_type(item)}"
            )
        texts.append(text)
    for text in texts:  # all checked first: a bad item sets nothing
        method(text)


def _coerce_parameter(
    options: usage.Options, name: str, coerce: Callable[[str], object], value: object
) -> None:
    text = _as_text(value)
    if text is None:
        raise _Refused(f"expected a string or a number, not {_toml_type(value)}")
    options[name] = coerce(text)


def _setter(options: usage.Options, name: str) -> Callable[[object], None]:
    """How the value of the option ``name`` (its long name) is set, as parseOptions would.

    An ``opt_`` method comes first, as in usage.Options, where handlers override
    parameters and flags of the same name.
    """
    method = getattr(options, "opt_" + name.replace("-", "_"), None)
    if method is not None:
        if usage.flagFunction(method, name):
            return lambda value: _call_flag_method(method, value)
        return lambda value: _call_method(method, value)
    parameters: list[Sequence[Any]] = []
    reflect.accumulateClassList(type(options), "optParameters", parameters)
    for parameter in parameters:
        long, _short, _default, _doc, coerce = util.padTo(5, parameter)
        if long == name:
            coerce = coerce or str
            return lambda value: _coerce_parameter(options, name, coerce, value)
    return lambda value: _set_flag(options, name, value)


def file_keys(options: usage.Options) -> list[str]:
    """The keys a configuration file may hold for ``options``: its long option names."""
    return sorted(
        name
        for name, canonical in options.synonyms.items()
        if name == canonical and name not in NOT_IN_FILE
    )


def _unknown_key(options: usage.Options, key: str) -> str:
    canonical = options.synonyms.get(key)
    if canonical is not None and canonical != key:
        return f"unknown key {key!r}: use the long option name {canonical!r}"
    if key in NOT_IN_FILE:
        return f"{key!r} cannot be set in a configuration file"
    known = file_keys(options)
    close = difflib.get_close_matches(key.replace("_", "-"), known, n=1)
    if close:
        return f"unknown key {key!r} (did you mean {close[0]!r}?)"
    return f"unknown key {key!r} (the keys are the long option names: {', '.join(known)})"


def apply_config(
    options: usage.Options, path: Path, given_on_command_line: Iterable[str] = ()
) -> None:
    """Set ``options`` from the TOML file ``path``, skipping options the command line gave.

    ``given_on_command_line`` holds long option names (see :func:`options_given`).
    Each value is handled as the command line would handle it, so the same checks
    apply; any problem raises UsageError naming ``path`` and the key.
    """
    given = set(given_on_command_line)
    for key, value in read_config(path).items():
        if key in NOT_IN_FILE or options.synonyms.get(key) != key:
            raise usage.UsageError(f"{path}: {_unknown_key(options, key)}")
        if key in given:
            continue
        try:
            _setter(options, key)(value)
        except (_Refused, ValueError, usage.UsageError) as problem:
            raise usage.UsageError(f"{path}: {key}: {problem}") from None


def _scan(options: usage.Options, argv: Sequence[str]) -> list[tuple[str, str]]:
    """The (long name, argument) pairs of the options in ``argv``, as parseOptions sees them.

    Raises getopt.GetoptError where parseOptions would raise a UsageError.
    """
    pairs, _args = getopt.getopt(list(argv), options.shortOpt, options.longOpt)
    scanned = []
    for opt, argument in pairs:
        name = opt[2:] if opt.startswith("--") else opt[1:]
        if name not in options.synonyms:
            name = name.replace("-", "_")  # as parseOptions does
        canonical = options.synonyms.get(name)
        if canonical is not None:
            scanned.append((canonical, argument))
    return scanned


def options_given(options: usage.Options, argv: Sequence[str]) -> set[str]:
    """The long names of the options that ``argv`` gives, under any spelling.

    ``-p 1 --port 2`` gives ``{"port"}``. Raises UsageError for arguments that
    parseOptions would refuse too.
    """
    try:
        return {name for name, _argument in _scan(options, argv)}
    except getopt.GetoptError as problem:
        raise usage.UsageError(str(problem)) from None


class _NamedCoerceParameter(usage.CoerceParameter):
    """A parameter whose refused value is reported with the option's name.

    usage.CoerceParameter says only "Parameter type enforcement failed", so a
    command line with several options would leave the reader guessing which.
    """

    def dispatch(self, parameterName: str, value: str) -> None:
        try:
            self.options.opts[parameterName] = self.coerce(value)
        except ValueError as problem:
            raise usage.UsageError(f"--{parameterName}: {problem}") from None


class ConfigFileOptions(usage.Options):
    """``usage.Options`` with ``--config FILE``; subclass it instead of ``usage.Options``.

    The file is read when the arguments are parsed, before their own options are
    handled and before ``postOptions``, so ``postOptions`` sees the combined
    result. Options given on the command line are skipped in the file. With
    ``--help`` or ``--version`` the file is not read at all.
    """

    optParameters: ClassVar[list[list[Any]]] = [
        [
            CONFIG_OPTION,
            None,
            None,
            "Read options from this TOML file (keys are the long option names); "
            "the command line wins over it.",
        ],
    ]

    #: The long names of the options the command line gave, once parsed.
    given_on_command_line: frozenset[str] = frozenset()
    #: The arguments parsed, so that the same command line can be read again with
    #: the config file as it is now (a reload).
    argv: tuple[str, ...] = ()

    def __init__(self) -> None:
        super().__init__()
        # usage.Options keeps its handlers in _dispatch; only the coerced ones change.
        for name, handler in self._dispatch.items():
            if isinstance(handler, usage.CoerceParameter):
                self._dispatch[name] = _NamedCoerceParameter(self, handler.coerce)

    def parseOptions(self, options: Sequence[str] | None = None) -> None:
        argv = sys.argv[1:] if options is None else list(options)
        self.argv = tuple(argv)
        try:
            scanned = _scan(self, argv)
        except getopt.GetoptError:
            # Bad arguments, or shell completion: usage.Options deals with both.
            scanned = []
        given = frozenset(name for name, _argument in scanned)
        self.given_on_command_line = given
        config_files = [argument for name, argument in scanned if name == CONFIG_OPTION]
        if config_files and not given & {"help", "version"}:
            apply_config(self, Path(config_files[-1]), given)
        super().parseOptions(argv)
