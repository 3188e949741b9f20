"""Unit tests of chatd-client's connection logic, pipe bridge and decisions.

Everything runs on StringTransports and a task.Clock: no sockets, no reactor, no sleeps.
"""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from twisted.internet.defer import Deferred, ensureDeferred, fail, succeed
from twisted.internet.error import ConnectionDone, ConnectionLost, ConnectionRefusedError
from twisted.internet.interfaces import IStreamClientEndpoint
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.python.failure import Failure
from zope.interface import implementer

from chatd.client import (
    MAX_PENDING_INPUT_BYTES,
    MAX_SERVER_LINE_BYTES,
    QUIT_TIMEOUT_SECONDS,
    ChatClient,
    PipeBridge,
    connect,
    connect_failure_message,
    describe_loss,
    exit_status,
    is_quit_command,
    local_echo,
    parse_arguments,
    prompt_text,
    run_pipe,
    send_typed,
)

WELCOME = (
    b"*** Welcome, alice! You are in #lobby (2): alice, bob\r\n*** Type /help for commands.\r\n"
)


class Harness:
    """A ChatClient connected to a StringTransport, with everything it showed."""

    def __init__(self, alias: str | None = None) -> None:
        self.shown: list[str] = []
        self.clock = Clock()
        self.client = ChatClient(self.shown.append, self.clock, alias)
        self.transport = StringTransport()
        self.client.makeConnection(self.transport)

    def receive(self, data: bytes) -> None:
        self.client.dataReceived(data)

    def sent(self) -> bytes:
        return self.transport.value()

    def close(self, reason: Exception | None = None) -> None:
        self.client.connectionLost(Failure(reason or ConnectionDone()))


def result_of(deferred: Deferred[int]) -> int:
    """The result of a Deferred that must have fired already."""
    results: list[int] = []
    deferred.addCallback(results.append)
    assert results, "the Deferred has not fired"
    return results[0]


# The connection.


def test_alias_is_sent_as_first_line_on_connect() -> None:
    """With --alias, the alias is the first thing sent, LF-terminated."""
    assert Harness("alice").sent() == b"alice\n"


def test_nothing_is_sent_on_connect_without_alias() -> None:
    """Without --alias the client waits for the user to type one."""
    assert Harness().sent() == b""


def test_server_lines_are_shown_without_line_end() -> None:
    """CRLF- and LF-terminated server lines are shown without CR or LF."""
    harness = Harness()
    harness.receive(b"*** Welcome to chatd 1.0.\r\n<bob> hi\n")
    assert harness.shown == ["*** Welcome to chatd 1.0.", "<bob> hi"]


def test_server_line_split_over_chunks_is_shown_once_complete() -> None:
    """A line that arrives in pieces is shown whole, and only when it is complete."""
    harness = Harness()
    harness.receive(b"<bob> hel")
    assert harness.shown == []
    harness.receive(b"lo\r\n")
    assert harness.shown == ["<bob> hello"]


def test_escape_sequences_and_controls_are_stripped_from_server_lines() -> None:
    """A hostile server cannot retitle, recolour, beep or clear the user's terminal."""
    harness = Harness()
    harness.receive(b"\x1b]0;owned\x07\x1b[31mred\x1b[0m \x1b[2Jtext\x07\xc2\x9b1m\r\n")
    assert harness.shown == ["red text"]


def test_invalid_utf8_from_server_is_replaced_not_fatal() -> None:
    """Bytes that are not UTF-8 become U+FFFD instead of crashing the client."""
    harness = Harness()
    harness.receive(b"<bob> caf\xe9\r\n")
    assert harness.shown == ["<bob> caf\ufffd"]


def test_alias_is_learned_from_welcome_line() -> None:
    """The alias the server accepted is taken from its Welcome line."""
    harness = Harness()
    assert harness.client.alias is None
    harness.receive(WELCOME)
    assert harness.client.alias == "alice"


