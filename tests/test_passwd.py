"""Tests for chatd.passwd: the chatd-passwd command that prints an operator's password hash."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import IO

import argon2
import pytest

from chatd.passwd import main

ROOT = Path(__file__).resolve().parents[1]


class Terminal(io.StringIO):
    """A standard input that says it is a terminal."""

    def isatty(self) -> bool:
        return True


def asking(*answers: str | BaseException) -> tuple[Callable[[str], str], list[str]]:
    """A getpass stand-in giving ``answers`` in turn, and the prompts it was asked with."""
    prompts: list[str] = []
    queue = list(answers)

    def ask(prompt: str) -> str:
        prompts.append(prompt)
        answer = queue.pop(0)
        if isinstance(answer, BaseException):
            raise answer
        return answer

    return ask, prompts


def run(
    stdin: IO[str], ask: Callable[[str], str] | None = None, argv: list[str] | None = None
) -> tuple[int, str, str]:
    """Run main() on the given input; return its status, standard output and standard error."""
    stdout, stderr = io.StringIO(), io.StringIO()

    def refuse(prompt: str) -> str:
        raise AssertionError("getpass must not be used on piped input")

    status = main(argv or [], stdin=stdin, stdout=stdout, stderr=stderr, ask=ask or refuse)
    return status, stdout.getvalue(), stderr.getvalue()


def hash_of(stdout: str, password: str) -> bool:
    """Whether ``stdout`` is exactly one line holding an argon2 hash of ``password``."""
    assert stdout.endswith("\n") and stdout.count("\n") == 1
    return argon2.PasswordHasher().verify(stdout.strip(), password)


# Piped input.


def test_piped_first_line_is_hashed() -> None:
    """Piped input: the first line, without its line end, is hashed; only the hash is printed."""
    status, stdout, stderr = run(io.StringIO("s3cret-pw\nnot this one\n"))
    assert (status, stderr) == (0, "")
    assert stdout.startswith("$argon2id$")
    assert hash_of(stdout, "s3cret-pw")


@pytest.mark.parametrize("text", ["pw\r\n", "pw"])
def test_piped_line_end_is_removed_whatever_it_is(text: str) -> None:
    """A CRLF line end, or none at all, is not part of the password."""
    status, stdout, _stderr = run(io.StringIO(text))
    assert status == 0 and hash_of(stdout, "pw")


def test_piped_input_is_read_as_utf8() -> None:
    """Piped bytes are decoded as UTF-8, as chatd decodes the wire, whatever the locale says."""
    stdin = io.TextIOWrapper(io.BytesIO("pässwörd\n".encode()), encoding="latin-1")
    status, stdout, _stderr = run(stdin)
    assert status == 0 and hash_of(stdout, "pässwörd")


def test_piped_invalid_utf8_is_refused() -> None:
    """Piped bytes that are not UTF-8 are refused rather than hashed as something else."""
    stdin = io.TextIOWrapper(io.BytesIO(b"caf\xe9\n"), encoding="latin-1")
    status, stdout, stderr = run(stdin)
    assert (status, stdout) == (1, "")
    assert stderr == "chatd-passwd: the input is not valid UTF-8.\n"


@pytest.mark.parametrize("text", ["", "\n", "\r\n", "\nsecond line\n"])
def test_piped_empty_password_is_refused(text: str) -> None:
    """An empty first line (or no input at all) is refused: exit 1, a reason, no hash."""
    status, stdout, stderr = run(io.StringIO(text))
    assert (status, stdout) == (1, "")
    assert stderr == "chatd-passwd: an empty password is not hashed.\n"


@pytest.mark.parametrize(
    "password", ["two words", " lead", "trail ", "tab\there", "bell\a", "nb\xa0sp"]
)
def test_password_chatd_could_not_receive_is_refused(password: str) -> None:
    """Spaces and controls are refused: /oper splits on white space and strips controls."""
    status, stdout, stderr = run(io.StringIO(password + "\n"))
    assert (status, stdout) == (1, "")
    assert "cannot contain spaces or control characters" in stderr


# On a terminal.


def test_terminal_asks_twice_and_hashes() -> None:
    """On a terminal the password is asked for twice with getpass, then hashed."""
    ask, prompts = asking("tty-pw", "tty-pw")
    status, stdout, stderr = run(Terminal("ignored\n"), ask)
    assert prompts == ["Password: ", "Again: "]
    assert (status, stderr) == (0, "")
    assert hash_of(stdout, "tty-pw")


def test_terminal_mismatch_is_refused() -> None:
    """Two different entries are refused: exit 1, a reason on standard error, no hash."""
    ask, _prompts = asking("one-pw", "other-pw")
    assert run(Terminal(), ask) == (1, "", "chatd-passwd: the two passwords differ.\n")


def test_terminal_empty_password_is_refused_at_once() -> None:
    """An empty entry is refused without asking again."""
    ask, prompts = asking("")
    assert run(Terminal(), ask) == (1, "", "chatd-passwd: an empty password is not hashed.\n")
    assert prompts == ["Password: "]


def test_terminal_end_of_input_is_refused() -> None:
    """Ctrl-D at a prompt ends with exit 1 and a short reason, not a traceback."""
    ask, _prompts = asking("pw", EOFError())
    assert run(Terminal(), ask) == (1, "", "chatd-passwd: no password given.\n")


def test_terminal_interrupt_exits_130() -> None:
    """Ctrl-C at a prompt ends quietly with the usual status 130."""
    ask, _prompts = asking(KeyboardInterrupt())
    assert run(Terminal(), ask) == (130, "", "\n")


# Arguments and the real program.


def test_help_explains(capsys: pytest.CaptureFixture[str]) -> None:
    """--help says what the hash is for and how the password is read, and exits 0."""
    with pytest.raises(SystemExit) as exit_:
        main(["--help"])
    assert exit_.value.code == 0
    shown = " ".join(capsys.readouterr().out.split())
    assert "usage: chatd-passwd" in shown
    assert "--oper 'NAME:HASH'" in shown
    assert "asked for twice" in shown and "first line of standard input" in shown


def test_unknown_argument_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    """An unknown argument exits 2 with the usage, hashing nothing."""
    with pytest.raises(SystemExit) as exit_:
        main(["--bogus"], stdin=io.StringIO("pw\n"))
    assert exit_.value.code == 2
    assert capsys.readouterr().out == ""


def test_runs_as_a_module_with_piped_input() -> None:
    """``python -m chatd.passwd`` with a piped password prints one verifiable hash and exits 0."""
    env = dict(
        os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])
    )
    done = subprocess.run(
        [sys.executable, "-m", "chatd.passwd"],
        input="from-a-pipe\n",
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        timeout=60,
    )
    assert (done.returncode, done.stderr) == (0, "")
    assert hash_of(done.stdout, "from-a-pipe")
