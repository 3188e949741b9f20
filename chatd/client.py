"""chatd-client: the bundled terminal client, for people and for scripts.

Usage: ``chatd-client [--host HOST] [--port PORT] [--alias ALIAS]`` (defaults
127.0.0.1 and 55555).

Two modes, chosen by where standard input and output go:

* **Interactive** (both are a terminal): a line editor whose prompt shows your
  alias. Incoming lines are printed above the line you are typing without
  disturbing it. The server does not echo your own chat lines or ``/me``, so the
  client shows them locally as ``<you> text`` and ``* you text``. Ctrl-D and
  Ctrl-C send ``/quit`` and leave once the server has said goodbye.
* **Pipe** (anything else): every line read from standard input is sent to the
  server as it is, in order; every server line is written to standard output and
  nothing else is, so ``printf 'alice\\nhello\\n' | chatd-client`` is scriptable.
  At the end of input the client sends ``/quit`` after the lines before it and
  waits for the server to close.

``--alias`` is sent as the first line right after connecting, in both modes.
If the server answers that the alias is registered and asks for its password,
the client sends the one read from ``--password-file FILE`` (its first line)
or the ``CHATD_PASSWORD`` environment variable; without one, an interactive
user types it at the prompt, which masks it and keeps it out of the history,
and pipe mode says on standard error how to give it and exits 1. In pipe mode
with ``--alias``, standard input is only read once the server has accepted the
alias, so a piped line is never taken as the password; if it refuses the alias
(taken, or a wrong password) the client exits 1.
Every server line is stripped of control characters and escape sequences
(:func:`chatd.text.clean_text`) before it is shown, so a hostile server cannot
drive the user's terminal. At the prompt, someone else's chat line or action
(live or in a history replay) that mentions your alias, as
:mod:`chatd.mentions` defines it, is shown in reverse video, and rings the
terminal's bell if the server ended it with one (a live line, unless you said
``/bell off``); a pipe gets every line as it is, without either.

Exit status: 0 when the server closed the connection after we sent ``/quit``
(ours at end of input or on Ctrl-D/Ctrl-C, or one you typed); 1 when it closed
first, sent an overlong line, or did not close within
``QUIT_TIMEOUT_SECONDS`` of our ``/quit`` (a short note goes to standard error);
2 when the connection could not be made (``chatd-client: cannot connect to
HOST:PORT: reason`` on standard error) or the arguments were wrong. A failed
TLS handshake is said in words (``chatd-client: TLS: ...``), with what to do
about it.

Why prompt_toolkit for the line editor: it is the well-kept library made for
this job. ``patch_stdout()`` prints above the prompt and redraws it, and it
handles wide and combining characters, wrapping of long input, history, and
restores the terminal however the program ends. The dependency-free alternative,
``twisted.conch.recvline``, only accepts printable ASCII keys (anyone typing
"café" loses the "é") and leaves redrawing the input line around incoming
messages to us. prompt_toolkit runs on asyncio, so interactive mode installs
Twisted's asyncio reactor before anything imports the reactor; pipe mode uses
the default reactor and Twisted's non-blocking standard I/O and does not
import prompt_toolkit at all.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import sys
from collections.abc import Callable, Sequence
from typing import IO, TYPE_CHECKING, NoReturn

from twisted.internet.defer import Deferred, ensureDeferred, succeed
from twisted.internet.endpoints import HostnameEndpoint, connectProtocol, wrapClientTLS
from twisted.internet.error import ConnectError, ConnectionDone, DNSLookupError
from twisted.internet.interfaces import (
    IConsumer,
    IDelayedCall,
    IHalfCloseableProtocol,
    IOpenSSLClientConnectionCreator,
    IPushProducer,
    IReactorTime,
    IStreamClientEndpoint,
    ITCPTransport,
    ITransport,
)
from twisted.internet.protocol import Protocol, connectionDone
from twisted.internet.ssl import Certificate, optionsForClientTLS
from twisted.internet.task import react
from twisted.protocols.basic import LineReceiver
from twisted.python.failure import Failure
from zope.interface import implementer

from chatd.mentions import mentions
from chatd.text import alias_key, clean_text, decode_line

if TYPE_CHECKING:
    from prompt_toolkit import PromptSession
    from prompt_toolkit.input import Input
    from prompt_toolkit.key_binding import KeyBindings, KeyPressEvent
    from twisted.internet.stdio import StandardIO

PROGRAM = "chatd-client"
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 55555
CONNECT_TIMEOUT_SECONDS = 30.0
QUIT_TIMEOUT_SECONDS = 10.0
# Far above any line chatd sends; a server that goes past it is broken or hostile.
MAX_SERVER_LINE_BYTES = 64 * 1024
# A stdin "line" longer than this is passed on unfinished; the server refuses it.
MAX_PENDING_INPUT_BYTES = 64 * 1024

EXIT_OK = 0
EXIT_CLOSED = 1
EXIT_CANNOT_CONNECT = 2

PASSWORD_VARIABLE = "CHATD_PASSWORD"

_WELCOME = re.compile(r"\*\*\* Welcome, (?P<alias>[^!\s]+)! ")
_RENAMED = re.compile(r"\*\*\* (?P<old>\S+) is now known as (?P<new>\S+)")
_PASSWORD_PROMPT = re.compile(r"\*\*\* (?P<alias>\S+) is registered\. Password:")
_ALIAS_PROMPT = "*** Choose an alias ("
# Someone's chat line or action, live or replayed ("[2026-11-24 10:32:05Z] " first).
_SPOKEN = re.compile(r"(?:\[[^\]]*\] )?(?:<(?P<said>[^>\s]+)>|\* (?P<acted>\S+)) (?P<text>.*)")
# How a line that mentions us is shown at the prompt: in reverse video, then back.
REVERSE, NOT_REVERSE = "\x1b[7m", "\x1b[27m"
BEL = "\a"

ShowLine = Callable[[str], None]


# What lines mean.


def is_quit_command(line: str) -> bool:
    """Whether the server will take ``line`` as ``/quit`` (it ends the session).

    Parses as the server's command table does: the word up to the first space, in
    any case. It only decides the exit status, so the few extra spellings the server
    also accepts before an alias is chosen (leading blanks) need not be matched.
    """
    return line.startswith("/") and line[1:].partition(" ")[0].lower() == "quit"


def local_echo(alias: str | None, line: str) -> str | None:
    """How our own typed ``line`` would look to the others, or None to show nothing.

    The server relays chat and ``/me`` to everyone but their sender; every other
    command gets an answer, and before an alias is accepted nothing is relayed.
    """
    if alias is None:
        return None
    if line.startswith("/") and not line.startswith("//"):
        name, _, action = line[1:].partition(" ")
        action = clean_text(action.strip())
        if name.lower() == "me" and action:
            return f"* {alias} {action}"
        return None
    text = clean_text(line[1:] if line.startswith("//") else line)
    return f"<{alias}> {text}" if text else None


def highlighted(text: str, ring: bool) -> str:
    """``text`` (already clean) in reverse video, followed by the terminal bell if ``ring``."""
    return f"{REVERSE}{text}{NOT_REVERSE}{BEL if ring else ''}"


def exit_status(quit_sent: bool, problem: str | None) -> int:
    """The exit status once the connection is gone: 0 only for a clean /quit."""
    return EXIT_OK if quit_sent and problem is None else EXIT_CLOSED


def connect_failure_message(host: str, port: int, reason: Failure | BaseException) -> str:
    """The one line on standard error when no connection could be made."""
    if isinstance(reason, Failure):
        reason = reason.value
    return f"{PROGRAM}: cannot connect to {host}:{port}: {reason}"


def describe_loss(reason: Failure, server_name: str | None = None) -> str:
    """Why the connection was lost, in words: a failed TLS handshake says what to do.

    pyOpenSSL and service_identity describe their failures as Python reprs of
    lists of tuples; the user needs the reason, and the option that helps.
    """
    from OpenSSL.SSL import Error as TLSError
    from service_identity import VerificationError

    if reason.check(VerificationError):
        name = f" for {server_name}" if server_name else ""
        return (
            f"TLS: the server's certificate is not{name}"
            " (use --server-name with a name the certificate is for)"
        )
    if reason.check(TLSError):
        reasons = [str(part[-1]) for part in _tls_error_parts(reason.value) if part[-1]]
        text = "; ".join(dict.fromkeys(reasons)) or "handshake failed"
        if "certificate verify failed" in text:
            return f"TLS: {text} (the server's certificate is not trusted; use --ca-file)"
        if "wrong version number" in text or "packet length too long" in text:
            return f"TLS: {text} (is the port a TLS one?)"
        return f"TLS: {text}"
    return f"connection lost: {reason.getErrorMessage()}"


def _tls_error_parts(error: BaseException) -> list[tuple[str, ...]]:
    """The (library, function, reason) tuples pyOpenSSL puts in an error's first argument."""
    parts = error.args[0] if error.args else []
    if not isinstance(parts, list):
        return [(str(parts),)]
    return [part for part in parts if isinstance(part, tuple) and part]


