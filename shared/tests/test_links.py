from __future__ import annotations

import base64
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from visio_shared.links import (
    ExpiredLink,
    InvalidLink,
    KeyPurpose,
    LinkKeys,
    LinkPurpose,
    check_form_token,
    derive_ring,
    form_token,
    page_url,
    read_any_link,
    read_link,
    sign_link,
)

NOW = datetime(2026, 11, 26, 10, 0, tzinfo=UTC)
KEYS = LinkKeys.parse("k1:" + "a" * 40)


def signed(
    keys: LinkKeys = KEYS, purpose: LinkPurpose = LinkPurpose.MANAGE
) -> tuple[str, uuid.UUID]:
    appointment_id = uuid.uuid4()
    return sign_link(keys, purpose, appointment_id, 3, NOW + timedelta(days=30)), appointment_id


def test_a_link_reads_back_its_purpose_appointment_revision_and_expiry() -> None:
    token, appointment_id = signed()
    claims = read_link(KEYS, token, LinkPurpose.MANAGE, now=NOW)
    assert (claims.purpose, claims.appointment_id, claims.revision) == (
        LinkPurpose.MANAGE,
        appointment_id,
        3,
    )
    assert claims.expires_at == NOW + timedelta(days=30)
    assert len(token) < 80 and token.isascii() and "/" not in token and "+" not in token
    url = page_url("https://rdv.caf.fr/", LinkPurpose.MANAGE, token)
    assert url == f"https://rdv.caf.fr/mon-rendez-vous/{token}"


def test_every_altered_character_is_refused() -> None:
    token, _ = signed()
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    for index, char in enumerate(token):
        other = alphabet[(alphabet.index(char) + 1) % len(alphabet)]
        tampered = token[:index] + other + token[index + 1 :]
        with pytest.raises(InvalidLink):
            read_link(KEYS, tampered, LinkPurpose.MANAGE, now=NOW)
    for garbage in ("", "x", "%00", token + "A", token[:-1], "é" * 10, "A" * 500):
        with pytest.raises(InvalidLink):
            read_link(KEYS, garbage, LinkPurpose.MANAGE, now=NOW)


def test_a_link_has_one_spelling_only() -> None:
    keys = LinkKeys.parse("dev1:" + "a" * 40)  # 47 bytes: the last character has spare bits
    token, _ = signed(keys)
    read_link(keys, token, LinkPurpose.MANAGE, now=NOW)
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    # The last character carries spare bits when the length is not a multiple of 3 bytes:
    # another character decoding to the same bytes must not open the page.
    twins = [
        token[:-1] + other
        for other in alphabet
        if other != token[-1]
        and base64.urlsafe_b64decode(token[:-1] + other + "=" * (-len(token) % 4))
        == base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
    ]
    assert twins, "the token length leaves spare bits: this test needs another length"
    for twin in twins:
        with pytest.raises(InvalidLink):
            read_link(keys, twin, LinkPurpose.MANAGE, now=NOW)


def test_a_link_is_good_for_its_own_purpose_only() -> None:
    token, _ = signed(purpose=LinkPurpose.RECORDING)
    read_link(KEYS, token, LinkPurpose.RECORDING, now=NOW)
    for other in (LinkPurpose.MANAGE, LinkPurpose.CONSENTS):
        with pytest.raises(InvalidLink, match="another page"):
            read_link(KEYS, token, other, now=NOW)


def test_an_expired_link_still_says_which_appointment_it_was_for() -> None:
    token, appointment_id = signed()
    with pytest.raises(ExpiredLink) as expired:
        read_link(KEYS, token, LinkPurpose.MANAGE, now=NOW + timedelta(days=30))
    assert expired.value.claims.appointment_id == appointment_id
    assert read_any_link(KEYS, token).appointment_id == appointment_id


def test_rotation_keeps_old_links_until_their_key_is_dropped() -> None:
    old_token, _ = signed()
    rotated = LinkKeys.parse("k2:" + "b" * 40 + ",k1:" + "a" * 40)
    new_token, _ = signed(rotated)
    assert read_link(rotated, old_token, LinkPurpose.MANAGE, now=NOW).key_id == "k1"
    assert read_link(rotated, new_token, LinkPurpose.MANAGE, now=NOW).key_id == "k2"
    revoked = LinkKeys.parse("k2:" + "b" * 40)
    with pytest.raises(InvalidLink, match="revoked"):
        read_link(revoked, old_token, LinkPurpose.MANAGE, now=NOW)
    read_link(revoked, new_token, LinkPurpose.MANAGE, now=NOW)
    # The same key id with another secret is another key.
    with pytest.raises(InvalidLink):
        read_link(LinkKeys.parse("k1:" + "c" * 40), old_token, LinkPurpose.MANAGE, now=NOW)


def test_form_tokens_are_bound_to_the_link_and_the_action() -> None:
    token, _ = signed()
    other, _ = signed()
    csrf = form_token(KEYS, token, "cancel")
    assert check_form_token(KEYS, token, "cancel", csrf)
    assert not check_form_token(KEYS, token, "resend", csrf)
    assert not check_form_token(KEYS, other, "cancel", csrf)
    assert not check_form_token(KEYS, "forged", "cancel", csrf)
    assert not check_form_token(KEYS, token, "cancel", "")


@pytest.mark.parametrize(
    "setting",
    ["", "k1", "k1:short", "bad id:" + "a" * 40, "k1:" + "a" * 40 + ",k1:" + "b" * 40],
)
def test_unreadable_key_settings_are_refused(setting: str) -> None:
    with pytest.raises(ValueError):
        LinkKeys.parse(setting)


