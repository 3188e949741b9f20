"""What counts as mentioning an alias (chatd.mentions): one definition for the bell,
the highlight, the login count and /mentions."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from chatd.mentions import mentioned_keys, mentions


def test_a_whole_word_in_any_case_mentions() -> None:
    assert mentions("bob: lunch?", "bob")
    assert mentions("thanks @Bob!", "bob")
    assert mentions("ask BOB.", "Bob")
    assert mentions("hi ann,bob", "bob")


def test_a_longer_word_does_not_mention() -> None:
    assert not mentions("bobby was here", "bob")
    assert not mentions("bob_2 said so", "bob")
    assert not mentions("x.bob is not bob's alias", "x")
    assert not mentions("", "bob")


def test_an_alias_with_dots_and_dashes_is_mentioned_whole() -> None:
    assert mentions("ping j.r-smith please", "j.r-smith")
    assert not mentions("ping j.r-smith please", "j")
    assert mentions("trailing dot: ann.", "ann.")
    assert mentions("trailing dot: ann.", "ann")


def test_mentioned_keys_are_folded_candidates() -> None:
    assert mentioned_keys("Hi Ann, and @BOB-- too") >= {"hi", "ann", "bob", "bob--", "too"}


@given(st.text())
def test_any_text_gives_keys_without_raising(text: str) -> None:
    keys = mentioned_keys(text)
    assert all(key == key.lower() and key for key in keys)