# The connection.


class IServerConnection(ITCPTransport, IConsumer, IPushProducer):
    """What the client's connection is (TCP or TLS over it), for the type checker:
    a transport that can be aborted, fed by a producer and paused as one."""


class ChatClient(LineReceiver):
    """The connection to the server: shows its lines, sends ours, tracks our alias.

    Knows nothing of terminals or pipes: server lines, already made safe, go to
    ``show``; the front end decides where that is. ``interactive`` says a person
    is at a terminal: a password can be typed at the prompt, and the lines that
    mention us are highlighted (see :func:`highlighted`).
    """

    delimiter = b"\n"
    MAX_LENGTH = MAX_SERVER_LINE_BYTES
    # A TCP (or TLS) connection, once connected: it can be aborted, and is a
    # producer the standard input bridge can pause.
    transport: IServerConnection

    def __init__(
        self,
        show: ShowLine,
        clock: IReactorTime,
        alias: str | None = None,
        password: str | None = None,
        server_name: str | None = None,
        interactive: bool = False,
    ) -> None:
        self.show = show
        self.clock = clock
        self.initial_alias = alias
        self.alias: str | None = None
        self.quit_sent = False
        self.closed = False
        self.problem: str | None = None
        # Whether the server's last word was a password prompt: the next line is one.
        self.expects_password = False
        self._password = password
        self._server_name = server_name
        self._interactive = interactive  # a password can be typed at the prompt
        self._alias_prompts = 0
        self._quit_timer: IDelayedCall | None = None
        self._close_waiters: list[Deferred[None]] = []
        self._login_waiters: list[Deferred[str | None]] = []
        self._login_refusal: str | None = None
        self._logged_in = False

    def connectionMade(self) -> None:
        if self.initial_alias is not None:
            self.send_line(self.initial_alias)

    def lineReceived(self, line: bytes) -> None:
        if line.endswith(b"\r"):
            line = line[:-1]
        text = clean_text(decode_line(line))
        self.track_alias(text)
        if self._interactive and self.mentions_us(text):
            # The server ends a live line that mentions us with a bell (unless /bell off).
            self.show(highlighted(text, ring=line.endswith(BEL.encode())))
        else:
            self.show(text)
        self._follow_login(text)

    def lineLengthExceeded(self, line: bytes) -> None:
        self.problem = f"the server sent a line over {MAX_SERVER_LINE_BYTES} bytes"
        self.transport.loseConnection()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.closed = True
        if self._quit_timer is not None and self._quit_timer.active():
            self._quit_timer.cancel()
        if self.problem is None and not self.quit_sent:
            if reason.check(ConnectionDone):
                self.problem = "the server closed the connection"
            else:
                self.problem = describe_loss(reason, self._server_name)
        self._login_ended(self.problem or "the connection closed")
        waiters, self._close_waiters = self._close_waiters, []
        for waiter in waiters:
            waiter.callback(None)

    def track_alias(self, text: str) -> None:
        """Learn our alias from the Welcome line and follow renames of it."""
        welcome = _WELCOME.match(text)
        if welcome:
            self.alias = welcome["alias"]
            return
        renamed = _RENAMED.fullmatch(text)
        if (
            renamed
            and self.alias is not None
            and alias_key(renamed["old"]) == alias_key(self.alias)
        ):
            self.alias = renamed["new"]

    def mentions_us(self, text: str) -> bool:
        """Whether the (clean) server line ``text`` is someone else's chat line or action
        that mentions our alias."""
        spoken = _SPOKEN.fullmatch(text)
        if spoken is None or self.alias is None:
            return False
        sender = spoken["said"] or spoken["acted"]
        return alias_key(sender) != alias_key(self.alias) and mentions(spoken["text"], self.alias)

    def send_line(self, text: str) -> None:
        """Send one line of text (LF-terminated, as the server accepts)."""
        self.send_lines(text.encode("utf-8") + b"\n")

    def when_logged_in(self) -> Deferred[str | None]:
        """Fires once the server has taken ``--alias`` (with None), or has refused it or
        closed (with why, for standard error)."""
        if self._logged_in or self._login_refusal is not None:
            return succeed(self._login_refusal)
        waiter: Deferred[str | None] = Deferred()
        self._login_waiters.append(waiter)
        return waiter

    def _follow_login(self, text: str) -> None:
        """Answer a password prompt for ``--alias`` if we have the password; note a
        refused alias (the prompt again after the greeting's)."""
        asked = _PASSWORD_PROMPT.fullmatch(text)
        if asked:
            mine = self.initial_alias is not None and alias_key(asked["alias"]) == alias_key(
                self.initial_alias
            )
            password, self._password = self._password, None  # sent once, never again
            if mine and password is not None:
                self.send_line(password)
            elif mine and not self._interactive:
                self._login_ended(
                    f"{self.initial_alias} is registered: give its password with "
                    f"--password-file FILE or the {PASSWORD_VARIABLE} environment variable"
                )
            else:
                self.expects_password = True
            return
        if self._logged_in:
            return
        if self.alias is not None:
            self._logged_in = True
            self._login_ended(None)
        elif text.startswith(_ALIAS_PROMPT):
            self._alias_prompts += 1
            if self._alias_prompts > 1:  # after the greeting's: the alias was refused
                self._login_ended(f"the server did not accept the alias {self.initial_alias}")

    def _login_ended(self, refusal: str | None) -> None:
        if self._logged_in and refusal is not None:
            return
        if self._login_refusal is None:
            self._login_refusal = refusal
        waiters, self._login_waiters = self._login_waiters, []
        for waiter in waiters:
            waiter.callback(refusal)

    def send_lines(self, data: bytes) -> None:
        """Send complete lines exactly as given, noting whether one is ``/quit``."""
        self.expects_password = False
        if any(is_quit_command(decode_line(line.rstrip(b"\r"))) for line in data.split(b"\n")):
            self._quit_was_sent()
        self.transport.write(data)

    def quit(self) -> None:
        """Send ``/quit`` unless it has been sent already (or there is nobody to tell)."""
        if not self.quit_sent and not self.closed:
            self.send_line("/quit")

    def exit_status(self) -> int:
        """The exit status this connection ended with."""
        return exit_status(self.quit_sent, self.problem)

    def when_closed(self) -> Deferred[None]:
        """A Deferred that fires once the connection is gone (at once if it is)."""
        if self.closed:
            return succeed(None)
        waiter: Deferred[None] = Deferred(canceller=self._close_waiters.remove)
        self._close_waiters.append(waiter)
        return waiter

    def _quit_was_sent(self) -> None:
        # The server closes at once on /quit; one that does not is not waited for forever.
        if self.quit_sent:
            return
        self.quit_sent = True
        self._quit_timer = self.clock.callLater(QUIT_TIMEOUT_SECONDS, self._quit_timed_out)

    def _quit_timed_out(self) -> None:
        self._quit_timer = None
        self.problem = (
            f"the server did not close the connection within {QUIT_TIMEOUT_SECONDS:g} "
            "seconds of /quit"
        )
        self.transport.abortConnection()