def test_own_rename_is_followed() -> None:
    """When the server announces our rename, the tracked alias follows it."""
    harness = Harness()
    harness.receive(WELCOME + b"*** alice is now known as alicia\r\n")
    assert harness.client.alias == "alicia"


def test_own_rename_is_recognised_case_insensitively() -> None:
    """Aliases compare case-insensitively on the server, so tracking does too."""
    harness = Harness()
    harness.receive(WELCOME + b"*** ALICE is now known as Alice\r\n")
    assert harness.client.alias == "Alice"


def test_someone_elses_rename_leaves_our_alias() -> None:
    """Another member's rename does not change our alias."""
    harness = Harness()
    harness.receive(WELCOME + b"*** bob is now known as robert\r\n")
    assert harness.client.alias == "alice"


def test_chat_line_imitating_a_rename_is_not_taken_for_one() -> None:
    """Chat text that looks like a rename notice cannot change our alias."""
    harness = Harness()
    harness.receive(WELCOME + b"<mallory> *** alice is now known as fool\r\n")
    assert harness.client.alias == "alice"


def test_quit_sends_quit_once() -> None:
    """quit() sends /quit, and calling it again sends nothing more."""
    harness = Harness()
    harness.client.quit()
    harness.client.quit()
    assert harness.sent() == b"/quit\n"
    assert harness.client.quit_sent


def test_quit_typed_by_the_user_counts_as_sent() -> None:
    """A /quit among the user's own lines (any case, with a reason) makes ours unneeded."""
    harness = Harness()
    harness.client.send_lines(b"hello\r\n/QUIT see you\n")
    harness.client.quit()
    assert harness.sent() == b"hello\r\n/QUIT see you\n"
    assert harness.client.quit_sent


def test_quit_after_the_connection_closed_sends_nothing() -> None:
    """Once the server has closed there is nobody to say /quit to."""
    harness = Harness()
    harness.close()
    harness.client.quit()
    assert harness.sent() == b""


def test_close_after_quit_is_a_clean_exit() -> None:
    """The server closing after our /quit ends with status 0 and no note."""
    harness = Harness()
    harness.client.quit()
    harness.close()
    assert harness.client.problem is None
    assert harness.client.exit_status() == 0


def test_close_without_quit_is_reported() -> None:
    """The server closing before we said /quit ends with status 1 and a note."""
    harness = Harness()
    harness.close()
    assert harness.client.problem == "the server closed the connection"
    assert harness.client.exit_status() == 1


def test_lost_connection_is_reported_with_its_reason() -> None:
    """An abrupt loss of the connection is reported with Twisted's reason."""
    harness = Harness()
    harness.close(ConnectionLost("reset by peer"))
    assert harness.client.problem is not None
    assert harness.client.problem.startswith("connection lost: ")
    assert "reset by peer" in harness.client.problem


def test_server_that_ignores_quit_is_cut_off_after_timeout() -> None:
    """If the server does not close after /quit, the client aborts and exits 1."""
    harness = Harness()
    harness.client.quit()
    harness.clock.advance(QUIT_TIMEOUT_SECONDS - 0.1)
    assert not harness.transport.disconnecting
    harness.clock.advance(0.1)
    assert harness.transport.disconnected  # StringTransport's mark of abortConnection
    harness.close(ConnectionLost())
    assert harness.client.problem is not None
    assert "did not close" in harness.client.problem
    assert harness.client.exit_status() == 1


def test_quit_timer_is_cancelled_when_server_closes() -> None:
    """A server that closes in time leaves no timer behind."""
    harness = Harness()
    harness.client.quit()
    harness.close()
    assert harness.clock.getDelayedCalls() == []


def test_overlong_server_line_closes_the_connection() -> None:
    """A server line past MAX_SERVER_LINE_BYTES closes the connection as a protocol error."""
    harness = Harness()
    harness.receive(b"x" * (MAX_SERVER_LINE_BYTES + 1))
    assert harness.transport.disconnecting
    harness.close()
    assert harness.client.problem is not None
    assert "line over" in harness.client.problem
    assert harness.client.exit_status() == 1


