"""`manage.py api_key create|list|revoke`: the gateway's API keys, scriptable (DESIGN.md, Access).

`create` prints the key once; only a hash of its secret is kept, so a key that is lost is revoked and
issued again. A revoked key is refused by /v1/ on its next request: nothing needs restarting.
"""

from __future__ import annotations

from argparse import ArgumentParser
from datetime import date, datetime, time, timedelta
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils import timezone

from access import keys
from access.models import ApiKey

_NO_LIMIT_HINT = {
    "requests_per_minute": "use --no-request-limit for none",
    "tokens_per_minute": "leave it out for no limit",
    "monthly_tokens": "leave it out for no quota",
}


def _table(rows: list[list[str]]) -> str:
    widths = [max(len(row[column]) for row in rows) for column in range(len(rows[0]))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip() for row in rows
    )


def expiry_parse(written: str) -> datetime:
    """The moment a key given `--expires` stops working: after the whole day a bare date names (in
    TIME_ZONE), or at an ISO 8601 datetime (one without an offset is read in TIME_ZONE)."""
    zone = timezone.get_default_timezone()
    text = written.strip()
    try:
        day = date.fromisoformat(text)
    except ValueError:
        pass
    else:
        # The key works through the end of that day: it expires when the next one begins.
        return datetime.combine(day + timedelta(days=1), time.min, tzinfo=zone)
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise CommandError(
            f"--expires {written!r} is neither a date (2027-03-31: the key works through that day) "
            "nor an ISO 8601 datetime (2027-03-31T18:00:00+01:00)."
        ) from None
    return timezone.make_aware(moment, zone) if timezone.is_naive(moment) else moment


def _local(moment: datetime | None, *, never: str) -> str:
    if moment is None:
        return never
    return timezone.localtime(moment).strftime("%Y-%m-%d %H:%M %Z")


def _expiry_text(expires_at: datetime | None) -> str:
    text = _local(expires_at, never="never")
    if expires_at is not None and timezone.localtime(expires_at).time() == time.min:
        # Expiring as a day begins, the key was given a date: say which day is its last.
        text += f" (works through {(timezone.localdate(expires_at) - timedelta(days=1)).isoformat()})"
    return text


def key_state(api_key: ApiKey, *, now: datetime) -> str:
    """`active`, `revoked` or `expired`, as `api_key list` and admin show it."""
    if api_key.revoked_at is not None:
        return "revoked"
    if api_key.expires_at is not None and api_key.expires_at <= now:
        return "expired"
    return "active"


def limits_text(api_key: ApiKey) -> str:
    """The key's limits in a few words: `60 rpm, 20000 tpm, 1000000 tokens/month`, or `none`."""
    limits = []
    if api_key.requests_per_minute is not None:
        limits.append(f"{api_key.requests_per_minute} rpm")
    if api_key.tokens_per_minute is not None:
        limits.append(f"{api_key.tokens_per_minute} tpm")
    if api_key.monthly_tokens is not None:
        limits.append(f"{api_key.monthly_tokens} tokens/month")
    return ", ".join(limits) or "none"


