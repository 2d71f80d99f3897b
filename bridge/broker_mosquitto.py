"""The embedded broker when Mosquitto is installed: a child process with a password file and an ACL pattern file.

Mosquitto reads logins from `passwd` (the registry's `mqtt_password_hash` of each
enabled device, plus the bridge's account) and topic rights from `acl` (one
pattern per right, from core/topics.py). A registry change rewrites
`passwd` and sends SIGHUP: Mosquitto reloads it and drops every connection
whose credentials no longer hold. State (retained messages, persistent sessions)
lives in var/mosquitto-<port>/ and survives a restart.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

from django.conf import settings

from bridge.broker import BRIDGE_USERNAME, Credentials, EmbeddedBroker, EmbeddedBrokerError, port_check
from core.topics import mosquitto_acl_patterns
from devices.secrets import mosquitto_password_hash

logger = logging.getLogger("iotgw.broker")


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    """Linux: the child gets SIGTERM when the gateway dies, even by SIGKILL, so no orphan holds the port."""
    import ctypes

    PR_SET_PDEATHSIG = 1
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def _write_private(path: Path, text: str) -> None:
    """Replace a file atomically, readable by this user only."""
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, path)


class MosquittoBroker(EmbeddedBroker):
    """Mosquitto as a child of the gateway: MQTT 5 and 3.1.1, persistence, and the registry's logins."""

    kind = "mosquitto"

    def __init__(self, *, host: str, port: int, binary: str) -> None:
        super().__init__(host=host, port=port)
        self.binary = binary
        self.dir = Path(settings.BASE_DIR) / "var" / f"mosquitto-{port}"
        self.version = ""
        self._proc: subprocess.Popen | None = None
        self._stopping = False
        self._passwd_text = ""
        self._bridge_line = f"{BRIDGE_USERNAME}:{mosquitto_password_hash(self.bridge_password)}"
        self._warned_legacy: set[str] = set()

    @property
    def label(self) -> str:
        return f"embedded Mosquitto {self.version or ''}: MQTT 5 and 3.1.1".replace(" :", ":")

    def start(self) -> None:
        port_check(self.host, self.port)
        version = subprocess.run([self.binary, "-h"], capture_output=True, text=True, timeout=10).stdout.split()
        self.version = version[2] if version[:2] == ["mosquitto", "version"] and len(version) > 2 else ""
        self.dir.mkdir(parents=True, exist_ok=True)
        _write_private(self.dir / "acl", self._acl())
        self._write_passwd(self.watcher.load())
        _write_private(self.dir / "mosquitto.conf", self._conf())
        self._proc = subprocess.Popen(
            [self.binary, "-c", str(self.dir / "mosquitto.conf")], stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
            preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None,
        )
        lines: list[str] = []
        threading.Thread(target=self._relay, args=(self._proc, lines), name="embedded-mosquitto-log",
                         daemon=True).start()
        self._wait_listening(lines)
        self.watcher.start()
        logger.info("embedded Mosquitto %s on %s:%s (state in %s)", self.version, self.host, self.port, self.dir)

    def stop(self) -> None:
        super().stop()
        self._stopping = True
        proc = self._proc
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)

    def apply(self, credentials: Credentials) -> None:
        if self._write_passwd(credentials) and self._proc is not None and self._proc.poll() is None:
            # Mosquitto reloads the password and ACL files on SIGHUP and disconnects every client whose
            # login no longer holds (measured on 2.0.11): a disabled device or an old secret is dropped.
            self._proc.send_signal(signal.SIGHUP)

    def _write_passwd(self, credentials: Credentials) -> bool:
        """Write the password file if it changed; returns whether it did."""
        lines = [self._bridge_line]
        legacy = []
        for device_id, (enabled, _secret_hash, mqtt_hash) in sorted(credentials.items()):
            if enabled and mqtt_hash:
                lines.append(f"{device_id}:{mqtt_hash}")
            elif enabled:
                legacy.append(device_id)
        self._warn_legacy(legacy)
        text = "\n".join(lines) + "\n"
        if text == self._passwd_text:
            return False
        _write_private(self.dir / "passwd", text)
        self._passwd_text = text
        return True

    def _warn_legacy(self, device_ids: list[str]) -> None:
        new = [d for d in device_ids if d not in self._warned_legacy]
        if new:
            self._warned_legacy.update(new)
            logger.warning(
                "%d device(s) cannot log in to the embedded Mosquitto, registered before iotgw kept a password "
                "it can check: %s. Give each a new secret (python manage.py rotatesecret ID), or run the "
                "gateway with IOTGW_EMBEDDED_BROKER=amqtt.", len(new), ", ".join(new[:20]) + (" …" if len(new) > 20
                                                                                           else ""))

    def _acl(self) -> str:
        return "\n".join([
            "# Written by the iotgw gateway at each start (core/topics.py); edits are lost.",
            f"user {BRIDGE_USERNAME}",
            "topic readwrite #",
            "",
            *mosquitto_acl_patterns(),
        ]) + "\n"

    def _conf(self) -> str:
        d = self.dir
        lines = [
            "# Written by the iotgw gateway at each start; edits are lost.",
            f"listener {self.port} {self.host}",
            "allow_anonymous false",
            f"password_file {d / 'passwd'}",
            f"acl_file {d / 'acl'}",
            "persistence true",
            f"persistence_location {d}/",
            "autosave_interval 10",
            # The defaults (1000 queued, 20 in flight) drop QoS 1 for a slow or restarting subscriber.
            "max_queued_messages 100000",
            "max_inflight_messages 20000",
            "set_tcp_nodelay true",
            "log_dest stderr",  # unbuffered, unlike stdout into a pipe
            "log_timestamp false",
            "log_type error",
            "log_type warning",
            "log_type notice",
            "log_type information",
        ]
        if os.geteuid() == 0:
            # Started as root, Mosquitto would switch to user `mosquitto`, who cannot write var/.
            lines.append("user root")
        return "\n".join(lines) + "\n"

    def _wait_listening(self, lines: list[str], timeout: float = 15.0) -> None:
        deadline = time.monotonic() + timeout
        assert self._proc is not None
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                time.sleep(0.1)  # let the relay read the last lines
                raise EmbeddedBrokerError(f"the embedded Mosquitto exited at start (code {self._proc.returncode}): "
                                          + " / ".join(lines[-3:]))
            with socket.socket(socket.AF_INET6 if ":" in self.host else socket.AF_INET) as s:
                target = "127.0.0.1" if self.host in ("0.0.0.0", "") else "::1" if self.host == "::" else self.host
                if s.connect_ex((target, self.port)) == 0:
                    return
            time.sleep(0.05)
        self.stop()
        raise EmbeddedBrokerError(f"the embedded Mosquitto did not listen on {self.host}:{self.port} within "
                                  f"{timeout:.0f} s: " + " / ".join(lines[-3:]))

    def _relay(self, proc: subprocess.Popen, lines: list[str]) -> None:
        """Mosquitto's log into ours: refused logins as warnings with a hint, chatter at debug."""
        peer = "?"
        assert proc.stderr is not None
        for raw in proc.stderr:
            line = raw.decode(errors="replace").strip()
            if not line:
                continue
            lines.append(line)
            del lines[:-20]
            if line.startswith("New connection from "):
                peer = line.split()[3]
            if "not authorised" in line:
                logger.warning("MQTT login refused (client at %s): unknown device, wrong secret or disabled. A "
                               "device logs in with its id and secret; `python manage.py rotatesecret ID` issues "
                               "a new one.", peer)
            elif line.startswith("Warning: Mosquitto should not be run as root"):
                logger.debug("mosquitto: %s", line)  # the gateway's own user; nothing to act on
            elif line.startswith(("Error", "Warning")):
                logger.warning("mosquitto: %s", line)
            else:
                logger.debug("mosquitto: %s", line)
        if not self._stopping:
            logger.error("the embedded Mosquitto exited (code %s): MQTT is down until the gateway restarts",
                         proc.wait())
