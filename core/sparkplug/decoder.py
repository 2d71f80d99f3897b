"""The Sparkplug B dialect as a Decoder: births, data, deaths and `seq` of edge nodes, and commands back to them.

Sparkplug is stateful: a BIRTH declares the metrics (names, aliases, datatypes) that later DATA
refer to by alias, every message of a node carries the next `seq` (0–255, wrapping), and an
NDEATH counts only when its `bdSeq` is the one its NBIRTH announced. So one decoder holds, per
edge node, what its last births said; the pipeline runs it inside its batches in arrival order.
When it cannot make sense of a node (DATA before any BIRTH, a `seq` gap, an unknown alias) it
queues a rebirth request, which the MQTT edge publishes from `replies()` after the batch.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from google.protobuf.message import DecodeError

from core.errors import PayloadInvalid
from core.ids import child_device_id
from core.payloads import Sample
from core.sparkplug.commands import REBIRTH, epoch_ms, rebirth_payload, write_payload
from core.sparkplug.metrics import MAX_MS, Metric, Skipped, datatype_of, metric_name, ms_to_datetime, text, value_of
from core.sparkplug.sparkplug_b_pb2 import Payload
from core.sparkplug.topic import (
    DBIRTH,
    DCMD,
    DDATA,
    DDEATH,
    NBIRTH,
    NCMD,
    NDATA,
    NDEATH,
    Topic,
    device_topic,
    node_topic,
    parse_topic,
)
from core.times import DEFAULT_MAX_SKEW
from core.transport import Outbound, Said
from core.wire import CommandResponse

BDSEQ = "bdSeq"
CONTROL_PREFIXES = ("Node Control/", "Device Control/")
MAX_NODES = 10_000
MAX_DEVICES_PER_NODE = 10_000
MAX_PENDING_PER_DEVICE = 64
MAX_NAMES_PER_SCOPE = 10_000
REBIRTH_INTERVAL = timedelta(seconds=5)
REBIRTH_QOS = 0  # Sparkplug: NCMD and DCMD are published at QoS 0

def node_device_id(group: str, edge: str) -> str:
    """An edge node's device id: `<group>.<edge node>`, each escaped as a child's name is (core.ids)."""
    return child_device_id(child_device_id("", group)[1:], edge)


@dataclass(slots=True)
class Scope:
    """What a BIRTH declared for the node itself or one of its devices."""

    device_id: str
    child_of: tuple[str, str] | None = None  # a device of its node: (node id, its Sparkplug device id)
    aliases: dict[int, str] = field(default_factory=dict)  # alias → Sparkplug metric name
    types: dict[str, int] = field(default_factory=dict)  # Sparkplug metric name → datatype
    names: dict[str, str] = field(default_factory=dict)  # iotgw metric name → Sparkplug metric name
    mapped: dict[str, str] = field(default_factory=dict)  # Sparkplug metric name → iotgw metric name


@dataclass(slots=True)
class Node:
    """One edge node as the gateway last saw it."""

    group: str
    edge: str
    scope: Scope
    born: bool = False
    bdseq: int | None = None
    seq: int | None = None
    devices: dict[str, Scope] = field(default_factory=dict)
    rebirth_asked: datetime | None = None


@dataclass(slots=True)
class Pending:
    """A write sent to a device, waiting for a DATA that reports every written metric's new value."""

    command_id: Any
    expected: dict[str, Any]  # what is still to be reported
    written: dict[str, Any]
    expires_at: datetime
    error: str = ""  # a write refused before it was sent (a value that does not fit its metric)


def _same(a: Any, b: Any) -> bool:
    return type(a) is type(b) and a == b