async def connect(
    reactor: IReactorTime,
    options: argparse.Namespace,
    client: ChatClient,
    endpoint: IStreamClientEndpoint | None = None,
) -> None:
    """Connect ``client`` to the server the options name; raises what the endpoint raises.

    HostnameEndpoint resolves names off the reactor thread and tries IPv4 and
    IPv6 addresses alike. With ``--tls`` the connection is wrapped in TLS and
    the server's certificate checked against ``--server-name`` (the host name
    by default), by the system's trusted CAs or the one in ``--ca-file``.
    """
    if endpoint is None:
        endpoint = HostnameEndpoint(
            reactor, options.host, options.port, timeout=CONNECT_TIMEOUT_SECONDS
        )
        if options.tls:
            name = options.server_name or options.host
            endpoint = wrapClientTLS(tls_options(name, options.ca_file), endpoint)
    await connectProtocol(endpoint, client)


def tls_options(host: str, ca_file: str | None) -> IOpenSSLClientConnectionCreator:
    """TLS settings that verify ``host``'s certificate (against ``ca_file`` if given)."""
    if ca_file is None:
        return optionsForClientTLS(host)
    with open(ca_file, "rb") as pem:
        return optionsForClientTLS(host, trustRoot=Certificate.loadPEM(pem.read()))