def test_when_closed_fires_on_close_and_at_once_afterwards() -> None:
    """when_closed() waits for the close, and fires at once once it has happened."""
    harness = Harness()
    fired: list[None] = []
    harness.client.when_closed().addCallback(fired.append)
    assert fired == []
    harness.close()
    assert fired == [None]
    harness.client.when_closed().addCallback(fired.append)
    assert fired == [None, None]


def test_cancelled_close_waiter_is_forgotten() -> None:
    """Cancelling a when_closed() Deferred removes it instead of firing it later."""
    harness = Harness()
    waiter = harness.client.when_closed()
    waiter.addErrback(lambda failure: None)
    waiter.cancel()
    harness.close()  # would raise AlreadyCalledError if the waiter were still listed


# What lines mean.


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("/quit", True),
        ("/QUIT", True),
        ("/quit bye now", True),
        ("/quitter", False),
        ("//quit", False),
        ("quit", False),
        (" /quit", False),
    ],
)
def test_quit_command_is_recognised_like_the_server_does(line: str, expected: bool) -> None:
    """is_quit_command agrees with the server on which lines end the session."""
    assert is_quit_command(line) is expected


@pytest.mark.parametrize(
    ("alias", "line", "expected"),
    [
        ("alice", "hello", "<alice> hello"),
        ("alice", "//etc/passwd", "<alice> /etc/passwd"),
        ("alice", "/me waves", "* alice waves"),
        ("alice", "/ME  waves ", "* alice waves"),
        ("alice", "/me", None),
        ("alice", "/msg bob hi", None),
        ("alice", "/nick alicia", None),
        ("alice", "   ", None),
        ("alice", "bell\x07 \x1b[31mred", "<alice> bell red"),
        (None, "alice", None),
    ],
)
def test_local_echo_shows_what_the_others_see(
    alias: str | None, line: str, expected: str | None
) -> None:
    """Own chat and /me lines are echoed as the others see them; commands are not."""
    assert local_echo(alias, line) == expected


def test_typed_text_is_sent_and_echoed_line_by_line() -> None:
    """A multi-line paste is sent as separate lines, each echoed locally."""
    harness = Harness()
    harness.receive(WELCOME)
    harness.shown.clear()
    send_typed(harness.client, "one\ntwo\n/me nods")
    assert harness.sent() == b"one\ntwo\n/me nods\n"
    assert harness.shown == ["<alice> one", "<alice> two", "* alice nods"]


def test_empty_typed_line_is_still_sent() -> None:
    """Enter on an empty line sends an empty line (the server answers an alias prompt)."""
    harness = Harness()
    send_typed(harness.client, "")
    assert harness.sent() == b"\n"


def test_prompt_shows_alias_once_known() -> None:
    """The prompt is '> ' until an alias is accepted, then 'alias> '."""
    assert prompt_text(None) == "> "
    assert prompt_text("alice") == "alice> "


@pytest.mark.parametrize(
    ("quit_sent", "problem", "status"),
    [(True, None, 0), (False, "closed", 1), (True, "timeout", 1), (False, None, 1)],
)
def test_exit_status_is_zero_only_for_a_clean_quit(
    quit_sent: bool, problem: str | None, status: int
) -> None:
    """Exit status 0 needs our /quit and no problem; anything else is 1."""
    assert exit_status(quit_sent, problem) == status


def test_connect_failure_message_names_host_port_and_reason() -> None:
    """The failure line names the program, the address and Twisted's reason."""
    message = connect_failure_message("h", 1, Failure(ConnectionRefusedError("no")))
    assert message.startswith("chatd-client: cannot connect to h:1: ")
    assert "no" in message


# The command line.


def test_arguments_default_to_local_server_without_alias() -> None:
    """Without arguments the client connects to 127.0.0.1:55555 and sends no alias."""
    options = parse_arguments([])
    assert (options.host, options.port, options.alias) == ("127.0.0.1", 55555, None)


