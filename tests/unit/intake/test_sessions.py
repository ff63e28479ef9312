"""Session creation (services/intake/sessions.py) against in-memory ports: lockout, references,
idempotent replays, the store or database down."""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta

import pytest

from contracts.http import CreateSessionRequest, SessionSettings
from infra.db.errors import DatabaseError
from infra.safe_fetch import FetchError, FetchFailed, NotAnImage, TooLarge, UrlRefused
from infra.settings import Settings
from services.intake import errors
from services.intake.caller import Caller
from services.intake.client_tokens import hash_client_token
from services.intake.sessions import SessionCreator, client_url
from tests.unit.intake.fakes import FakeFailures, FakeSessions, FakeStore, jpeg

SETTINGS = Settings()
CALLER = Caller(owner="client-1", client_id="client-1")
INLINE = base64.b64encode(jpeg()).decode()


def creator(
    sessions: FakeSessions | None = None,
    store: FakeStore | None = None,
    failures: FakeFailures | None = None,
    fetched: bytes | FetchError = b"",
) -> SessionCreator:
    async def fetch(url: str) -> bytes:
        if isinstance(fetched, FetchError):
            raise fetched
        return fetched

    return SessionCreator(SETTINGS, sessions or FakeSessions(), store or FakeStore(), failures, fetch)


async def test_a_session_is_stored_with_only_the_hash_of_its_client_token() -> None:
    sessions = FakeSessions()
    record, token = await creator(sessions).create(CreateSessionRequest(), CALLER)
    stored = sessions.rows[record.id]
    assert stored.owner == "client-1"
    assert stored.client_token_hash == hash_client_token(token) != token
    assert stored.expires_at > datetime.now(UTC) + timedelta(seconds=SETTINGS.session_ttl_s - 5)
    assert client_url("https://fp.example/", record.id, token).endswith(
        f"/v1/sessions/{record.id}/client#token={token}"
    )


async def test_an_inline_reference_is_stored_under_its_session() -> None:
    sessions, store = FakeSessions(), FakeStore()
    record, _ = await creator(sessions, store).create(CreateSessionRequest(reference=INLINE), CALLER)
    key = f"sessions/{record.id}/reference-input.jpg"
    assert sessions.rows[record.id].reference_key == key
    assert store.objects[key] == (jpeg(), "image/jpeg")


async def test_a_replayed_request_token_finds_the_first_session_and_only_the_new_token_opens_it() -> None:
    sessions, store = FakeSessions(), FakeStore()
    body = CreateSessionRequest(client_request_token="once", reference=INLINE)
    first, first_token = await creator(sessions, store).create(body, CALLER)
    again, token = await creator(sessions, store).create(body, CALLER)
    assert again.id == first.id and len(sessions.rows) == 1
    assert token != first_token and sessions.rows[first.id].client_token_hash == hash_client_token(token)
    assert list(store.objects) == [f"sessions/{first.id}/reference-input.jpg"]  # the replay's is gone


async def test_a_replay_that_does_not_pass_the_token_on_leaves_the_issued_one_working() -> None:
    """The seed's POST /session answers no token: its replay of a clientRequestToken broke the link
    that POST /v1/sessions had given the user (the page showed a bad link, even mid-session)."""
    sessions = FakeSessions()
    body = CreateSessionRequest(client_request_token="once")
    first, token = await creator(sessions).create(body, CALLER)
    again, none = await creator(sessions).create(body, CALLER, reissue=False)
    assert again.id == first.id and none == ""
    assert sessions.rows[first.id].client_token_hash == hash_client_token(token)


async def test_a_locked_out_subject_is_refused_before_anything_is_stored() -> None:
    sessions, store = FakeSessions(), FakeStore()
    failures = FakeFailures(until=datetime.now(UTC) + timedelta(seconds=90))
    body = CreateSessionRequest(settings=SessionSettings(subject_key="alice"), reference=INLINE)
    with pytest.raises(errors.LockedOut) as refused:
        await creator(sessions, store, failures).create(body, CALLER)
    assert refused.value.code == "SUBJECT_LOCKED_OUT"
    assert refused.value.retry_after_s is not None and 85 <= refused.value.retry_after_s <= 90
    assert not refused.value.retryable
    assert sessions.rows == {} and store.objects == {}
    assert failures.asked and all("alice" not in subject for subject in failures.asked[0])  # digests only


async def test_a_session_without_subject_or_device_never_asks_the_lockout() -> None:
    failures = FakeFailures(until=datetime.now(UTC) + timedelta(seconds=90))
    await creator(failures=failures).create(CreateSessionRequest(), CALLER)
    assert failures.asked == []


@pytest.mark.parametrize(
    ("failure", "kind", "code"),
    [
        (UrlRefused("169.254.169.254 is a link-local address"), errors.Refused, "REFERENCE_URL_REFUSED"),
        (FetchFailed("connection refused"), errors.Refused, "REFERENCE_FETCH_FAILED"),
        (NotAnImage("text/html"), errors.Refused, "REFERENCE_NOT_AN_IMAGE"),
        (TooLarge("over 10 bytes"), errors.TooLarge, "IMAGE_TOO_LARGE"),
    ],
)
async def test_a_reference_url_that_cannot_be_used_is_refused_with_its_code(
    failure: FetchError, kind: type[errors.IntakeError], code: str
) -> None:
    sessions = FakeSessions()
    body = CreateSessionRequest(reference="https://169.254.169.254/latest/meta-data")
    with pytest.raises(kind) as refused:
        await creator(sessions, fetched=failure).create(body, CALLER)
    assert refused.value.code == code and sessions.rows == {}


async def test_a_fetched_reference_that_is_an_image_is_stored() -> None:
    store = FakeStore()
    record, _ = await creator(store=store, fetched=jpeg()).create(
        CreateSessionRequest(reference="https://photos.example/alice.jpg"), CALLER
    )
    assert store.objects[f"sessions/{record.id}/reference-input.jpg"][0] == jpeg()


async def test_an_inline_reference_that_is_not_base64_is_invalid_input() -> None:
    with pytest.raises(errors.InvalidInput) as refused:
        await creator().create(CreateSessionRequest(reference="not base64!"), CALLER)
    assert refused.value.code == "INVALID_BASE64"


async def test_the_store_down_is_retryable_and_leaves_no_row() -> None:
    sessions = FakeSessions()
    with pytest.raises(errors.Unavailable) as refused:
        await creator(sessions, FakeStore(down=True)).create(CreateSessionRequest(reference=INLINE), CALLER)
    assert refused.value.code == "STORAGE_UNAVAILABLE" and refused.value.retryable
    assert refused.value.retry_after_s == 5 and sessions.rows == {}


async def test_the_database_down_leaves_no_reference_behind() -> None:
    store = FakeStore()
    with pytest.raises(DatabaseError):
        await creator(FakeSessions(down=True), store).create(CreateSessionRequest(reference=INLINE), CALLER)
    assert store.objects == {}