# Pipe mode.


@implementer(IHalfCloseableProtocol)
class PipeBridge(Protocol):
    """Standard input and output of pipe mode, as a protocol on Twisted's StandardIO.

    Only complete lines are passed on, so the ``/quit`` sent at the end of input
    can never be glued to an unfinished last line. Reading is paused until the
    connection to the server exists.
    """

    # Standard I/O, once connected: a producer and a consumer both (see attach).
    transport: StandardIO

    def __init__(self) -> None:
        self.client: ChatClient | None = None
        self.stdout_closed = False
        self._pending = b""
        self._input_ended = False
        self._closed_waiters: list[Deferred[None]] = []
        self._finished = False

    def connectionMade(self) -> None:
        self.transport.pauseProducing()

    def attach(self, client: ChatClient) -> None:
        """Start passing lines between standard I/O and the connected ``client``.

        Each side is the other's streaming producer, so a slow server pauses the
        reading of standard input and a slow reader of standard output pauses the
        reading from the server: neither buffer grows without bound.
        """
        self.client = client
        self.transport.registerProducer(client.transport, True)
        client.transport.registerProducer(self.transport, True)
        self._forward()
        self.transport.resumeProducing()

    def show(self, text: str) -> None:
        """Write one server line to standard output (without the CR)."""
        self.transport.write(text.encode("utf-8") + b"\n")

    def dataReceived(self, data: bytes) -> None:
        self._pending += data
        self._forward()

    def readConnectionLost(self) -> None:
        self._input_ended = True
        self._forward()

    def writeConnectionLost(self) -> None:
        # Nobody reads what the server says any more: leave.
        self.stdout_closed = True
        if self.client is not None:
            self.client.quit()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self._finished = True
        waiters, self._closed_waiters = self._closed_waiters, []
        for waiter in waiters:
            waiter.callback(None)

    def close(self) -> Deferred[None]:
        """Flush standard output and close; the Deferred fires when that is done."""
        self.transport.loseConnection()
        if self._finished or self.stdout_closed:
            return succeed(None)
        waiter: Deferred[None] = Deferred()
        self._closed_waiters.append(waiter)
        return waiter

    def _forward(self) -> None:
        if self.client is None:
            return
        end = self._pending.rfind(b"\n") + 1
        if self._input_ended and self._pending[end:]:
            self._pending += b"\n"
            end = len(self._pending)
        elif not end and len(self._pending) > MAX_PENDING_INPUT_BYTES:
            end = len(self._pending)
        if end:
            lines, self._pending = self._pending[:end], self._pending[end:]
            self.client.send_lines(lines)
        if self._input_ended:
            self.client.quit()


