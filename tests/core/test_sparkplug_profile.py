"""The `sparkplug` profile kind: only edge nodes on the profile are read, their devices are children, broker grants."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest

from core.errors import PayloadInvalid
from core.profiles import Directory, Member, NotMember, ProfileDef, compile_profile
from core.router import ProfileRouter
from core.sparkplug.decoder import node_device_id
from core.sparkplug.profile import node_names
from core.sparkplug.sparkplug_b_pb2 import DataType, Payload
from core.transport import Outbound
from testing.sparkplug import EdgeNode

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
SPB = ProfileDef(name="sparkplug", kind="sparkplug", spec={})
NODE = "Plant1.Edge1"


@pytest.fixture
def router():
    router = ProfileRouter()
    router.update([SPB], Directory.of({NODE: Member("sparkplug")}))
    return router


def test_the_profile_subscribes_to_the_sparkplug_namespace(router):
    assert "spBv1.0/#" in router.filters()


def test_an_edge_node_on_the_profile_is_read_and_its_devices_are_children(router):
    node = EdgeNode()
    said = router("spBv1.0/Plant1/NBIRTH/Edge1", node.nbirth([{"name": "t", "datatype": DataType.Double,
                                                                "value": 1.0}]), received_at=NOW)
    assert [(s.device_id, s.online) for s in said] == [(NODE, True)]
    said = router("spBv1.0/Plant1/DBIRTH/Edge1/P1", node.next([]), received_at=NOW)
    assert [(s.device_id, s.child_of, s.online) for s in said] == [("Plant1.Edge1.P1", (NODE, "P1"), True)]


def test_an_edge_node_not_on_the_profile_is_refused_before_it_is_read(router):
    with pytest.raises(NotMember) as exc:
        router("spBv1.0/Plant1/NDATA/Other", EdgeNode().next([]), received_at=NOW)
    assert exc.value.reason == "wrong_profile"
    assert router.replies() == []  # no rebirth is asked of a node that is not ours


def test_rebirth_requests_reach_the_router_replies(router):
    with pytest.raises(PayloadInvalid, match="NBIRTH"):
        router("spBv1.0/Plant1/NDATA/Edge1", EdgeNode().next([]), received_at=NOW)
    (topic, payload, qos), = router.replies()
    assert topic == "spBv1.0/Plant1/NCMD/Edge1" and qos == 0
    assert Payload.FromString(payload).metrics[0].name == "Node Control/Rebirth"


def test_commands_to_a_node_before_its_birth_wait_and_after_it_are_ncmd(router):
    command = Outbound(command_id=uuid.uuid4(), device_id=NODE, name="write", params={"t": 2.0},
                       expires_at=NOW + timedelta(hours=1))
    with pytest.raises(ValueError, match="BIRTH"):
        router.command_message(command)
    router("spBv1.0/Plant1/NBIRTH/Edge1", EdgeNode().nbirth([{"name": "t", "datatype": DataType.Float,
                                                              "value": 1.0}]), received_at=NOW)
    message = router.command_message(command)
    assert message.topic == "spBv1.0/Plant1/NCMD/Edge1"
    assert Payload.FromString(message.payload).metrics[0].datatype == DataType.Float


def test_a_sparkplug_profile_takes_one_setting_and_nothing_else():
    for spec in ({}, {"create_children": True}, {"create_children": False}):
        compile_profile(ProfileDef(name="x", kind="sparkplug", spec=spec))
    for spec in ({"topics": []}, {"create_children": "yes"}, {"create_children": True, "topics": []}):
        with pytest.raises(PayloadInvalid):
            compile_profile(ProfileDef(name="x", kind="sparkplug", spec=spec))


@pytest.mark.parametrize(("group", "edge"), [("Plant1", "Edge1"), ("Sparkplug B Devices", "Edge Node 1"),
                                             ("a.b", "c.d"), ("grüße", "ab"), ("ab", "12")])
def test_an_edge_node_is_granted_its_own_topics(group, edge):
    device_id = node_device_id(group, edge)
    assert (group, edge) in node_names(device_id)
    grants = compile_profile(SPB).grants(device_id, Member("sparkplug"))
    assert f"spBv1.0/{group}/NBIRTH/{edge}" in grants.publish
    assert f"spBv1.0/{group}/DDATA/{edge}/+" in grants.publish
    assert f"spBv1.0/{group}/NCMD/{edge}" in grants.subscribe and "spBv1.0/STATE/+" in grants.subscribe
    for g, e in node_names(device_id):  # every pair granted is one whose node is this very device
        assert node_device_id(g, e) == device_id


def test_a_child_and_a_hashed_node_id_are_granted_nothing():
    assert compile_profile(SPB).grants("Plant1.Edge1.P1", Member("sparkplug", gateway=NODE, child="P1")).publish == ()
    hashed = node_device_id("x" * 60, "y" * 60)
    assert ("x" * 60, "y" * 60) not in node_names(hashed)  # cut and hashed: its own topics cannot be read back
    assert all(node_device_id(g, e) == hashed for g, e in node_names(hashed))
