"""WebSocket tickets on the JSON API: how a browser on another origin opens the dashboard socket."""

from __future__ import annotations

from django.conf import settings
from django.http import HttpRequest
from ninja import Field, Router, Schema

from api.errors import errors
from core.times import format_ts
from devices.services.tickets import ws_ticket_issue

router = Router(tags=["websocket"])


class TicketOut(Schema):
    ticket: str = Field(..., description="present it once as `?ticket=` on the WebSocket URL")
    expires_at: str = Field(..., description="unused after this, it is refused")
    url: str = Field(..., description="the dashboard WebSocket URL with the ticket, as this server sees itself")


@router.post("/ws-ticket", response={200: TicketOut, **errors(401, 403)},
             summary="A single-use ticket for the dashboard WebSocket, valid for IOTGW_WS_TICKET_SECONDS")
def ws_ticket(request: HttpRequest):
    """For browsers, which cannot send `Authorization` on a WebSocket handshake; the ticket works once."""
    token_id = getattr(request, "api_token_id", None)
    session_key = None if token_id is not None else request.session.session_key
    key, expires_at = ws_ticket_issue(user=request.auth, token_id=token_id, session_key=session_key,
                                      ttl=settings.IOTGW_WS_TICKET_SECONDS)
    scheme = "wss" if request.is_secure() else "ws"
    return {"ticket": key, "expires_at": format_ts(expires_at),
            "url": f"{scheme}://{request.get_host()}/ws/dashboard/?ticket={key}"}
