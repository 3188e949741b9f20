"""What operators do: ban, mute, kick, set the message of the day.

Built on the hub's public methods: the hub keeps the bans and mutes it enforces
on every line (:attr:`chatd.hub.Hub.bans`, :attr:`chatd.hub.Hub.mutes`), this
module checks an operator's rights, changes them, answers the operator and tells
the hub's listener (the cluster's bus), once the change has happened. What
operators on other nodes did comes in through the ``*_heard`` functions.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from twisted.internet.defer import succeed

from chatd.bans import BanRefused, ban_target
from chatd.events import Error, Notice
from chatd.model import Ban
from chatd.text import alias_key, clean_text, duration, utc_stamp

if TYPE_CHECKING:
    from chatd.hub import Hub
    from chatd.interfaces import IMember

MOTD_SETTING = "motd"
FOREVER = float("inf")


# Operators.


def make_operator(hub: Hub, member: IMember, name: str) -> None:
    """Give ``member`` operator rights, as ``name`` (the front end checked the password)."""
    presence = hub.presence_of(member)
    presence.operator = name
    hub.log.info("{alias} is now operator {name}", alias=presence.alias, name=name)
    hub.tell(member, Notice(f"You are now an operator ({name})."))


def operator_name(hub: Hub, member: IMember) -> str | None:
    """The operator name ``member`` logged in as, or None if it is no operator."""
    return hub.presence_of(member).operator


def _require_operator(hub: Hub, member: IMember) -> str | None:
    name = operator_name(hub, member)
    if name is None:
        hub.tell(member, Error("Not permitted: operators only."))
    return name


# Bans.


def ban(hub: Hub, operator: IMember, target: str, seconds: float | None, reason: str) -> None:
    """Ban an alias, IP or CIDR block: kept in the store, then enforced on who is online."""
    if (name := _require_operator(hub, operator)) is None:
        return
    try:
        mask, kind = ban_target(target)
    except BanRefused as refusal:
        hub.tell(operator, Error(str(refusal)))
        return
    if kind == "alias" and mask == alias_key(hub.presence_of(operator).alias):
        hub.tell(operator, Error("You cannot ban yourself."))
        return
    now = hub.clock.seconds()
    reason = clean_text(reason) or "no reason given"
    new = Ban(mask, kind, reason, name, now, None if seconds is None else now + seconds)
    saved = hub.store.add_ban(new) if hub.store is not None else succeed(None)
    saved.addCallbacks(
        lambda _: _enforce_ban(hub, operator, name, new),
        _ban_not_saved,
        errbackArgs=(hub, operator, mask),
    )


def _ban_not_saved(failure: Any, hub: Hub, operator: IMember, mask: str) -> None:
    hub.log_store_failure(failure, "saving the ban on {mask}", mask=mask)
    if hub.is_online(operator):
        hub.tell(operator, Error(f"The ban on {mask} could not be saved; try again later."))


def _enforce_ban(hub: Hub, operator: IMember, name: str, new: Ban) -> None:
    hub.bans.add(new)
    until = "for good" if new.expires_at is None else f"until {utc_stamp(new.expires_at)}"
    by = operator.alias or ""
    hub.log.info(
        "operator {name} ({alias}) banned {kind} {mask} {until}: {reason}",
        name=name,
        alias=by,
        kind=new.kind,
        mask=new.mask,
        until=until,
        reason=new.reason,
    )
    hub.tell(operator, Notice(f"Banned {new.kind} {new.mask} {until}."))
    hub.enforce_ban(new, f"Banned by {by}", f"operator {name}", spare=operator)
    hub.listener.banned(new, by)


def ban_heard(hub: Hub, new: Ban, by: str, node: str) -> None:
    """An operator (online as ``by``) on ``node`` banned an alias or address: enforce it here."""
    hub.bans.add(new)
    hub.enforce_ban(new, f"Banned by {by}", f"operator {new.set_by} on node {node}")


def unban(hub: Hub, operator: IMember, target: str) -> None:
    """Lift a ban (given as it was set, or as /bans shows it)."""
    if (name := _require_operator(hub, operator)) is None:
        return
    try:
        mask, _ = ban_target(target)
    except BanRefused as refusal:
        hub.tell(operator, Error(str(refusal)))
        return
    if not hub.bans.remove(mask):
        hub.tell(operator, Error(f"No ban on {mask}."))
        return
    hub.log.info(
        "operator {name} ({alias}) lifted the ban on {mask}",
        name=name,
        alias=operator.alias,
        mask=mask,
    )
    if hub.store is not None:
        hub.store.remove_ban(mask).addErrback(
            hub.log_store_failure, "removing the ban on {mask}", mask=mask
        )
    hub.tell(operator, Notice(f"Lifted the ban on {mask}."))
    hub.listener.unbanned(mask)


def unban_heard(hub: Hub, mask: str) -> None:
    """An operator on another node lifted the ban on ``mask``."""
    hub.bans.remove(mask)


def list_bans(hub: Hub, operator: IMember) -> None:
    """Tell an operator the bans in force."""
    if _require_operator(hub, operator) is None:
        return
    hub.banned()  # drops the expired ones
    lines = [f"Bans ({len(list(hub.bans))}):"]
    for each in hub.bans:
        until = "for good" if each.expires_at is None else f"until {utc_stamp(each.expires_at)}"
        lines.append(f"  {each.mask} ({each.kind}) by {each.set_by} {until}: {each.reason}")
    hub.tell(operator, Notice("\n".join(lines)))


# The message of the day.


def set_motd(hub: Hub, operator: IMember, text: str | None) -> None:
    """Set the message of the day (None goes back to --motd FILE's, if any)."""
    if (name := _require_operator(hub, operator)) is None:
        return
    text = clean_text(text) if text is not None else None
    hub.motd_set_text = text or None
    hub.log.info(
        "operator {name} ({alias}) set the MOTD to {text!r}",
        name=name,
        alias=operator.alias,
        text=hub.motd_set_text,
    )
    if hub.store is not None:
        hub.store.set_setting(MOTD_SETTING, hub.motd_set_text).addErrback(
            hub.log_store_failure, "saving the MOTD"
        )
    hub.show_motd(operator)
    hub.listener.motd_set(hub.motd_set_text)


def motd_heard(hub: Hub, text: str | None) -> None:
    """An operator on another node changed the message of the day."""
    hub.motd_set_text = text or None


# Kicks.


def kick(hub: Hub, operator: IMember, alias: str, reason: str) -> None:
    """Disconnect ``alias`` (here or elsewhere), telling them and their room who did it and why."""
    if (name := _require_operator(hub, operator)) is None:
        return
    by = hub.presence_of(operator).alias
    target = hub.member_named(alias)
    if target is None:
        _kick_elsewhere(hub, operator, name, by, alias, reason)
        return
    reason = clean_text(reason) or "no reason given"
    hub.log.info(
        "operator {name} ({alias}) kicked {target}: {reason}",
        name=name,
        alias=by,
        target=target.alias,
        reason=reason,
    )
    _kick_out(hub, target, by, reason, f"kicked by operator {name}")
    if target is not operator:
        hub.tell(operator, Notice(f"Kicked {target.alias}."))


def _kick_elsewhere(
    hub: Hub, operator: IMember, name: str, by: str, alias: str, reason: str
) -> None:
    remote = hub.directory.find(alias)
    if remote is None:
        hub.tell(operator, Error(f"No such user: {clean_text(alias)}"))
        return
    reason = clean_text(reason) or "no reason given"
    if not hub.directory.kick(remote.alias, by, name, reason):
        hub.tell(operator, Error(f"{remote.alias}'s server cannot be reached now."))
        return
    hub.log.info(
        "operator {name} ({alias}) kicked {target} elsewhere: {reason}",
        name=name,
        alias=by,
        target=remote.alias,
        reason=reason,
    )
    hub.tell(operator, Notice(f"Kicked {remote.alias}."))


def kick_heard(hub: Hub, alias: str, by: str, operator: str, node: str, reason: str) -> None:
    """Operator ``operator`` (online as ``by``) on ``node`` kicked ``alias``, one of ours."""
    target = hub.member_named(alias)
    if target is None:
        return
    hub.log.info(
        "operator {name} ({by}) on node {node} kicked {target}: {reason}",
        name=operator,
        by=by,
        node=node,
        target=target.alias,
        reason=reason,
    )
    _kick_out(hub, target, by, reason, f"kicked by operator {operator} on node {node}")


def _kick_out(hub: Hub, target: IMember, by: str, reason: str, logged: str) -> None:
    """Tell ``target`` who kicked them and why, announce it to their room, let them go."""
    hub.tell(target, Notice(f"You were kicked by {by}: {reason}"))
    hub.leave(target, f"Kicked by {by}: {reason}")
    target.disconnect(logged)


# Mutes.


def mute(hub: Hub, operator: IMember, alias: str, seconds: float | None) -> None:
    """Stop anyone seeing what ``alias`` (here or elsewhere) says, for ``seconds`` or until
    unmuted."""
    if (name := _require_operator(hub, operator)) is None:
        return
    target = hub.member_named(alias)
    remote = hub.directory.find(alias) if target is None else None
    if target is not None:
        muted = hub.presence_of(target).alias
    elif remote is not None:
        muted = remote.alias
    else:
        hub.tell(operator, Error(f"No such user: {clean_text(alias)}"))
        return
    until = FOREVER if seconds is None else hub.clock.seconds() + seconds
    hub.mutes.add(alias_key(muted), until, target.host if target is not None else None)
    how_long = "until unmuted" if seconds is None else f"for {duration(seconds)}"
    hub.log.info(
        "operator {name} ({alias}) muted {target} {how_long}",
        name=name,
        alias=operator.alias,
        target=muted,
        how_long=how_long,
    )
    if target is not None:
        hub.tell(target, Notice(f"You have been muted {how_long}: nobody sees your lines."))
    hub.tell(operator, Notice(f"Muted {muted} {how_long}."))
    hub.listener.muted(alias, None if until == FOREVER else until)


def mute_heard(hub: Hub, alias: str, until: float | None) -> None:
    """An operator on another node muted ``alias`` (maybe one of ours) until ``until``."""
    hub.mutes.add(alias_key(alias), FOREVER if until is None else until)
    if (target := hub.member_named(alias)) is not None:
        how_long = "until unmuted" if until is None else f"until {utc_stamp(until)}"
        hub.tell(target, Notice(f"You have been muted {how_long}: nobody sees your lines."))


def unmute(hub: Hub, operator: IMember, alias: str) -> None:
    """Let ``alias`` be heard again."""
    if (name := _require_operator(hub, operator)) is None:
        return
    if not hub.mutes.lift(alias_key(alias)):
        hub.tell(operator, Error(f"{clean_text(alias)} is not muted."))
        return
    hub.log.info(
        "operator {name} ({alias}) unmuted {target}",
        name=name,
        alias=operator.alias,
        target=alias,
    )
    if (target := hub.member_named(alias)) is not None:
        hub.tell(target, Notice("You are no longer muted."))
    hub.tell(operator, Notice(f"Unmuted {clean_text(alias)}."))
    hub.listener.unmuted(clean_text(alias))


def unmute_heard(hub: Hub, alias: str) -> None:
    """An operator on another node unmuted ``alias``."""
    if hub.mutes.lift(alias_key(alias)) and (target := hub.member_named(alias)) is not None:
        hub.tell(target, Notice("You are no longer muted."))