class SparkplugDecoder:
    """Decodes `spBv1.0/<group>/{N,D}{BIRTH,DATA,DEATH}/<edge>[/<device>]`; NCMD, DCMD and STATE say nothing.

    The edge node is a device (`node_id(group, edge)`), each of its devices a child of it
    (`child_id(node, device)`). `counts` says how many metrics were skipped and why, how many
    `seq` gaps and stale deaths were seen.
    """

    def __init__(self, *, max_payload: int, max_skew: timedelta = DEFAULT_MAX_SKEW,
                 node_id: Callable[[str, str], str] = node_device_id,
                 child_id: Callable[[str, str], str] = child_device_id,
                 rebirth_interval: timedelta = REBIRTH_INTERVAL, max_nodes: int = MAX_NODES) -> None:
        self.max_payload = max_payload
        self.max_skew = max_skew
        self.node_id = node_id
        self.child_id = child_id
        self.rebirth_interval = rebirth_interval
        self.max_nodes = max_nodes
        self.counts: Counter[str] = Counter()
        self._nodes: dict[tuple[str, str], Node] = {}
        self._where: dict[str, tuple[tuple[str, str], str]] = {}  # device id → (node key, device name or "")
        self._pending: dict[str, list[Pending]] = {}
        self._replies: dict[str, tuple[str, bytes, int]] = {}

    # --- the Decoder protocol --------------------------------------------------------------

    def __call__(self, topic: str, payload: bytes, *, received_at: datetime) -> list[Said]:
        where = parse_topic(topic)
        if where.type in (NCMD, DCMD) or not where.edge:  # hosts' messages (ours too) and STATE
            return []
        if len(payload) > self.max_payload:
            raise PayloadInvalid("too_large", f"payload of {len(payload)} bytes is over the "
                                 f"{self.max_payload}-byte limit")
        message = _parse(payload)
        key = (where.group, where.edge)
        if where.type == NBIRTH:
            return self._nbirth(where, message, received_at)
        if where.type == NDEATH:
            return self._ndeath(key, message)
        node = self._nodes.get(key)
        if node is None or not node.born:
            self._ask_rebirth(self._node(key), received_at)
            raise PayloadInvalid("no_birth", f"{where.type} from edge node {where.edge[:80]!r} of group "
                                 f"{where.group[:80]!r} before its NBIRTH; a rebirth was requested")
        self._check_seq(node, message, received_at)
        if where.type == NDATA:
            return self._data(node, node.scope, message, received_at)
        if where.type == DBIRTH:
            return self._dbirth(node, where.device, message, received_at)
        scope = node.devices.get(where.device)
        if where.type == DDEATH:
            node.devices.pop(where.device, None)
            return [_said(scope or self._scope(node, where.device), online=False)]
        assert where.type == DDATA
        if scope is None:
            self._ask_rebirth(node, received_at)
            raise PayloadInvalid("no_birth", f"DDATA from device {where.device[:80]!r} before its DBIRTH; "
                                 "a rebirth was requested")
        return self._data(node, scope, message, received_at)

    def source(self, topic: str) -> str:
        """The node's or device's id when the topic is a Sparkplug one, else the topic."""
        try:
            where = parse_topic(topic)
        except PayloadInvalid:
            return topic[:200]
        if not where.edge:
            return topic[:200]
        node = self.node_id(where.group, where.edge)
        return self.child_id(node, where.device) if where.device else node

    # --- what the MQTT edge publishes for it -----------------------------------------------

    def replies(self) -> list[tuple[str, bytes, int]]:
        """The rebirth requests queued since the last call, as (topic, payload, qos); draining them."""
        out, self._replies = list(self._replies.values()), {}
        return out

    def command(self, command: Outbound, *, at: datetime) -> tuple[str, bytes, int]:
        """An iotgw command as (topic, payload, qos): NCMD to a node, DCMD to a device, params as metric writes.

        PayloadInvalid (`no_birth`) when the gateway has seen no BIRTH of that device since it started;
        (`bad_command`) when a param does not fit its metric's datatype: that command is then answered
        as failed with the device's next message. A write is confirmed by a later DATA (see `_confirm`).
        """
        located = self._where.get(command.device_id)
        node = self._nodes.get(located[0]) if located else None
        if located is None or node is None or not node.born:
            raise PayloadInvalid("no_birth", f"no BIRTH of {command.device_id!r} seen since the gateway started")
        device = located[1]
        scope = node.devices.get(device) if device else node.scope
        if scope is None:
            raise PayloadInvalid("no_birth", f"no DBIRTH of {command.device_id!r} seen since its node's NBIRTH")
        pending = self._pending.setdefault(command.device_id, [])
        try:
            payload, expected = write_payload(command.params, names=scope.names, types=scope.types, at=at)
        except PayloadInvalid as exc:  # failed at the device's next message (a transport cannot fail it)
            if not any(p.command_id == command.command_id for p in pending):
                pending.append(Pending(command.command_id, {}, {}, command.expires_at, error=str(exc)))
            raise
        pending.append(Pending(command.command_id, expected, dict(expected), command.expires_at))
        del pending[:-MAX_PENDING_PER_DEVICE]
        topic = (device_topic(node.group, DCMD, node.edge, device) if device
                 else node_topic(node.group, NCMD, node.edge))
        return topic, payload, REBIRTH_QOS

    # --- births and deaths -----------------------------------------------------------------

    def _nbirth(self, where: Topic, message: Payload, received_at: datetime) -> list[Said]:
        key = (where.group, where.edge)
        old = self._nodes.pop(key, None)
        node = self._node(key)
        node.born, node.seq = True, message.seq if message.HasField("seq") else 0
        node.bdseq = _bdseq(message)
        said: list[Said] = []
        if old is not None and old.bdseq != node.bdseq:  # a new session: its devices must be born again
            said += [_said(scope, online=False) for scope in old.devices.values()]
            for scope in old.devices.values():
                self._where.pop(scope.device_id, None)
        self._declare(node.scope, message)
        samples, values = self._samples(node.scope, message, received_at)
        said.append(Said(node.scope.device_id, samples=samples, online=True))
        return said + self._confirm(node.scope, values, received_at)

    def _dbirth(self, node: Node, device: str, message: Payload, received_at: datetime) -> list[Said]:
        if device not in node.devices and len(node.devices) >= MAX_DEVICES_PER_NODE:
            raise PayloadInvalid("too_many_devices", f"edge node {node.edge[:80]!r} has over "
                                 f"{MAX_DEVICES_PER_NODE} devices")
        scope = node.devices[device] = self._scope(node, device)
        self._where[scope.device_id] = ((node.group, node.edge), device)
        self._declare(scope, message)
        samples, values = self._samples(scope, message, received_at)
        return [_said(scope, samples=samples, online=True), *self._confirm(scope, values, received_at)]

    def _ndeath(self, key: tuple[str, str], message: Payload) -> list[Said]:
        node = self._nodes.get(key)
        bdseq = _bdseq(message)
        if node is None:  # not seen since the gateway started: the death is taken as it comes
            return [Said(self.node_id(*key), online=False)]
        if node.bdseq is not None and bdseq is not None and bdseq != node.bdseq:
            self.counts["stale_death"] += 1  # the will of an older session, delivered late
            return []
        node.born = False
        said = [_said(scope, online=False) for scope in node.devices.values()]
        node.devices.clear()
        return [Said(node.scope.device_id, online=False), *said]

    def _scope(self, node: Node, device: str) -> Scope:
        return Scope(self.child_id(node.scope.device_id, device), child_of=(node.scope.device_id, device))

    def _node(self, key: tuple[str, str]) -> Node:
        node = self._nodes.get(key)
        if node is None:
            while len(self._nodes) >= self.max_nodes:  # bounded: the node seen longest ago goes
                gone = self._nodes.pop(next(iter(self._nodes)))
                for scope in (gone.scope, *gone.devices.values()):
                    self._where.pop(scope.device_id, None)
                    self._pending.pop(scope.device_id, None)
            node = self._nodes[key] = Node(key[0], key[1], Scope(self.node_id(*key)))
            self._where[node.scope.device_id] = (key, "")
        return node

    # --- data ------------------------------------------------------------------------------

    def _check_seq(self, node: Node, message: Payload, received_at: datetime) -> None:
        if not message.HasField("seq"):
            return
        expected = None if node.seq is None else (node.seq + 1) % 256
        node.seq = message.seq
        if expected is not None and message.seq != expected:
            self.counts["seq_gap"] += 1
            self._ask_rebirth(node, received_at)

    def _data(self, node: Node, scope: Scope, message: Payload, received_at: datetime) -> list[Said]:
        unknown = self.counts["skipped_unknown_alias"]
        samples, values = self._samples(scope, message, received_at)
        if self.counts["skipped_unknown_alias"] > unknown:  # a BIRTH was missed: ask for it again
            self._ask_rebirth(node, received_at)
        return [_said(scope, samples=samples), *self._confirm(scope, values, received_at)]

    def _declare(self, scope: Scope, message: Payload) -> None:
        """Record the aliases, datatypes and names a BIRTH declares."""
        for metric in message.metrics:
            try:
                native = text(metric.name) if metric.HasField("name") else ""
                if not native:
                    continue
                if metric.HasField("alias"):
                    scope.aliases[metric.alias] = native
                if metric.HasField("datatype"):
                    scope.types[native] = metric.datatype
                scope.mapped[native] = metric_name(native)
                scope.names[scope.mapped[native]] = native
            except Skipped:
                pass  # counted when its value is read

    def _samples(self, scope: Scope, message: Payload,
                 received_at: datetime) -> tuple[list[Sample], dict[str, Any]]:
        """The message's metrics as samples, one per timestamp, and the latest value of each metric."""
        default_ms = message.timestamp if message.HasField("timestamp") else None
        latest_ms = min(MAX_MS, epoch_ms(received_at + self.max_skew))
        by_ts: dict[int | None, dict[str, Any]] = {}
        values: dict[str, Any] = {}
        for metric in message.metrics:
            try:
                name, value = self._metric(scope, metric)
            except Skipped as skipped:
                self.counts[f"skipped_{skipped.why}"] += 1
                continue
            ms = metric.timestamp if metric.HasField("timestamp") else default_ms
            if ms is not None and ms > latest_ms:
                self.counts["skipped_bad_timestamp"] += 1
                continue
            by_ts.setdefault(ms, {})[name] = value
            values[name] = value
        samples = [Sample(ts=ms_to_datetime(ms), data=data) if ms is not None
                   else Sample(ts=received_at, data=data, assigned=True) for ms, data in by_ts.items()]
        return samples, values

    def _metric(self, scope: Scope, metric: Metric) -> tuple[str, Any]:
        native = text(metric.name) if metric.HasField("name") else scope.aliases.get(metric.alias)
        if native is None:
            raise Skipped("unknown_alias")
        if native == BDSEQ or native.startswith(CONTROL_PREFIXES):
            raise Skipped("control")
        name = scope.mapped.get(native)
        if name is None:
            name = metric_name(native)
            if len(scope.mapped) < MAX_NAMES_PER_SCOPE:  # a DATA may name metrics its BIRTH did not: bounded
                scope.mapped[native] = name
        return name, value_of(metric, datatype_of(metric, scope.types.get(native)))

    # --- commands and rebirths -------------------------------------------------------------

    def _confirm(self, scope: Scope, values: dict[str, Any], received_at: datetime) -> list[Said]:
        """A write succeeds once the device has reported each written metric with the value written."""
        pending = self._pending.get(scope.device_id)
        if not pending:
            return []
        said: list[Said] = []
        for write in list(pending):
            if write.error:  # refused before it was sent: failed with the reason, now that the device speaks
                pending.remove(write)
                said.append(_said(scope, response=CommandResponse(
                    command_id=write.command_id, ok=False, result=None, error=write.error)))
                continue
            for name in [n for n, v in write.expected.items() if n in values and _same(values[n], v)]:
                del write.expected[name]
            if not write.expected or write.expires_at <= received_at:
                pending.remove(write)
            if not write.expected:
                said.append(_said(scope, response=CommandResponse(
                    command_id=write.command_id, ok=True, result={"confirmed": write.written}, error="")))
        if not pending:
            del self._pending[scope.device_id]
        return said

    def _ask_rebirth(self, node: Node, received_at: datetime) -> None:
        """Queue one NCMD `Node Control/Rebirth`, at most one per node per `rebirth_interval`."""
        if node.rebirth_asked is not None and received_at - node.rebirth_asked < self.rebirth_interval:
            return
        node.rebirth_asked = received_at
        self.counts["rebirth_requested"] += 1
        topic = node_topic(node.group, NCMD, node.edge)
        self._replies[topic] = (topic, rebirth_payload(received_at), REBIRTH_QOS)


def _said(scope: Scope, **said: Any) -> Said:
    return Said(scope.device_id, child_of=scope.child_of, **said)


def _parse(payload: bytes) -> Payload:
    try:
        message: Payload = Payload.FromString(payload)
    except (DecodeError, RecursionError, ValueError):
        raise PayloadInvalid("not_protobuf", "payload is not a Sparkplug B protobuf Payload") from None
    return message


def _bdseq(message: Payload) -> int | None:
    for metric in message.metrics:
        if metric.name == BDSEQ and metric.WhichOneof("value") in ("long_value", "int_value"):
            return int(metric.long_value if metric.HasField("long_value") else metric.int_value)
    return None


__all__ = ["REBIRTH", "SparkplugDecoder", "epoch_ms", "node_device_id"]