def test_arguments_are_parsed() -> None:
    """--host, --port and --alias are taken as given."""
    options = parse_arguments(["--host", "chat.example", "--port", "4000", "--alias", "bob"])
    assert (options.host, options.port, options.alias) == ("chat.example", 4000, "bob")


@pytest.mark.parametrize("port", ["0", "65536", "http", "-1"])
def test_bad_port_is_a_usage_error(port: str, capsys: pytest.CaptureFixture[str]) -> None:
    """A port that is not 1-65535 exits with status 2 and says why."""
    with pytest.raises(SystemExit) as exited:
        parse_arguments(["--port", port])
    assert exited.value.code == 2
    assert "not a TCP port" in capsys.readouterr().err


# Pipe mode.


class BridgeHarness:
    """A PipeBridge on a StringTransport (standard I/O), attached to a Harness client."""

    def __init__(self, alias: str | None = None) -> None:
        self.bridge = PipeBridge()
        self.stdio = StringTransport()
        self.bridge.makeConnection(self.stdio)
        self.server = Harness(alias)

    def attach(self) -> None:
        self.bridge.attach(self.server.client)


def test_standard_input_is_not_read_before_connecting() -> None:
    """Reading stdin is paused until the connection exists, then resumed."""
    harness = BridgeHarness()
    assert harness.stdio.producerState == "paused"
    harness.attach()
    assert harness.stdio.producerState == "producing"


def test_bridge_and_connection_throttle_each_other() -> None:
    """The connection is stdout's producer and stdin is the connection's producer."""
    harness = BridgeHarness()
    harness.attach()
    assert harness.stdio.producer is harness.server.transport
    assert harness.server.transport.producer is harness.stdio
    assert harness.stdio.streaming and harness.server.transport.streaming


def test_complete_input_lines_are_sent_as_they_are() -> None:
    """Input lines are sent byte for byte, CRLF included, in order."""
    harness = BridgeHarness()
    harness.attach()
    harness.bridge.dataReceived(b"alice\nhello\r\nw\xc3\xb6rld\n")
    assert harness.server.sent() == b"alice\nhello\r\nw\xc3\xb6rld\n"


def test_unfinished_input_line_waits_for_its_end() -> None:
    """Part of a line is held back until its LF arrives."""
    harness = BridgeHarness()
    harness.attach()
    harness.bridge.dataReceived(b"one\ntw")
    assert harness.server.sent() == b"one\n"
    harness.bridge.dataReceived(b"o\n")
    assert harness.server.sent() == b"one\ntwo\n"


def test_end_of_input_sends_last_line_then_quit() -> None:
    """At EOF an unterminated last line gets its LF, and /quit follows everything."""
    harness = BridgeHarness("alice")
    harness.attach()
    harness.bridge.dataReceived(b"hello\nbye")
    harness.bridge.readConnectionLost()
    assert harness.server.sent() == b"alice\nhello\nbye\n/quit\n"
    assert harness.server.client.quit_sent


def test_endless_input_line_is_passed_on_not_hoarded() -> None:
    """A line longer than MAX_PENDING_INPUT_BYTES is sent on instead of buffered forever."""
    harness = BridgeHarness()
    harness.attach()
    harness.bridge.dataReceived(b"x" * (MAX_PENDING_INPUT_BYTES + 1))
    assert len(harness.server.sent()) == MAX_PENDING_INPUT_BYTES + 1


def test_server_lines_go_to_standard_output_with_lf() -> None:
    """What the client shows is written to stdout as one LF-terminated line."""
    harness = BridgeHarness()
    harness.bridge.show("<bob> hi ☺")
    assert harness.stdio.value() == "<bob> hi ☺\n".encode()


def test_closed_standard_output_makes_the_client_quit() -> None:
    """When nobody reads stdout any more the client says /quit and leaves."""
    harness = BridgeHarness()
    harness.attach()
    harness.bridge.writeConnectionLost()
    assert harness.server.sent() == b"/quit\n"
    assert harness.bridge.stdout_closed


