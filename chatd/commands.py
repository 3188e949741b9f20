"""The /command table: one small function per command, shared by every front end.

A command gets the hub, the member who typed it and the rest of the line, and
answers through the hub (operators' commands through :mod:`chatd.moderation`).
Nothing here knows about sockets or line formats.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

from twisted.internet.defer import ensureDeferred
from twisted.internet.task import deferLater
from twisted.logger import Logger

from chatd import moderation
from chatd.accounts import (
    WRONG_PASSWORD_DELAY_SECONDS,
    PasswordRefused,
    RegistrationRefused,
    SSHKeyRefused,
)
from chatd.events import Error, Notice
from chatd.hub import HISTORY_KEPT, Hub
from chatd.interfaces import IFormatSwitch, IMember
from chatd.passwords import PasswordsBusy
from chatd.text import AliasRefused, RoomRefused, clean_text, parse_duration

DEFAULT_HISTORY_COUNT = 20
log = Logger()

# Members with a password command (/register, /password, /oper) not yet
# answered: one at a time each, so that nobody has many passwords hashed at once.
_checking_password: set[IMember] = set()


@dataclass(frozen=True)
class Command:
    """One entry of the table, with what ``/help`` shows for it."""

    usage: str
    summary: str
    run: Callable[[Hub, IMember, str], None]


def run_command(hub: Hub, member: IMember, line: str) -> None:
    """Run the command ``line`` (which starts with one ``/``) for ``member``.

    An unknown command is refused to the member alone, never relayed.
    """
    name, _, args = line[1:].partition(" ")
    command = COMMANDS.get(name.lower())
    if command is None:
        shown = clean_text(name)[:32]
        hub.tell(member, Error(f"Unknown command: /{shown} (type /help for the list)."))
        return
    command.run(hub, member, args.strip())


def _usage(hub: Hub, member: IMember, name: str) -> None:
    hub.tell(member, Error(f"Usage: {COMMANDS[name].usage}"))


def _help(hub: Hub, member: IMember, args: str) -> None:
    width = max(len(c.usage) for c in COMMANDS.values())
    lines = ["Commands:"]
    lines += [f"  {c.usage.ljust(width)}  {c.summary}" for c in COMMANDS.values()]
    lines.append("Any other line is sent to everyone; start it with // to send a literal /.")
    hub.tell(member, Notice("\n".join(lines)))


def _who(hub: Hub, member: IMember, args: str) -> None:
    if args not in ("", "*"):
        _usage(hub, member, "who")
        return
    hub.roster(member, everyone=args == "*")


def _join(hub: Hub, member: IMember, args: str) -> None:
    if not args or len(args.split()) != 1:
        _usage(hub, member, "join")
        return
    try:
        hub.move(member, args)
    except RoomRefused as refusal:
        hub.tell(member, Error(str(refusal)))


def _rooms(hub: Hub, member: IMember, args: str) -> None:
    hub.list_rooms(member)


def _topic(hub: Hub, member: IMember, args: str) -> None:
    if not args:
        hub.show_topic(member)
    else:
        hub.set_topic(member, None if args == "-" else args)


def _msg(hub: Hub, member: IMember, args: str) -> None:
    parts = args.split(None, 1)
    if len(parts) < 2:
        _usage(hub, member, "msg")
        return
    hub.whisper(member, parts[0], parts[1])


def _me(hub: Hub, member: IMember, args: str) -> None:
    if not clean_text(args):
        _usage(hub, member, "me")
        return
    hub.act(member, args)


def _nick(hub: Hub, member: IMember, args: str) -> None:
    if not args or len(args.split()) != 1:
        _usage(hub, member, "nick")
        return
    try:
        hub.rename(member, args)
    except AliasRefused as refusal:
        hub.tell(member, Error(str(refusal)))


def _single_alias(hub: Hub, member: IMember, args: str, name: str) -> str | None:
    if not args or len(args.split()) != 1:
        _usage(hub, member, name)
        return None
    return args


def _whois(hub: Hub, member: IMember, args: str) -> None:
    if (alias := _single_alias(hub, member, args, "whois")) is not None:
        hub.whois(member, alias)


def _away(hub: Hub, member: IMember, args: str) -> None:
    hub.set_away(member, args or None)


def _mentions(hub: Hub, member: IMember, args: str) -> None:
    if args.lower() not in ("", "clear"):
        _usage(hub, member, "mentions")
        return
    hub.offline.show_mentions(member, clear=args.lower() == "clear")


def _ignore(hub: Hub, member: IMember, args: str) -> None:
    if (alias := _single_alias(hub, member, args, "ignore")) is not None:
        hub.ignore(member, alias)
        _save_ignores(hub, member)


def _unignore(hub: Hub, member: IMember, args: str) -> None:
    if (alias := _single_alias(hub, member, args, "unignore")) is not None:
        hub.unignore(member, alias)
        _save_ignores(hub, member)


def _save_ignores(hub: Hub, member: IMember) -> None:
    if hub.accounts is not None and hub.is_registered(member):
        alias = member.alias
        assert alias is not None
        _in_background(hub, member, hub.accounts.save_ignores(alias, hub.ignored(member)))


def _in_background(hub: Hub, member: IMember, work: Coroutine[Any, Any, None]) -> None:
    """Run a command that waits (for hashing or the store); report a failure to its user."""

    def failed(failure: Any) -> None:
        log.failure("a command of {alias} failed", failure, alias=member.alias)
        hub.tell(member, Error("That failed on the server; try again later."))

    ensureDeferred(work).addErrback(failed)


def _one_password_check(
    hub: Hub, member: IMember, start: Callable[[], Coroutine[Any, Any, None]]
) -> None:
    """Run the password command ``start()`` unless one of ``member`` is still running."""
    if member in _checking_password:
        hub.tell(member, Error("Your last password command is still being checked; wait."))
        return
    _checking_password.add(member)

    async def checking() -> None:
        try:
            await start()
        except PasswordsBusy as busy:
            hub.tell(member, Error(str(busy)))
        finally:
            _checking_password.discard(member)

    _in_background(hub, member, checking())


def _accounts_or_error(hub: Hub, member: IMember) -> Any:
    if hub.accounts is None:
        hub.tell(member, Error("Registration is not available on this server."))
    return hub.accounts


def _register(hub: Hub, member: IMember, args: str) -> None:
    if len(args.split()) != 1:
        _usage(hub, member, "register")
    elif (accounts := _accounts_or_error(hub, member)) is not None:
        _one_password_check(hub, member, lambda: _register_alias(hub, accounts, member, args))


async def _register_alias(hub: Hub, accounts: Any, member: IMember, password: str) -> None:
    alias = member.alias
    assert alias is not None
    try:
        registered = await accounts.register(
            alias, password, hub.ignored(member), host=member.host
        )
    except (PasswordRefused, RegistrationRefused) as refusal:
        hub.tell(member, Error(str(refusal)))
        return
    if not registered:
        hub.tell(member, Error(f"{alias} is registered already."))
        return
    hub.mark_registered(member, alias)
    hub.tell(member, Notice(f"Registered {alias}: from now on it takes this password to use it."))


def _password(hub: Hub, member: IMember, args: str) -> None:
    if len(args.split()) != 2:
        _usage(hub, member, "password")
    elif (accounts := _accounts_or_error(hub, member)) is not None:
        if not hub.is_registered(member):
            hub.tell(member, Error("Your alias is not registered (see /register)."))
            return
        old, new = args.split()
        _one_password_check(hub, member, lambda: _change_password(hub, accounts, member, old, new))


async def _change_password(hub: Hub, accounts: Any, member: IMember, old: str, new: str) -> None:
    try:
        changed = await accounts.change_password(member.alias, old, new, host=member.host)
    except PasswordRefused as refusal:
        hub.tell(member, Error(str(refusal)))
        return
    if changed:
        hub.tell(member, Notice("Password changed."))
    else:
        await deferLater(hub.clock, WRONG_PASSWORD_DELAY_SECONDS)
        hub.tell(member, Error("Wrong password."))


def _sshkey(hub: Hub, member: IMember, args: str) -> None:
    action, _, rest = args.strip().partition(" ")
    if action not in ("add", "list", "remove") or (action != "list") != bool(rest.strip()):
        _usage(hub, member, "sshkey")
    elif (accounts := _accounts_or_error(hub, member)) is not None:
        if not hub.is_registered(member):
            hub.tell(member, Error("Your alias is not registered (see /register)."))
            return
        _in_background(hub, member, _change_ssh_keys(hub, accounts, member, action, rest.strip()))


async def _change_ssh_keys(
    hub: Hub, accounts: Any, member: IMember, action: str, argument: str
) -> None:
    alias = member.alias
    if action == "add":
        try:
            fingerprint, added = await accounts.add_ssh_key(alias, argument)
        except SSHKeyRefused as refusal:
            hub.tell(member, Error(str(refusal)))
            return
        state = "now logs you in" if added else "was bound already; it logs you in"
        hub.tell(member, Notice(f"SSH key {fingerprint} {state} as {alias}, no password asked."))
    elif action == "remove":
        if await accounts.remove_ssh_key(alias, argument):
            hub.tell(member, Notice(f"SSH key {argument} no longer logs you in."))
        else:
            hub.tell(member, Error(f"No SSH key {argument} is bound to {alias}."))
    else:
        bound = await accounts.ssh_keys(alias)
        lines = [f"{fingerprint} {line.split()[0]}" for fingerprint, line in bound]
        hub.tell(member, Notice("\n".join([f"SSH keys of {alias}: {len(lines)}", *lines])))


def _oper(hub: Hub, member: IMember, args: str) -> None:
    if len(args.split()) != 2:
        _usage(hub, member, "oper")
    elif hub.accounts is None:
        hub.tell(member, Error("No operators are configured on this server."))
    else:
        name, password = args.split()
        _one_password_check(hub, member, lambda: _become_operator(hub, member, name, password))


async def _become_operator(hub: Hub, member: IMember, name: str, password: str) -> None:
    assert hub.accounts is not None
    if await hub.accounts.check_operator(name, password, host=member.host):
        if hub.is_online(member):
            moderation.make_operator(hub, member, name)
        return
    log.warn("failed /oper as {name} by {alias}", name=clean_text(name), alias=member.alias)
    await deferLater(hub.clock, WRONG_PASSWORD_DELAY_SECONDS)
    hub.tell(member, Error("Wrong operator name or password."))


def _kick(hub: Hub, member: IMember, args: str) -> None:
    parts = args.split(None, 1)
    if not parts:
        _usage(hub, member, "kick")
        return
    moderation.kick(hub, member, parts[0], parts[1] if len(parts) > 1 else "")


def _mute(hub: Hub, member: IMember, args: str) -> None:
    parts = args.split()
    if not 1 <= len(parts) <= 2:
        _usage(hub, member, "mute")
        return
    try:
        seconds = parse_duration(parts[1]) if len(parts) == 2 else None
    except ValueError as problem:
        hub.tell(member, Error(str(problem)))
        return
    moderation.mute(hub, member, parts[0], seconds)


def _unmute(hub: Hub, member: IMember, args: str) -> None:
    if (alias := _single_alias(hub, member, args, "unmute")) is not None:
        moderation.unmute(hub, member, alias)


def _history(hub: Hub, member: IMember, args: str) -> None:
    try:
        count = int(args) if args else DEFAULT_HISTORY_COUNT
    except ValueError:
        count = 0
    if count <= 0:
        _usage(hub, member, "history")
        return
    hub.show_history(member, count)


def _replay(hub: Hub, member: IMember, args: str) -> None:
    if args.lower() not in ("on", "off"):
        _usage(hub, member, "replay")
        return
    hub.set_replay(member, args.lower() == "on")


def _format(hub: Hub, member: IMember, args: str) -> None:
    switch = IFormatSwitch(member, None)
    if switch is None:  # a member that is not a session (a test's stand-in)
        hub.tell(member, Error("This connection has one format."))
    else:
        switch.switch_format(args)


def _bell(hub: Hub, member: IMember, args: str) -> None:
    if args.lower() not in ("", "on", "off"):
        _usage(hub, member, "bell")
        return
    hub.set_bell(member, None if not args else args.lower() == "on")


def _ban(hub: Hub, member: IMember, args: str) -> None:
    parts = args.split(None, 2)
    if not parts:
        _usage(hub, member, "ban")
        return
    seconds = None
    reason_words = parts[1:]
    if reason_words:
        try:
            seconds = parse_duration(reason_words[0])
            reason_words = parts[2:]
        except ValueError:
            pass  # no duration given: it is all reason
    moderation.ban(hub, member, parts[0], seconds, " ".join(reason_words))


def _unban(hub: Hub, member: IMember, args: str) -> None:
    if len(args.split()) != 1:
        _usage(hub, member, "unban")
    else:
        moderation.unban(hub, member, args)


def _bans(hub: Hub, member: IMember, args: str) -> None:
    moderation.list_bans(hub, member)


def _motd(hub: Hub, member: IMember, args: str) -> None:
    if not args:
        hub.show_motd(member)
    else:
        moderation.set_motd(hub, member, None if args == "-" else args)


def _quit(hub: Hub, member: IMember, args: str) -> None:
    hub.tell(member, Notice("Goodbye."))
    hub.quit(member, args)
    member.disconnect("quit")


COMMANDS: dict[str, Command] = {
    "help": Command("/help", "show this list", _help),
    "who": Command("/who [*]", "list who is in this room (* for everyone online)", _who),
    "join": Command("/join #ROOM", "move to ROOM, opening it if need be", _join),
    "rooms": Command("/rooms", "list the rooms in use", _rooms),
    "topic": Command("/topic [TEXT]", "show or set this room's topic; '/topic -' clears", _topic),
    "msg": Command(
        "/msg ALIAS TEXT", "send TEXT to ALIAS only (kept for a registered ALIAS offline)", _msg
    ),
    "me": Command("/me ACTION", "show '* you ACTION' to everyone", _me),
    "nick": Command("/nick NEW", "change your alias to NEW", _nick),
    "history": Command(
        "/history [N]", f"show the last N lines of this room (up to {HISTORY_KEPT})", _history
    ),
    "replay": Command("/replay on|off", "show recent history on entering a room, or not", _replay),
    "format": Command(
        "/format [line|json]",
        "show or switch this connection's format (json: bot mode, see docs/bots.md)",
        _format,
    ),
    "bell": Command(
        "/bell [on|off]", "ring your terminal for lines that mention you, or not", _bell
    ),
    "register": Command(
        "/register PASSWORD", "make your alias yours: it will take PASSWORD to use", _register
    ),
    "password": Command("/password OLD NEW", "change the password of your alias", _password),
    "sshkey": Command(
        "/sshkey add KEY | list | remove FINGERPRINT",
        "bind an SSH public key to your registered alias, to log in by key",
        _sshkey,
    ),
    "oper": Command("/oper NAME PASSWORD", "become an operator", _oper),
    "whois": Command("/whois ALIAS", "where ALIAS is, for how long, idle time, away", _whois),
    "away": Command("/away [TEXT]", "mark yourself away with TEXT, or back without", _away),
    "mentions": Command(
        "/mentions [clear]",
        "(registered) lines that named you while away; 'clear' forgets them",
        _mentions,
    ),
    "ignore": Command("/ignore ALIAS", "stop seeing what ALIAS says", _ignore),
    "unignore": Command("/unignore ALIAS", "see what ALIAS says again", _unignore),
    "kick": Command("/kick ALIAS [REASON]", "(operators) disconnect ALIAS", _kick),
    "mute": Command(
        "/mute ALIAS [DURATION]", "(operators) silence ALIAS, e.g. for 10m, 2h, 1d", _mute
    ),
    "unmute": Command("/unmute ALIAS", "(operators) let ALIAS be heard again", _unmute),
    "ban": Command(
        "/ban ALIAS|IP|CIDR [DURATION] [REASON]", "(operators) ban, for good or a while", _ban
    ),
    "unban": Command("/unban ALIAS|IP|CIDR", "(operators) lift a ban", _unban),
    "bans": Command("/bans", "(operators) list the bans", _bans),
    "motd": Command("/motd [TEXT]", "show the message of the day; operators set it", _motd),
    "quit": Command("/quit [REASON]", "leave, telling everyone REASON", _quit),
}
