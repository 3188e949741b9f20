"""What counts as a line mentioning someone: their alias as a word of it.

One definition for every use (the bell and highlight for those present, the
count a registered user is told of at login, ``/mentions``), so a line that
rings someone's bell is also one they find in their mentions.

A mention is the alias as a whole word, in any case, with or without a leading
``@``: "bob: lunch?", "thanks @Bob!", "ask bob." mention bob; "bobby" and
"bob_2" do not. Aliases may contain ``.`` and ``-`` (see the alias rule), so a
word's trailing dots and dashes count both as part of it and as punctuation
after it: "bob." mentions both bob and an alias "bob." if there is one.
"""

from __future__ import annotations

import re

from chatd.text import alias_key

# Runs of the characters an alias is made of, not preceded by one of them.
_WORD = re.compile(r"(?<![A-Za-z0-9_.-])[A-Za-z0-9][A-Za-z0-9_.-]*")


def mentioned_keys(text: str) -> frozenset[str]:
    """The alias keys (see :func:`chatd.text.alias_key`) ``text`` may mention.

    A superset of those meant: every word that could be an alias. Intersect it
    with the aliases that matter (a room's members, registered accounts); that
    keeps this one regular-expression pass over the line, whatever the room's size.
    """
    keys: set[str] = set()
    for word in _WORD.findall(text):
        key = alias_key(word)
        keys.add(key)
        bare = key.rstrip(".-")
        if bare and bare != key:
            keys.add(bare)
    return frozenset(keys)


def mentions(text: str, alias: str) -> bool:
    """Whether ``text`` mentions ``alias`` (for one alias; rooms use mentioned_keys).

    A mention is an ASCII word, so the alias must be in the lower-cased text: that
    test, at C speed, spares the word scan on most lines (a history replay asks
    this of each of its lines).
    """
    key = alias_key(alias)
    return key in text.lower() and key in mentioned_keys(text)
