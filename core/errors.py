"""One exception base for the gateway; each edge maps these to its own form."""

from __future__ import annotations


class GatewayError(Exception):
    """Base of every error the gateway raises on purpose."""

    code = "error"


class ConfigMissing(GatewayError):
    """A required setting is not set; its message is the one line a process refuses to start with."""

    code = "config_missing"

    def __init__(self, name: str, why: str) -> None:
        super().__init__(f"Config '{name}' is missing, and has no default: {why}")
        self.name = name


class PayloadInvalid(GatewayError):
    """A message or request body breaks the payload rules (SPEC §4)."""

    code = "bad_request"

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class DeviceUnknown(GatewayError):
    """No device has that id."""

    code = "unknown_device"


class DeviceDisabled(GatewayError):
    """The device exists but is disabled."""

    code = "forbidden"


class NotAuthorized(GatewayError):
    """The caller may not see or act on that object."""

    code = "forbidden"


class Conflict(GatewayError):
    """The object exists already, or is in a state that forbids the action."""

    code = "conflict"


class CommandUnknown(DeviceUnknown):
    """No command has that id (answered like an unknown device: 404)."""

    code = "unknown_command"


class RateLimited(GatewayError):
    """The caller sends faster than its rate limit allows; `retry_after` is when it may again, in seconds."""

    code = "rate_limited"

    def __init__(self, message: str, *, retry_after: float = 1.0) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class DeliveryFailed(GatewayError):
    """A transport could not hand a command to its device (e.g. the broker is away); the dispatcher retries it."""

    code = "delivery_failed"


class AlarmUnknown(DeviceUnknown):
    """No alarm (or alarm rule) has that id, or the caller may not see its device (answered 404)."""

    code = "unknown_alarm"


class ProfileUnknown(DeviceUnknown):
    """No device profile has that name (answered 404)."""

    code = "unknown_profile"


class ChannelUnknown(DeviceUnknown):
    """No notification channel (or subscription) has that id (answered 404)."""

    code = "unknown_channel"