@implementer(IStreamClientEndpoint)
class FakeEndpoint:
    """An endpoint that connects at once to a StringTransport, or fails."""

    def __init__(self, error: Exception | None = None) -> None:
        self.error = error
        self.transport = StringTransport()
        self.protocol: Protocol | None = None

    def connect(self, factory: Factory) -> Deferred[Protocol]:
        if self.error is not None:
            return fail(self.error)
        self.protocol = factory.buildProtocol(None)
        self.protocol.makeConnection(self.transport)
        return succeed(self.protocol)


class FakeStdio:
    """Opens standard I/O on a StringTransport and remembers the bridge."""

    def __init__(self) -> None:
        self.transport = StringTransport()
        self.bridge: PipeBridge | None = None

    def __call__(self, protocol: Protocol) -> StringTransport:
        assert isinstance(protocol, PipeBridge)
        self.bridge = protocol
        protocol.makeConnection(self.transport)
        return self.transport


def start_pipe(
    endpoint: FakeEndpoint, alias: str | None = None, *arguments: str
) -> tuple[Deferred[int], FakeStdio, io.StringIO]:
    """Run run_pipe against fakes; returns its Deferred, the stdio fake and stderr."""
    stdio, stderr = FakeStdio(), io.StringIO()
    with_alias = ["--alias", alias] if alias is not None else []
    options = parse_arguments(["--host", "h", "--port", "1", *with_alias, *arguments])
    running = ensureDeferred(
        run_pipe(Clock(), options, endpoint=endpoint, open_stdio=stdio, stderr=stderr)
    )
    return running, stdio, stderr


def test_pipe_session_ends_with_zero_after_eof_and_goodbye() -> None:
    """A whole pipe session: lines then /quit go out, server lines come out, exit 0."""
    endpoint = FakeEndpoint()
    running, stdio, stderr = start_pipe(endpoint, alias="alice")
    assert stdio.bridge is not None and endpoint.protocol is not None
    endpoint.protocol.dataReceived(b"*** Welcome to chatd 1.0.\r\n*** Welcome, alice! Hi\r\n")
    stdio.bridge.dataReceived(b"hello\n")
    stdio.bridge.readConnectionLost()
    assert endpoint.transport.value() == b"alice\nhello\n/quit\n"
    endpoint.protocol.dataReceived(b"*** Goodbye.\r\n")
    endpoint.protocol.connectionLost(Failure(ConnectionDone()))
    assert not running.called  # standard output is still being flushed
    assert stdio.transport.disconnecting
    stdio.bridge.connectionLost(Failure(ConnectionDone()))
    assert result_of(running) == 0
    assert stdio.transport.value() == (
        b"*** Welcome to chatd 1.0.\n*** Welcome, alice! Hi\n*** Goodbye.\n"
    )
    assert stderr.getvalue() == ""


def test_pipe_session_ends_with_one_when_server_closes_first() -> None:
    """The server closing before EOF ends the session with status 1 and a note."""
    endpoint = FakeEndpoint()
    running, stdio, stderr = start_pipe(endpoint)
    assert stdio.bridge is not None and endpoint.protocol is not None
    endpoint.protocol.connectionLost(Failure(ConnectionDone()))
    stdio.bridge.connectionLost(Failure(ConnectionDone()))
    assert result_of(running) == 1
    assert stderr.getvalue() == "chatd-client: the server closed the connection\n"
    assert stdio.transport.value() == b""


def test_pipe_session_reports_connection_failure_with_status_two() -> None:
    """No connection: one line on stderr naming the address, nothing on stdout, exit 2."""
    running, stdio, stderr = start_pipe(FakeEndpoint(ConnectionRefusedError("refused")))
    assert result_of(running) == 2
    assert stderr.getvalue().startswith("chatd-client: cannot connect to h:1: ")
    assert "refused" in stderr.getvalue()
    assert stdio.transport.value() == b""


