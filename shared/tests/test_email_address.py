"""The events' email type: pydantic's `EmailStr` — the same normalised address, the same
error, the same JSON schema — with a plain address taken at a glance, without email-validator,
and any other checked once per process. The fast path may only say what the full check says:
hand-picked addresses, every ASCII character in every place, and hypothesis's near-addresses
compare the two, and a fast path that took capitals in the domain is caught by them."""

from __future__ import annotations

import re
import string
from collections.abc import Callable
from typing import Any

import email_validator
import pytest
from hypothesis import Phase, event, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, EmailStr, ValidationError
from visio_shared import email_address
from visio_shared.email_address import EmailAddress

LONG_LABEL = "d" * 63
ADDRESSES = [
    "jeanne.dupont@example.fr",
    "Jeanne.Dupont@EXAMPLE.FR",
    "  spaced@example.fr  ",
    "Jeanne Dupont <jeanne@example.fr>",
    "élodie@exemple.fr",
    "jeanne@bücher.example",
    "no-at-sign.example.fr",
    "two@@example.fr",
    "jeanne@[192.168.0.1]",
    "line\r\nbreak@example.fr",
    "x" * 300 + "@example.fr",
    "",
    # The fast path's own: what email-validator returns unchanged.
    "o'neil+rdv@sub.domain-1.co.uk",
    "a!#$%&'*+/=?^_`{|}~-z@example.fr",
    "Jeanne@example.fr",
    "x@123.example.fr",
    "info@example.fr",
    "x" * 64 + "@example.fr",
    f"x@{LONG_LABEL}.fr",
    "x" * 64 + "@" + ".".join([LONG_LABEL] * 2 + ["d" * 58]) + ".fr",  # 254 characters
    # Just outside it: refused, or normalised, by the full check.
    "x" * 65 + "@example.fr",
    f"x@{LONG_LABEL}d.fr",
    "x" * 64 + "@" + ".".join([LONG_LABEL] * 2 + ["d" * 59]) + ".fr",  # 255 characters
    "x@EXAMPLE.fr",
    "x@example.Fr",
    "INFO@example.fr",
    "Postmaster@example.fr",
    "x@example.f",
    "x@example.c1",
    "x@example.123",
    "x@ab--cd.fr",
    "x@a--b.fr",
    "x@axn--b.fr",
    "x@xn--bcher-kva.example",
    "x@xn--zz.fr",
    "x@-example.fr",
    "x@example-.fr",
    "x@exa_mple.fr",
    "x@example..fr",
    "x@example.fr.",
    ".x@example.fr",
    "x.@example.fr",
    "x..y@example.fr",
    '"quoted"@example.fr',
    '"quoted local"@example.fr',
    '"Dupont, Jeanne" <jeanne@example.fr>',
    "jeanne@example.fr\n",
    "jeanne@exa mple.fr",
    "jeanne@example.fr>",
    "jeanne@example\uff0efr",
    "\uff4aeanne@example.fr",
    "jeanne@[IPv6:::1]",
    "x@localhost",
    "x@test",
    "x@example.test",
    "x@example.TEST",
    "x@mail.local",
    "x@example.invalid",
    "x@duckduckgogg42xjoc72x3sjasowoarfbgcmvfimaftt6twagswzczad.onion",
    "x@1.168.192.in-addr.arpa",
]


class Ours(BaseModel):
    email: EmailAddress


class Pydantics(BaseModel):
    email: EmailStr


def _outcome(model: type[BaseModel], address: str) -> Any:
    try:
        return model(email=address).model_dump()
    except ValidationError as exc:
        return [(error["type"], error["msg"]) for error in exc.errors()]


def _says_what_emailstr_says(address: str) -> None:
    event("fast path" if email_address._is_plain(address) else "full check")
    assert _outcome(Ours, address) == _outcome(Pydantics, address)


