"""Sending one message through one channel: a webhook (signed JSON), e-mail (Django's mail backends), Apprise.

Each send is blocking and bounded by `timeout`; the sender runs it in a worker thread. It never
raises: the outcome says whether it went out and, if not, whether trying again may help.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import apprise
import orjson
import requests
from django.core.mail import EmailMessage, get_connection

from notify.models import Channel
from notify.signing import DELIVERY_HEADER, EVENT_HEADER, SIGNATURE_HEADER, TIMESTAMP_HEADER, signature

logger = logging.getLogger("iotgw.notify")

# Worth another try: the receiver is down, overloaded or timed out. Any other 4xx is the request's fault.
RETRY_STATUSES = frozenset({408, 425, 429})
USER_AGENT = "iotgw-notify/1"


@dataclass(frozen=True)
class Outcome:
    """How one try went."""

    ok: bool
    status_code: int | None = None
    error: str = ""
    latency_ms: float = 0.0
    retry: bool = True


@dataclass(frozen=True)
class Message:
    """What is sent: the delivery's id and the event's content, as committed."""

    delivery_id: str
    kind: str
    severity: str
    key: str
    device_id: str
    title: str
    body: str
    data: dict[str, Any]
    at: str

    def payload(self, channel: str) -> dict[str, Any]:
        """The webhook's JSON body."""
        return {"delivery": self.delivery_id, "channel": channel,
                "event": {"kind": self.kind, "severity": self.severity, "key": self.key, "device": self.device_id,
                          "title": self.title, "body": self.body, "data": self.data, "at": self.at}}

    def subject(self) -> str:
        """A one-line summary for e-mail and chat titles."""
        return f"[{self.severity}] {self.kind}: {self.title}"[:250]

    def text(self) -> str:
        """The plain-text body for e-mail and chat."""
        lines = [self.body] if self.body else []
        lines += [f"device: {self.device_id}" if self.device_id else "", f"alarm: {self.key}", f"at: {self.at}"]
        return "\n".join(line for line in lines if line)


def send(channel: Channel, message: Message, *, timeout: float, from_email: str,
         allowed_hosts: Sequence[str] = ()) -> Outcome:
    """One try through `channel`; a target outside `allowed_hosts` (when set) is refused for good."""
    from notify.registry import target_refusal

    started = time.monotonic()
    try:
        if allowed_hosts and (why := target_refusal(channel.kind, channel.target, allowed_hosts=allowed_hosts)):
            outcome = Outcome(ok=False, error=why, retry=False)
        elif channel.kind == Channel.WEBHOOK:
            outcome = _webhook(channel, message, timeout=timeout)
        elif channel.kind == Channel.EMAIL:
            outcome = _email(channel, message, timeout=timeout, from_email=from_email)
        elif channel.kind == Channel.APPRISE:
            outcome = _apprise(channel, message)
        else:
            outcome = Outcome(ok=False, error=f"unknown channel kind {channel.kind!r}", retry=False)
    except Exception as exc:  # a bug or an odd library error must not kill the sender; the next try may work
        logger.exception("sending through %s failed", channel.name)
        outcome = Outcome(ok=False, error=f"{type(exc).__name__}: {exc}"[:2000])
    return Outcome(ok=outcome.ok, status_code=outcome.status_code, error=outcome.error, retry=outcome.retry,
                   latency_ms=round((time.monotonic() - started) * 1000, 3))


def _webhook(channel: Channel, message: Message, *, timeout: float) -> Outcome:
    body = orjson.dumps(message.payload(channel.name))
    stamp = int(time.time())
    headers = {"Content-Type": "application/json", "User-Agent": USER_AGENT, DELIVERY_HEADER: message.delivery_id,
               EVENT_HEADER: message.kind, TIMESTAMP_HEADER: str(stamp)}
    if channel.secret:
        headers[SIGNATURE_HEADER] = signature(channel.secret, stamp, body)
    try:
        # No redirects: a 3xx to elsewhere would carry the signed body to a host nobody configured.
        response = requests.post(channel.target, data=body, headers=headers, timeout=timeout, allow_redirects=False)
    except requests.RequestException as exc:
        return Outcome(ok=False, error=f"{type(exc).__name__}: {exc}"[:2000])
    code = response.status_code
    response.close()
    if 200 <= code < 300:
        return Outcome(ok=True, status_code=code)
    return Outcome(ok=False, status_code=code, error=f"HTTP {code}", retry=code >= 500 or code in RETRY_STATUSES)


def _email(channel: Channel, message: Message, *, timeout: float, from_email: str) -> Outcome:
    to = [a.strip() for a in channel.target.split(",") if a.strip()]
    mail = EmailMessage(subject=message.subject(), body=message.text(), from_email=from_email or None, to=to,
                        headers={DELIVERY_HEADER: message.delivery_id}, connection=get_connection(timeout=timeout))
    sent = mail.send(fail_silently=False)
    return Outcome(ok=sent > 0, error="" if sent else "the mail backend sent nothing")


NOTIFY_TYPES = {"critical": apprise.NotifyType.FAILURE, "major": apprise.NotifyType.FAILURE,
                "minor": apprise.NotifyType.WARNING, "warning": apprise.NotifyType.WARNING}


def _apprise(channel: Channel, message: Message) -> Outcome:
    client = apprise.Apprise()
    if not client.add(channel.target):
        return Outcome(ok=False, error="Apprise does not understand this URL", retry=False)
    kind = apprise.NotifyType.SUCCESS if message.kind == "cleared" else NOTIFY_TYPES.get(message.severity,
                                                                                        apprise.NotifyType.INFO)
    with apprise.LogCapture(level=logging.WARNING) as log:
        ok = client.notify(title=message.subject(), body=message.text(), notify_type=kind)
        captured = log.getvalue()
    return Outcome(ok=bool(ok), error="" if ok else (captured.strip()[-2000:] or "Apprise reported a failure"))