def test_importing_the_module_picks_no_reactor() -> None:
    """Importing chatd.client installs no reactor, so main() can still install asyncio's."""
    probe = (
        "import sys, chatd.client; "
        "print('twisted.internet.reactor' in sys.modules, 'prompt_toolkit' in sys.modules)"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True
    )
    assert result.stdout.split() == ["False", "False"]


# Registered aliases: the password, and piped input held until the alias is ours.

PASSWORD_PROMPT = b"*** bob is registered. Password:\r\n"
GREETING = b"*** Welcome to chatd 1.0.\r\n*** Choose an alias (1-24 characters):\r\n"


def test_piped_input_waits_until_the_alias_is_accepted_and_the_password_is_sent(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """With --alias, piped lines are held until the Welcome, so none is taken as the
    password, which comes from CHATD_PASSWORD when the server asks for it."""
    monkeypatch.setenv("CHATD_PASSWORD", "s3cret pass")
    endpoint = FakeEndpoint()
    running, stdio, stderr = start_pipe(endpoint, "bob")
    assert stdio.bridge is not None and endpoint.protocol is not None
    stdio.bridge.dataReceived(b"hello\n")
    endpoint.protocol.dataReceived(GREETING + PASSWORD_PROMPT)
    assert endpoint.transport.value() == b"bob\ns3cret pass\n"
    endpoint.protocol.dataReceived(b"*** Welcome, bob! You are in #lobby (1): bob\r\n")
    assert endpoint.transport.value() == b"bob\ns3cret pass\nhello\n"
    assert not running.called and stderr.getvalue() == ""


def test_a_registered_alias_without_a_password_says_how_to_give_one() -> None:
    """Piped, with no password given, the client says how to give one and exits 1,
    sending no piped line at all."""
    endpoint = FakeEndpoint()
    running, stdio, stderr = start_pipe(endpoint, "bob")
    assert stdio.bridge is not None and endpoint.protocol is not None
    stdio.bridge.dataReceived(b"my password, I thought\n")
    endpoint.protocol.dataReceived(GREETING + PASSWORD_PROMPT)
    assert endpoint.transport.value() == b"bob\n"  # /quit would be taken for the password
    assert endpoint.transport.disconnecting
    endpoint.protocol.connectionLost(Failure(ConnectionDone()))
    stdio.bridge.connectionLost(Failure(ConnectionDone()))
    assert result_of(running) == 1
    assert stderr.getvalue() == (
        "chatd-client: bob is registered: give its password with --password-file FILE"
        " or the CHATD_PASSWORD environment variable\n"
    )


def test_a_refused_login_in_pipe_mode_exits_one(tmp_path: Path) -> None:
    """A wrong password (the alias prompt comes again) ends a piped session with status 1;
    the password was read from --password-file and sent once."""
    secret = tmp_path / "password"
    secret.write_text("wrong one\nsecond line ignored\n")
    endpoint = FakeEndpoint()
    running, stdio, stderr = start_pipe(endpoint, "bob", "--password-file", str(secret))
    assert stdio.bridge is not None and endpoint.protocol is not None
    stdio.bridge.dataReceived(b"hello\n")
    endpoint.protocol.dataReceived(GREETING + PASSWORD_PROMPT)
    endpoint.protocol.dataReceived(b"!!! Wrong password for bob.\r\n" + GREETING[27:])
    assert endpoint.transport.value() == b"bob\nwrong one\n"
    assert endpoint.transport.disconnecting
    endpoint.protocol.connectionLost(Failure(ConnectionDone()))
    stdio.bridge.connectionLost(Failure(ConnectionDone()))
    assert result_of(running) == 1
    assert stderr.getvalue() == "chatd-client: the server did not accept the alias bob\n"


def test_a_password_prompt_masks_and_is_not_echoed() -> None:
    """At a password prompt the client knows the next line is a password: the prompt
    says so (and masks it), and the line sent is not shown."""
    harness = Harness()
    harness.receive(PASSWORD_PROMPT)
    assert harness.client.expects_password
    assert prompt_text(None, harness.client.expects_password) == "password> "
    send_typed(harness.client, "hunter2")
    assert harness.sent() == b"hunter2\n"
    assert harness.shown == ["*** bob is registered. Password:"]
    assert not harness.client.expects_password


def test_password_options_are_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """--password-file gives its first line (over CHATD_PASSWORD); the variable alone works;
    neither is used without --alias."""
    monkeypatch.setenv("CHATD_PASSWORD", "from env")
    secret = tmp_path / "password"
    secret.write_text("from file\r\n")
    assert parse_arguments(["--alias", "bob", "--password-file", str(secret)]).password == (
        "from file"
    )
    assert parse_arguments(["--alias", "bob"]).password == "from env"
    assert parse_arguments([]).password is None


@pytest.mark.parametrize(
    ("arguments", "error"),
    [
        (["--password-file", "x"], "--password-file goes with --alias"),
        (["--alias", "bob", "--password-file", "/nonexistent"], "cannot read --password-file"),
        (["--server-name", "chat.example"], "--server-name goes with --tls"),
    ],
)
def test_bad_password_and_tls_name_options_are_usage_errors(
    arguments: list[str], error: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Options that cannot be used say why, with status 2."""
    with pytest.raises(SystemExit) as exited:
        parse_arguments(arguments)
    assert exited.value.code == 2
    assert error in capsys.readouterr().err


def test_the_help_names_the_password_options(capsys: pytest.CaptureFixture[str]) -> None:
    """--help tells how to give a registered alias's password and the TLS name."""
    with pytest.raises(SystemExit):
        parse_arguments(["--help"])
    shown = " ".join(capsys.readouterr().out.split())
    assert "--password-file FILE" in shown and "CHATD_PASSWORD" in shown
    assert "--server-name NAME" in shown


def test_the_tls_name_checked_is_the_server_name(monkeypatch: pytest.MonkeyPatch) -> None:
    """--server-name, not --host, is the name the certificate is checked for (and SNI)."""
    names: list[str] = []

    def recording_tls_options(name: str, ca_file: str | None) -> Any:
        names.append(name)
        raise ConnectionRefusedError("stop here")

    monkeypatch.setattr("chatd.client.tls_options", recording_tls_options)
    options = parse_arguments(["--host", "127.0.0.1", "--tls", "--server-name", "chat.example"])
    failures: list[Failure] = []
    reactor: Any = MemoryReactorClock()
    ensureDeferred(connect(reactor, options, ChatClient(print, reactor))).addErrback(
        failures.append
    )
    assert failures[0].check(ConnectionRefusedError)
    assert names == ["chat.example"]


def tls_failure(*reasons: str) -> Failure:
    from OpenSSL.SSL import Error

    return Failure(Error([("SSL routines", "", reason) for reason in reasons]))


@pytest.mark.parametrize(
    ("failure", "said"),
    [
        (
            tls_failure("certificate verify failed"),
            "TLS: certificate verify failed (the server's certificate is not trusted;"
            " use --ca-file)",
        ),
        (
            tls_failure("wrong version number"),
            "TLS: wrong version number (is the port a TLS one?)",
        ),
        (tls_failure("a", "b", "a"), "TLS: a; b"),
    ],
)
def test_tls_failures_are_said_in_words(failure: Failure, said: str) -> None:
    """A failed handshake is reported as its reason and a hint, not a Python repr."""
    harness = Harness()
    harness.close(failure.value)
    assert harness.client.problem == said


def test_a_certificate_for_another_name_is_said_in_words() -> None:
    """A certificate that is not for the name checked names it and --server-name."""
    from service_identity import VerificationError

    assert describe_loss(Failure(VerificationError(errors=[])), "chat.example") == (
        "TLS: the server's certificate is not for chat.example"
        " (use --server-name with a name the certificate is for)"
    )