class Command(BaseCommand):
    help = (
        "Manage the API keys of the OpenAI-compatible gateway (/v1/). `create` prints the key once (only "
        "a hash of it is kept); `list` shows them; `revoke` refuses a key from its next request on."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        actions = parser.add_subparsers(dest="action", required=True, metavar="{create,list,revoke}")

        create: ArgumentParser = actions.add_parser("create", help="Issue a key and print it, once.")
        create.add_argument("--name", required=True, help="What calls with it, e.g. 'CRM ticket sidebar'.")
        create.add_argument("--owner", default="", help="Who answers for it: a team, a person, an e-mail.")
        create.add_argument("--note", default="", help="Anything the next reader should know.")
        create.add_argument(
            "--expires",
            metavar="DATE",
            help="YYYY-MM-DD (the key works through the end of that day, in TIME_ZONE) or an ISO 8601 "
            "datetime. Default: never.",
        )
        requests = create.add_mutually_exclusive_group()
        requests.add_argument(
            "--requests-per-minute", metavar="N", help="Requests a minute, 1 or more (default 60)."
        )
        requests.add_argument(
            "--no-request-limit", action="store_true", help="No limit on requests a minute."
        )
        create.add_argument(
            "--tokens-per-minute",
            metavar="N",
            help="Prompt and completion tokens a minute, 1 or more. Default: no limit.",
        )
        create.add_argument(
            "--monthly-tokens",
            metavar="N",
            help="Tokens per calendar month (TIME_ZONE), 1 or more. Default: no quota.",
        )
        create.add_argument(
            "--model",
            action="append",
            metavar="NAME",
            help="A model name the key may ask for; repeat for several. Default: the assistant "
            f"({settings.GATEWAY_ASSISTANT_MODEL}). The inference server's own model is a plain proxy.",
        )
        create.add_argument(
            "--keep-conversations",
            action="store_true",
            help="Keep each request and its answer as a conversation, visible in admin.",
        )
        create.add_argument(
            "--fetch-image-urls",
            action="store_true",
            help="Let requests name images by http(s) URL, fetched by the platform (default: data: only).",
        )
        create.add_argument("--quiet", action="store_true", help="Print only the key, for scripts.")

        actions.add_parser("list", help="Print the keys as a table (never their secrets).")

        revoke = actions.add_parser("revoke", help="Revoke a key for good.")
        revoke.add_argument("prefix", help="The key's prefix, as `api_key list` shows it, or the whole key.")

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            getattr(self, f"_{options['action']}")(options)
        except keys.ApiKeyError as error:
            raise CommandError(str(error)) from None

    def _limit(self, options: dict[str, Any], field: str) -> int | None:
        written = options[field]
        if written is None:
            return None
        option = "--" + field.replace("_", "-")
        try:
            value = int(written)
        except ValueError:
            raise CommandError(f"{option} {written!r} is not a whole number.") from None
        if value < 1:
            raise CommandError(f"{option} must be 1 or more ({_NO_LIMIT_HINT[field]}).")
        return value

    def _create(self, options: dict[str, Any]) -> None:
        requests_per_minute = self._limit(options, "requests_per_minute")
        if requests_per_minute is None and not options["no_request_limit"]:
            requests_per_minute = ApiKey._meta.get_field("requests_per_minute").get_default()
        models = list(dict.fromkeys(name.strip() for name in options["model"] or []))
        if "" in models:
            raise CommandError("--model needs a model name.")
        issued = keys.api_key_create(
            name=options["name"],
            owner=options["owner"],
            note=options["note"],
            expires_at=expiry_parse(options["expires"]) if options["expires"] else None,
            requests_per_minute=requests_per_minute,
            tokens_per_minute=self._limit(options, "tokens_per_minute"),
            monthly_tokens=self._limit(options, "monthly_tokens"),
            allowed_models=models or None,
            keeps_conversations=options["keep_conversations"],
            fetches_image_urls=options["fetch_image_urls"],
        )
        if options["quiet"]:
            self.stdout.write(issued.key)
            return
        api_key = issued.api_key
        self.stdout.write(f"Issued API key {api_key.pk} “{api_key.name}” (prefix {api_key.prefix}):")
        self.stdout.write("")
        self.stdout.write(issued.key)
        self.stdout.write("")
        self.stdout.write(
            self.style.WARNING(
                "Copy the key now: it is not shown again (only a hash of it is kept). "
                "Whoever loses it revokes it and issues a new one."
            )
        )
        self.stdout.write(f"Models: {', '.join(api_key.allowed_models)}")
        self.stdout.write(f"Limits: {limits_text(api_key)}")
        self.stdout.write(f"Expires: {_expiry_text(api_key.expires_at)}")

    def _list(self, options: dict[str, Any]) -> None:
        now = timezone.now()
        rows = [["PREFIX", "NAME", "OWNER", "MODELS", "LIMITS", "EXPIRES", "LAST USED", "STATE"]]
        rows += [
            [
                api_key.prefix,
                api_key.name,
                api_key.owner,
                ",".join(api_key.allowed_models),
                limits_text(api_key),
                _local(api_key.expires_at, never="never"),
                _local(api_key.last_used_at, never="never"),
                key_state(api_key, now=now),
            ]
            for api_key in ApiKey.objects.order_by("created_at", "id")
        ]
        if len(rows) == 1:
            self.stdout.write("No API keys: issue one with `manage.py api_key create --name NAME`.")
            return
        self.stdout.write(_table(rows))

    def _revoke(self, options: dict[str, Any]) -> None:
        before = timezone.now()
        api_key = keys.api_key_revoke(prefix=options["prefix"])
        assert api_key.revoked_at is not None
        if api_key.revoked_at < before:
            self.stdout.write(
                f"API key {api_key.prefix} “{api_key.name}” was already revoked "
                f"({_local(api_key.revoked_at, never='')}); nothing changed."
            )
            return
        self.stdout.write(
            f"Revoked API key {api_key.prefix} “{api_key.name}”: requests with it are refused from now on."
        )