def _open_standard_io(protocol: Protocol) -> ITransport:
    from twisted.internet.stdio import StandardIO

    return StandardIO(protocol)


async def run_pipe(
    reactor: IReactorTime,
    options: argparse.Namespace,
    *,
    endpoint: IStreamClientEndpoint | None = None,
    open_stdio: Callable[[Protocol], ITransport] = _open_standard_io,
    stderr: IO[str] | None = None,
) -> int:
    """Pipe mode from connecting to the exit status; see the module docstring."""
    stderr = sys.stderr if stderr is None else stderr
    bridge = PipeBridge()
    open_stdio(bridge)
    client = ChatClient(bridge.show, reactor, options.alias, options.password, options.server_name)
    try:
        await connect(reactor, options, client, endpoint)
    except (ConnectError, DNSLookupError) as error:
        print(connect_failure_message(options.host, options.port, error), file=stderr)
        bridge.close()
        return EXIT_CANNOT_CONNECT
    # Input waits until --alias is ours: a piped line must not become its password.
    refusal = await client.when_logged_in() if options.alias is not None else None
    if refusal is None:
        bridge.attach(client)
    elif not client.closed:
        # Not /quit: at a password prompt it would be taken for the password.
        client.problem = refusal
        client.transport.loseConnection()
    await client.when_closed()
    await bridge.close()
    return _finish(client, stderr)


