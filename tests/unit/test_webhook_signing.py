"""Webhook signing (Standard Webhooks) and the receiver's verification helper."""

from __future__ import annotations

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from llmbatch.webhooks import WebhookVerificationError, headers, sign, verify


def test_the_signature_matches_the_standard_webhooks_example() -> None:
    # The example in the Standard Webhooks specification: its libraries verify ours.
    got = sign(
        "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
        "msg_p5jXN8AQM9LWM0D4loKWxJek",
        1614265330,
        b'{"test": 2432232314}',
    )
    assert got == "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="


def body(event_id: str = "evt_1") -> bytes:
    return orjson.dumps({"type": "batch.ingested", "version": 1, "id": event_id, "data": {}})


def test_a_good_delivery_verifies_whatever_the_header_case() -> None:
    h = headers("s3cret", "evt_1", body(), 1000.0)
    assert verify(body(), {k.upper(): v for k, v in h.items()}, "s3cret", now=1010)["id"] == "evt_1"


@pytest.mark.parametrize(
    ("change", "said"),
    [
        (lambda b, h: (b.replace(b"batch", b"queue"), h), "no webhook-signature matches"),
        (lambda b, h: (b, {**h, "webhook-timestamp": "1001"}), "no webhook-signature matches"),
        (lambda b, h: (b, {**h, "webhook-id": "evt_2"}), "no webhook-signature matches"),
        (lambda b, h: (b, {k: v for k, v in h.items() if k != "webhook-signature"}), "missing"),
        (lambda b, h: (b, {**h, "webhook-timestamp": "soon"}), "not a number"),
    ],
)
def test_a_tampered_delivery_is_refused(change: object, said: str) -> None:
    b, h = change(body(), headers("s3cret", "evt_1", body(), 1000.0))  # type: ignore[operator]
    with pytest.raises(WebhookVerificationError, match=said):
        verify(b, h, "s3cret", now=1000)


def test_an_old_delivery_is_refused_as_a_replay() -> None:
    h = headers("s3cret", "evt_1", body(), 1000.0)
    with pytest.raises(WebhookVerificationError, match="too far"):
        verify(body(), h, "s3cret", now=1000 + 301)


def test_another_secret_does_not_verify_and_a_rotated_one_does() -> None:
    h = headers("new", "evt_1", body(), 1000.0)
    with pytest.raises(WebhookVerificationError):
        verify(body(), h, "old", now=1000)
    both = {
        **h,
        "webhook-signature": sign("old", "evt_1", 1000, body()) + " " + h["webhook-signature"],
    }
    assert verify(body(), both, "new", now=1000)["id"] == "evt_1"


def test_a_payload_whose_id_is_not_the_header_is_refused() -> None:
    h = headers("s3cret", "evt_9", body("evt_1"), 1000.0)
    with pytest.raises(WebhookVerificationError, match="id"):
        verify(body("evt_1"), h, "s3cret", now=1000)


@given(st.binary(max_size=200), st.text(min_size=1, max_size=40))
def test_any_body_signed_verifies_only_unchanged(extra: bytes, secret: str) -> None:
    b = body()[:-1] + b',"x":' + orjson.dumps(extra.hex()) + b"}"
    h = headers(secret, "evt_1", b, 5.0)
    assert verify(b, h, secret, now=5)["id"] == "evt_1"
    with pytest.raises(WebhookVerificationError):
        verify(b + b" ", h, secret, now=5)