@pytest.mark.parametrize("address", ADDRESSES)
def test_it_says_what_emailstr_says(address: str) -> None:
    assert _outcome(Ours, address) == _outcome(Pydantics, address)
    assert _outcome(Ours, address) == _outcome(Ours, address)  # again: from the cache, or not


def test_every_ascii_character_anywhere_is_judged_as_emailstr_judges_it() -> None:
    places = ["a{}b@example.fr", "{}b@example.fr", "jeanne@ex{}ample.fr", "jeanne@example.f{}r"]
    for place in places:
        for code in range(128):
            address = place.format(chr(code))
            assert _outcome(Ours, address) == _outcome(Pydantics, address), address


# Near-addresses: a well-formed address — dot-atoms of what a local part may hold, labels of
# lower-case letters, digits and hyphens, runs long enough to reach the length limits, and
# words at the edge (empty atoms for dots in odd places, role mailboxes email-validator lowers,
# labels it refuses or decodes) — under a top-level domain it takes, refuses (digits,
# special-use names) or decodes (Punycode); then, now and then, a flaw or two put anywhere: a
# character that may not be there, or only once normalised (a capital, an accent, a full-width
# letter or dot, a combining mark, a space, a quote), a dot, an at-sign, a hyphen pair, a
# special-use name, a long run; bare or in the forms pydantic unwraps (`Name <addr>`, spaces).
_ATEXT = string.ascii_letters + string.digits + "!#$%&'*+/=?^_`{|}~-"
_LDH = string.ascii_lowercase + string.digits + "-"
_LOCAL_WORDS = ["", "info", "INFO", "Info", "postmaster", "PostMaster", "www", "WWW", "nOc"]
_LABEL_WORDS = ["", "ab--cd", "a--b", "xn--bcher-kva", "xn--zz", "xn--p1ai", "-a", "a-"]
_ODD = ' "(),:;<>@[\\]\t\r\n\x00\x7féüßİ\u00a0\u0301\u200b\uff21\uff0e\u212a'
_FLAWS = [*_ODD, *string.ascii_uppercase, *".-@", "--", "..", "xn--", "x" * 64]
_FLAWS += [".test", ".local", ".localhost", ".invalid", ".onion", ".arpa", ".123", "\u00e9"]


def _atoms(alphabet: str, words: list[str]) -> st.SearchStrategy[str]:
    short = st.text(st.sampled_from(alphabet), min_size=1, max_size=10)
    run = st.tuples(st.sampled_from(alphabet), st.integers(min_value=20, max_value=66))
    long = run.map(lambda character_size: character_size[0] * character_size[1])
    return st.one_of(short, short, short, long, st.sampled_from(words))


_GOOD_TLDS = st.sampled_from(["fr", "com", "museum", "paris", "co.uk"])
_TLDS = st.one_of(
    _GOOD_TLDS,
    _GOOD_TLDS,
    _GOOD_TLDS,
    st.sampled_from(["FR", "Fr", "f", "c1", "1a", "123", "xn--p1ai", "xn--zz", "example"]),
    st.sampled_from(["test", "local", "localhost", "invalid", "onion", "arpa", "in-addr.arpa"]),
)
_BARE = st.just("{}")
_WRAPPERS = st.one_of(
    _BARE,
    _BARE,
    _BARE,
    st.sampled_from(
        [" {} ", "{}\n", "{}.", "<{}>", "{}>", "Jeanne Dupont <{}>", '"Dupont, Jeanne" <{}>']
    ),
)


@st.composite
def _near_addresses(draw: Callable[[st.SearchStrategy[Any]], Any]) -> str:
    local = ".".join(draw(st.lists(_atoms(_ATEXT, _LOCAL_WORDS), min_size=1, max_size=3)))
    some = st.lists(_atoms(_LDH, _LABEL_WORDS), min_size=1, max_size=3)
    labels = draw(st.one_of(some, some, some, st.just([])))
    address = f"{local}@{'.'.join([*labels, draw(_TLDS)])}"
    for _ in range(draw(st.sampled_from([0, 0, 0, 0, 1, 2]))):
        at = draw(st.integers(min_value=0, max_value=len(address)))
        address = address[:at] + draw(st.sampled_from(_FLAWS)) + address[at:]
    wrapper: str = draw(_WRAPPERS)
    return wrapper.format(address)


