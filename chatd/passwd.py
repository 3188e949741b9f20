"""chatd-passwd: print an argon2 hash of a password, for an operator definition.

Like Ergo's ``genpasswd``. Operators are defined in the configuration, with the
hash and never the password: ``twistd chatd --oper 'NAME:HASH'`` or, in the
configuration file, ``oper = ["NAME:HASH"]``.

On a terminal the password is asked for twice, without echo; otherwise the first
line of standard input is the password (its line end removed), so
``printf '%s\\n' "$PASSWORD" | chatd-passwd`` works in scripts. Standard output
gets the hash and a newline, nothing else.

Exit status: 0 with a hash printed; 1 when the password is refused (empty, the
two entries differ, or chatd could not receive it as typed: spaces and control
characters), with the reason on standard error; 2 for wrong arguments.
"""

from __future__ import annotations

import argparse
import getpass
import sys
from collections.abc import Callable, Sequence
from typing import IO

from chatd.passwords import hash_password_now

PROGRAM = "chatd-passwd"


class PasswordRefused(Exception):
    """No hash is printed; the message says why."""


def _parser() -> argparse.ArgumentParser:
    return argparse.ArgumentParser(
        prog=PROGRAM,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=(
            "Print an argon2 hash of a password, for a chatd operator:\n"
            "  twistd chatd --oper 'NAME:HASH'     (single quotes: the hash contains '$')\n"
            '  oper = ["NAME:HASH"]                (in the --config file)'
        ),
        epilog=(
            "On a terminal the password is asked for twice, without echo. Otherwise the\n"
            "first line of standard input is the password, without its line end:\n"
            "  printf '%s\\n' \"$PASSWORD\" | chatd-passwd\n"
            "Only the hash goes to standard output. A password may not be empty, nor\n"
            "contain spaces or control characters (chatd would not receive them as typed)."
        ),
    )


def _read_piped(stdin: IO[str]) -> str:
    """The first line of ``stdin``, without its line end, as UTF-8 like chatd's wire."""
    buffer = getattr(stdin, "buffer", None)
    if buffer is not None:
        try:
            line = buffer.readline().decode("utf-8")
        except UnicodeDecodeError:
            raise PasswordRefused("the input is not valid UTF-8.") from None
    else:
        line = stdin.readline()
    line = line.removesuffix("\n")
    return line.removesuffix("\r")


def _ask_twice(ask: Callable[[str], str]) -> str:
    try:
        password = ask("Password: ")
        if not password:
            raise PasswordRefused("an empty password is not hashed.")
        again = ask("Again: ")
    except EOFError:
        raise PasswordRefused("no password given.") from None
    if again != password:
        raise PasswordRefused("the two passwords differ.")
    return password


def check_password(password: str) -> str:
    """Return ``password`` if chatd could receive it as typed, else raise PasswordRefused."""
    if not password:
        raise PasswordRefused("an empty password is not hashed.")
    try:
        password.encode("utf-8")
    except UnicodeEncodeError:  # lone surrogates, from undecodable input
        raise PasswordRefused("the input is not valid UTF-8.") from None
    if " " in password or not password.isprintable():
        raise PasswordRefused(
            "a password cannot contain spaces or control characters "
            "(chatd would not receive it as typed)."
        )
    return password


def main(
    argv: Sequence[str] | None = None,
    *,
    stdin: IO[str] | None = None,
    stdout: IO[str] | None = None,
    stderr: IO[str] | None = None,
    ask: Callable[[str], str] = getpass.getpass,
) -> int:
    """The ``chatd-passwd`` console script; returns the exit status.

    The streams and ``ask`` (how to ask on a terminal, :func:`getpass.getpass`)
    are parameters so tests can drive it without a terminal or a subprocess.
    """
    stdin = sys.stdin if stdin is None else stdin
    stdout = sys.stdout if stdout is None else stdout
    stderr = sys.stderr if stderr is None else stderr
    _parser().parse_args(argv)
    try:
        password = _ask_twice(ask) if stdin.isatty() else _read_piped(stdin)
        check_password(password)
    except PasswordRefused as refusal:
        stderr.write(f"{PROGRAM}: {refusal}\n")
        return 1
    except KeyboardInterrupt:
        stderr.write("\n")
        return 130
    stdout.write(hash_password_now(password) + "\n")
    stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