def _finish(client: ChatClient, stderr: IO[str]) -> int:
    if client.problem is not None:
        print(f"{PROGRAM}: {client.problem}", file=stderr)
    return client.exit_status()


# Interactive mode.


def prompt_text(alias: str | None, password: bool = False) -> str:
    """The prompt: our alias once the server has accepted one; says when a password
    is asked for."""
    if password:
        return "password> "
    return f"{alias}> " if alias else "> "


def send_typed(client: ChatClient, typed: str) -> None:
    """Send what was typed at the prompt and show our own chat lines locally.

    A paste can bring several lines at once; each is sent as a line of its own.
    """
    for line in typed.splitlines() or [""]:
        secret = client.expects_password
        client.send_line(line)
        echo = None if secret else local_echo(client.alias, line)
        if echo is not None:
            client.show(echo)


def _chat_key_bindings(client: ChatClient) -> KeyBindings:
    """Enter sends the line and clears the input, without leaving the prompt; a
    password is sent without an echo, and stays out of the history.

    The prompt runs for the whole session: ending it after each line would hand
    the terminal back to the kernel's echoing line discipline in between, and
    anything typed (or pasted) at that moment would be printed raw.
    """
    from prompt_toolkit.key_binding import KeyBindings

    bindings = KeyBindings()

    @bindings.add("enter")
    def _send(event: KeyPressEvent) -> None:
        buffer = event.current_buffer
        typed = buffer.text
        if not client.expects_password:  # a password is never kept
            buffer.append_to_history()
        buffer.reset()
        send_typed(client, typed)
        if client.quit_sent:
            event.app.exit()

    return bindings


async def _chat_at_prompt(session: PromptSession[None], client: ChatClient) -> None:
    """Run the prompt until the user leaves (Ctrl-D, Ctrl-C, /quit) or the server closes."""
    import asyncio

    app = session.app

    def leave_prompt(_: object = None) -> None:
        if app.is_running and app.future is not None and not app.future.done():
            app.exit()

    def leave_if_closed() -> None:
        # Runs once the prompt has started, so a close just before it is not missed.
        if client.closed:
            leave_prompt()

    async def prompt() -> None:
        # Ctrl-D (on an empty line) and Ctrl-C end the prompt with these: leave as with
        # /quit. They are caught inside the asyncio task: a KeyboardInterrupt escaping
        # a task is re-raised by the event loop itself and would kill the program.
        with contextlib.suppress(EOFError, KeyboardInterrupt):
            await session.prompt_async(pre_run=leave_if_closed)

    client.when_closed().addCallback(leave_prompt)
    await Deferred.fromFuture(asyncio.ensure_future(prompt()))


def _raw_while_printing_input() -> Input:
    """The terminal input of the prompt, kept in raw mode while lines are printed.

    patch_stdout prints through run_in_terminal, which switches the terminal to
    cooked mode for the write. A key pressed in that instant would be echoed by
    the kernel into the middle of the screen, and Ctrl-D or Ctrl-C would be taken
    by the kernel's line discipline (as end of file or SIGINT) instead of reaching
    the editor. Nothing is read while printing, so staying raw loses nothing:
    keys wait in the terminal until the prompt is drawn again, and raw mode leaves
    output processing (LF to CRLF) alone.
    """
    from prompt_toolkit.input.vt100 import Vt100Input

    class RawWhilePrinting(Vt100Input):
        def cooked_mode(self) -> contextlib.nullcontext[None]:
            return contextlib.nullcontext()

    return RawWhilePrinting(sys.stdin)


async def run_interactive(reactor: IReactorTime, options: argparse.Namespace) -> int:
    """Interactive mode from connecting to the exit status; needs the asyncio reactor."""
    from prompt_toolkit import PromptSession
    from prompt_toolkit.filters import Condition
    from prompt_toolkit.patch_stdout import patch_stdout

    client = ChatClient(
        print, reactor, options.alias, options.password, options.server_name, interactive=True
    )
    try:
        await connect(reactor, options, client)
    except (ConnectError, DNSLookupError) as error:
        print(connect_failure_message(options.host, options.port, error), file=sys.stderr)
        return EXIT_CANNOT_CONNECT
    # Server lines are printed (by the client's show=print) above the prompt, raw: they
    # are clean, and a line that mentions us carries our own reverse video and bell.
    with patch_stdout(raw=True):
        session: PromptSession[None] = PromptSession(
            lambda: prompt_text(client.alias, client.expects_password),
            is_password=Condition(lambda: client.expects_password),
            key_bindings=_chat_key_bindings(client),
            erase_when_done=True,
            input=_raw_while_printing_input(),
        )
        await _chat_at_prompt(session, client)
        client.quit()
        await client.when_closed()
    return _finish(client, sys.stderr)