@settings(max_examples=1000, deadline=None)
@given(_near_addresses())
def test_near_addresses_are_judged_as_emailstr_judges_them(address: str) -> None:
    _says_what_emailstr_says(address)


@settings(max_examples=300, deadline=None)
@given(
    local=st.integers(min_value=1, max_value=70),
    labels=st.lists(st.integers(min_value=1, max_value=66), min_size=1, max_size=5),
)
def test_addresses_about_the_length_limits_are_judged_as_emailstr_judges_them(
    local: int, labels: list[int]
) -> None:
    """Each limit email-validator applies, and the fast path's own (64 before the @-sign, which
    email-validator applies only when strict): the address, the domain, each label."""
    _says_what_emailstr_says("x" * local + "@" + ".".join("d" * size for size in labels) + ".fr")


@settings(max_examples=300, deadline=None)
@given(st.text())
def test_any_text_is_judged_as_emailstr_judges_it(address: str) -> None:
    _says_what_emailstr_says(address)


def test_a_fast_path_that_took_capitals_in_the_domain_would_be_caught(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The near-addresses reach the edge of the fast path: widened by one thing email-validator
    changes (it lowers the domain), it no longer says what `EmailStr` says, and they find it."""
    broken = re.compile(email_address._PLAIN.pattern.replace("a-z", "A-Za-z"))
    assert broken.fullmatch("jeanne@Example.FR")
    monkeypatch.setattr(email_address, "_PLAIN", broken)
    check = settings(max_examples=1500, deadline=None, database=None, phases=[Phase.generate])(
        given(_near_addresses())(_says_what_emailstr_says)
    )
    with pytest.raises(AssertionError):
        check()


def test_a_plain_address_is_taken_without_email_validator(monkeypatch: pytest.MonkeyPatch) -> None:
    """The spy only watches: it hands each call on to email-validator, as it was."""
    checked: list[str] = []
    validate = email_validator.validate_email

    def spy(email: str, /, **options: Any) -> Any:
        checked.append(email)
        return validate(email, **options)

    monkeypatch.setattr(email_validator, "validate_email", spy)
    email_address._checked.cache_clear()
    assert Ours(email="jeanne.dupont@example.fr").email == "jeanne.dupont@example.fr"
    assert checked == []
    assert Ours(email="Jeanne.Dupont@Example.FR").email == "Jeanne.Dupont@example.fr"
    assert checked == ["Jeanne.Dupont@Example.FR"]


def test_the_special_use_names_are_read_as_email_validator_reads_them(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    names = [*email_validator.SPECIAL_USE_DOMAIN_NAMES, "example.fr"]
    monkeypatch.setattr(email_validator, "SPECIAL_USE_DOMAIN_NAMES", names)
    for address in ["x@example.fr", "x@mail.example.fr"]:
        assert _outcome(Ours, address) == _outcome(Pydantics, address)
        assert _outcome(Ours, address) != {"email": address}


def test_its_schema_is_emailstrs() -> None:
    assert Ours.model_json_schema() == Pydantics.model_json_schema() | {"title": "Ours"}


def test_an_address_is_checked_once_and_a_refused_one_every_time() -> None:
    email_address._checked.cache_clear()
    for _ in range(3):
        Ours(email="Once@Example.FR")
        Ours(email="plain@example.fr")  # at a glance: not in the cache
        with pytest.raises(ValidationError):
            Ours(email="never.example.fr")
    info = email_address._checked.cache_info()
    assert (info.misses, info.hits, info.currsize) == (4, 2, 1)
