"""API keys for the gateway: issued, found, refused and revoked here, by the command, admin and /v1/.

A key reads `csk_<prefix>_<secret>`. The prefix (10 characters) is stored as it is and finds the row;
the secret (40 characters, 240 bits) is stored only as its SHA-256 and compared in constant time. The
whole key is known once, when it is issued: whoever loses it gets a new one.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import string
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.db.models import Q
from django.utils import timezone

from access.models import ApiKey

KEY_START = "csk_"
PREFIX_LENGTH = 10
SECRET_LENGTH = 40
_PREFIX_ALPHABET = string.ascii_lowercase + string.digits
_SECRET_ALPHABET = string.ascii_letters + string.digits
# last_used_at is written at most this often per key: a busy key must not cost a write per request.
LAST_USED_RESOLUTION = timedelta(minutes=1)


class ApiKeyError(Exception):
    """A key that cannot be issued or changed, with a sentence for the operator."""


class ApiKeyRefused(Exception):
    """A request's key that opens nothing; `message` says why, in the words a caller may be shown."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def _secret_hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


@dataclass(frozen=True)
class IssuedKey:
    """A key just issued: the row, and the key itself, which nothing keeps after this."""

    api_key: ApiKey
    key: str


def api_key_create(
    *,
    name: str,
    owner: str = "",
    note: str = "",
    expires_at: datetime | None = None,
    requests_per_minute: int | None = 60,
    tokens_per_minute: int | None = None,
    monthly_tokens: int | None = None,
    allowed_models: list[str] | None = None,
    keeps_conversations: bool = False,
    fetches_image_urls: bool = False,
    created_by: Any = None,
) -> IssuedKey:
    """Issue a key; the returned `key` is the only copy of its secret."""
    if not name.strip():
        raise ApiKeyError("Give the key a name: what will call with it.")
    if expires_at is not None and expires_at <= timezone.now():
        raise ApiKeyError(f"The expiry {expires_at.isoformat()} is already past.")
    # 0 is a valid PositiveIntegerField but no useful limit: it would refuse every request, or, read as
    # false somewhere, lift the limit. None is how "no limit" is said.
    for field, value in (
        ("requests_per_minute", requests_per_minute),
        ("tokens_per_minute", tokens_per_minute),
        ("monthly_tokens", monthly_tokens),
    ):
        if value is not None and value < 1:
            raise ApiKeyError(f"{field} must be 1 or more, or None for no limit (not {value}).")
    api_key = ApiKey(
        name=name.strip(),
        owner=owner.strip(),
        note=note.strip(),
        expires_at=expires_at,
        requests_per_minute=requests_per_minute,
        tokens_per_minute=tokens_per_minute,
        monthly_tokens=monthly_tokens,
        allowed_models=allowed_models if allowed_models is not None else [settings.GATEWAY_ASSISTANT_MODEL],
        keeps_conversations=keeps_conversations,
        fetches_image_urls=fetches_image_urls,
        created_by=created_by,
    )
    try:
        api_key.full_clean(exclude=["prefix", "secret_sha256"])
    except ValidationError as error:
        raise ApiKeyError(
            " ".join(f"{field}: {' '.join(messages)}" for field, messages in error.message_dict.items())
        ) from None
    return secret_assign(api_key)


def secret_assign(api_key: ApiKey) -> IssuedKey:
    """Give an unsaved key its prefix and secret and save it (admin's add form ends here too)."""
    for _attempt in range(5):
        prefix = "".join(secrets.choice(_PREFIX_ALPHABET) for _ in range(PREFIX_LENGTH))
        secret = "".join(secrets.choice(_SECRET_ALPHABET) for _ in range(SECRET_LENGTH))
        api_key.prefix, api_key.secret_sha256 = prefix, _secret_hash(secret)
        try:
            with transaction.atomic():
                api_key.save()
        except IntegrityError:  # the prefix is taken: 36^10 makes this a once-in-forever event
            if not ApiKey.objects.filter(prefix=prefix).exists():
                raise  # another constraint failed: a new prefix would fail the same way
            continue
        return IssuedKey(api_key=api_key, key=f"{KEY_START}{prefix}_{secret}")
    raise ApiKeyError("Could not find a free key prefix; try again.")


def _parts(token: str) -> tuple[str, str] | None:
    if not token.startswith(KEY_START):
        return None
    prefix, separator, secret = token[len(KEY_START) :].partition("_")
    if not separator or len(prefix) != PREFIX_LENGTH or len(secret) != SECRET_LENGTH:
        return None
    return prefix, secret


def refusal_reason(api_key: ApiKey | None, secret: str, *, now: datetime) -> str | None:
    """Why the key with this secret opens nothing, or None when it is good."""
    # Hash and compare even when there is no row, so that an unknown prefix takes as long as a wrong secret.
    expected = api_key.secret_sha256 if api_key is not None else "0" * 64
    matches = hmac.compare_digest(expected, _secret_hash(secret))
    if api_key is None or not matches:
        return "Incorrect API key provided."
    if api_key.revoked_at is not None:
        return "This API key has been revoked."
    if api_key.expires_at is not None and api_key.expires_at <= now:
        return f"This API key expired on {api_key.expires_at.isoformat()}."
    return None


async def api_key_authenticate(*, authorization: str) -> ApiKey:
    """The key an `Authorization: Bearer …` header carries, or ApiKeyRefused saying why not."""
    scheme, _, token = authorization.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise ApiKeyRefused(
            "You didn't provide an API key. Send it in the Authorization header: Authorization: Bearer KEY."
        )
    parts = _parts(token.strip())
    if parts is None:
        raise ApiKeyRefused("Incorrect API key provided.")
    prefix, secret = parts
    api_key = await ApiKey.objects.filter(prefix=prefix).afirst()
    now = timezone.now()
    reason = refusal_reason(api_key, secret, now=now)
    if reason is not None or api_key is None:
        raise ApiKeyRefused(reason or "Incorrect API key provided.")
    if api_key.last_used_at is None or now - api_key.last_used_at >= LAST_USED_RESOLUTION:
        api_key.last_used_at = now
        # Conditional, so that a burst of requests that all read the old time writes it once.
        await (
            ApiKey.objects.filter(pk=api_key.pk)
            .filter(Q(last_used_at__isnull=True) | Q(last_used_at__lte=now - LAST_USED_RESOLUTION))
            .aupdate(last_used_at=now)
        )
    return api_key


def _key_by_prefix(prefix: str) -> ApiKey:
    wanted = prefix.strip().removeprefix(KEY_START).split("_", 1)[0]
    api_key = ApiKey.objects.filter(prefix=wanted).first()
    if api_key is None:
        # Names the prefix only: what was given may be a whole key, secret included, bound for a log.
        raise ApiKeyError(f"There is no API key with the prefix {wanted!r} (`manage.py api_key list`).")
    return api_key


def api_key_revoke(*, prefix: str) -> ApiKey:
    """Revoke a key for good (requests with it get 401 at once); revoking it again changes nothing."""
    api_key = _key_by_prefix(prefix)
    if api_key.revoked_at is None:
        api_key.revoked_at = timezone.now()
        api_key.save(update_fields=["revoked_at"])
    return api_key


def api_keys_revoke(*, key_ids: list[int]) -> int:
    """Revoke the keys with these ids (admin's action); the number revoked now."""
    return ApiKey.objects.filter(pk__in=key_ids, revoked_at__isnull=True).update(revoked_at=timezone.now())