# The command line.


def parse_arguments(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parse the command line; bad arguments exit with status 2 and a usage line."""
    parser = argparse.ArgumentParser(
        prog=PROGRAM,
        description=(
            "Chat on a chatd server. On a terminal you get a line editor; with a pipe, "
            "each line of standard input is sent as it is, each server line is printed, "
            "and /quit is sent at the end of input."
        ),
        epilog=(
            "Exit status: 0 after a /quit the server answered by closing; 1 if the "
            "server closed first or misbehaved (a note goes to standard error); 2 if no "
            "connection could be made ('chatd-client: cannot connect to HOST:PORT: "
            "reason') or the arguments are wrong."
            f" The password of a registered --alias is read from --password-file or the "
            f"{PASSWORD_VARIABLE} environment variable."
        ),
    )
    parser.add_argument(
        "--host", default=DEFAULT_HOST, help="server name or address (%(default)s)"
    )
    parser.add_argument("--port", type=_port, default=DEFAULT_PORT, help="TCP port (%(default)s)")
    parser.add_argument("--alias", help="alias to send as the first line after connecting")
    parser.add_argument(
        "--password-file",
        metavar="FILE",
        help=(
            "if the alias is registered, send the first line of FILE when the server asks "
            f"for its password (else the {PASSWORD_VARIABLE} environment variable, if set); "
            "needed with a pipe, where input is only sent once the alias is accepted"
        ),
    )
    parser.add_argument(
        "--tls",
        action="store_true",
        help="connect with TLS (to a --port ssl:... of the server), checking its certificate",
    )
    parser.add_argument(
        "--ca-file",
        metavar="PEM",
        help="trust this certificate (e.g. the server's self-signed one) instead of the system's",
    )
    parser.add_argument(
        "--server-name",
        metavar="NAME",
        help="the name the server's certificate must be for, also sent in the handshake "
        "(SNI); the --host by default",
    )
    options = parser.parse_args(argv)
    if options.ca_file is not None and not options.tls:
        parser.error("--ca-file goes with --tls")
    if options.server_name is not None and not options.tls:
        parser.error("--server-name goes with --tls")
    if options.password_file is not None and options.alias is None:
        parser.error("--password-file goes with --alias")
    options.password = _password(options, parser) if options.alias is not None else None
    return options


def _password(options: argparse.Namespace, parser: argparse.ArgumentParser) -> str | None:
    """The alias's password: the first line of --password-file, else $CHATD_PASSWORD."""
    if options.password_file is None:
        return os.environ.get(PASSWORD_VARIABLE) or None
    try:
        with open(options.password_file, encoding="utf-8") as source:
            line = source.readline(MAX_PENDING_INPUT_BYTES)
    except (OSError, UnicodeDecodeError) as problem:
        parser.error(f"cannot read --password-file: {problem}")
    password = line.rstrip("\r\n")
    if not password:
        parser.error(f"--password-file {options.password_file} starts with an empty line")
    return password


def _port(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        port = 0
    if not 1 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"not a TCP port: {text!r}")
    return port


async def _run(reactor: IReactorTime, options: argparse.Namespace, interactive: bool) -> None:
    if interactive:
        status = await run_interactive(reactor, options)
    else:
        status = await run_pipe(reactor, options)
    if status:
        raise SystemExit(status)


def main(argv: Sequence[str] | None = None) -> NoReturn:
    """The ``chatd-client`` console script."""
    options = parse_arguments(argv)
    interactive = sys.stdin.isatty() and sys.stdout.isatty()
    if interactive:
        # prompt_toolkit runs on asyncio: the reactor must be the asyncio one, and
        # it has to be installed before anything imports twisted.internet.reactor.
        from twisted.internet import asyncioreactor

        asyncioreactor.install()
    react(lambda reactor: ensureDeferred(_run(reactor, options, interactive)))