def test_generated_keys_parse() -> None:
    keys = LinkKeys.parse(LinkKeys.generate("k7"))
    assert keys.signing(KeyPurpose.MANAGE)[0] == "k7"
    assert keys.masters == ("k7",)


CONSENT_PURPOSES = frozenset({KeyPurpose.RECORDING, KeyPurpose.CONSENTS})


def test_each_purpose_has_its_own_key() -> None:
    secrets = {purpose: KEYS.secret("k1", purpose) for purpose in KeyPurpose}
    assert len(set(secrets.values())) == len(KeyPurpose)
    assert b"a" * 40 not in secrets.values()  # never the master itself


def test_a_service_given_the_consent_pages_keys_cannot_make_a_cancellation_link() -> None:
    consent = LinkKeys.parse(derive_ring(KEYS, CONSENT_PURPOSES))
    assert consent.masters == () and consent.purposes() == CONSENT_PURPOSES
    # It reads the links notifications signs with the master's derived keys...
    recording, _ = signed(purpose=LinkPurpose.RECORDING)
    read_link(consent, recording, LinkPurpose.RECORDING, now=NOW)
    # ...but cannot read, nor make, a « Mon rendez-vous » link.
    manage, _ = signed(purpose=LinkPurpose.MANAGE)
    with pytest.raises(InvalidLink):
        read_any_link(consent, manage)
    with pytest.raises(LookupError):
        sign_link(consent, LinkPurpose.MANAGE, uuid.uuid4(), 1, NOW)
    # Nor forge one by using its own key on another purpose's body: the MAC differs.
    secret = consent.secret("k1", KeyPurpose.RECORDING)
    assert secret is not None
    forged_ring = LinkKeys.parse(f"k1.manage:{base64.urlsafe_b64encode(secret).decode()}")
    forged = sign_link(forged_ring, LinkPurpose.MANAGE, uuid.uuid4(), 1, NOW + timedelta(days=1))
    with pytest.raises(InvalidLink):
        read_link(KEYS, forged, LinkPurpose.MANAGE, now=NOW)


def test_restricting_a_ring_keeps_only_its_purposes_in_order() -> None:
    rotated = LinkKeys.parse("k2:" + "b" * 40 + ",k1:" + "a" * 40)
    restricted = rotated.restricted_to(CONSENT_PURPOSES)
    assert restricted.key_ids == ("k2", "k1")
    assert restricted.signing(KeyPurpose.CONSENTS)[0] == "k2"
    assert LinkKeys.parse(restricted.setting()) == restricted


def test_rotation_of_one_purposes_key_alone() -> None:
    """Per-purpose keys rotate like the masters: the new first signs, the old still reads,
    dropping it revokes the links it signed — of that purpose only."""
    old = LinkKeys.parse(derive_ring(KEYS, frozenset(KeyPurpose)))
    old_recording, _ = signed(old, LinkPurpose.RECORDING)
    old_manage, _ = signed(old, LinkPurpose.MANAGE)
    new = LinkKeys.parse(LinkKeys.generate("k2"))
    rotated_recording = derive_ring(new, frozenset({KeyPurpose.RECORDING}))
    during = LinkKeys.parse(f"{rotated_recording},{old.setting()}")
    new_recording, _ = signed(during, LinkPurpose.RECORDING)
    assert read_link(during, new_recording, LinkPurpose.RECORDING, now=NOW).key_id == "k2"
    assert read_link(during, old_recording, LinkPurpose.RECORDING, now=NOW).key_id == "k1"
    manage_now, _ = signed(during, LinkPurpose.MANAGE)  # only recording was rotated
    assert read_link(during, manage_now, LinkPurpose.MANAGE, now=NOW).key_id == "k1"
    after = LinkKeys.parse(
        f"{rotated_recording}," + derive_ring(KEYS, frozenset(KeyPurpose) - {KeyPurpose.RECORDING})
    )
    with pytest.raises(InvalidLink, match="revoked"):
        read_link(after, old_recording, LinkPurpose.RECORDING, now=NOW)
    read_link(after, new_recording, LinkPurpose.RECORDING, now=NOW)
    read_link(after, old_manage, LinkPurpose.MANAGE, now=NOW)


@pytest.mark.parametrize(
    "setting",
    [
        "k1.unknown:" + "A" * 43,
        "k1.manage:short",
        "k1.manage:" + "A" * 43 + ",k1:" + "a" * 40,
        "k1.manage:" + "A" * 43 + ",k1.manage:" + "B" * 43,
    ],
)
def test_unreadable_purpose_keys_are_refused(setting: str) -> None:
    with pytest.raises(ValueError):
        LinkKeys.parse(setting)


def test_a_short_code_names_its_appointment_under_the_manage_key() -> None:
    from visio_shared.links import (
        SHORT_CODE_LENGTH,
        short_code,
        short_code_matches,
        short_code_prefix,
    )

    keys = LinkKeys.parse("k1:" + "m" * 40)
    appointment_id = uuid.uuid4()
    code = short_code(keys, appointment_id)
    assert len(code) == SHORT_CODE_LENGTH
    assert short_code_prefix(code) == appointment_id.bytes[:6]
    assert short_code_matches(keys, code, appointment_id)
    other = uuid.UUID(bytes=appointment_id.bytes[:6] + uuid.uuid4().bytes[6:])
    assert not short_code_matches(keys, code, other)  # same prefix, another appointment
    rotated = LinkKeys.parse("k2:" + "n" * 40)
    assert not short_code_matches(rotated, code, appointment_id)  # its key removed: revoked
    assert short_code_prefix(code[:-1] + "*") is None
