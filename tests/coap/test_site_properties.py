"""Whatever a client sends, the CoAP site answers with a code of its own: never 5.00, never an exception."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

from aiocoap import Code, Message
from aiocoap.optiontypes import BlockOption
from channels.layers import InMemoryChannelLayer
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from coap.keys import DeviceKeys
from coap.site import DeviceSite
from coap.transport import CoapTransport
from core.dialect import IotgwDecoder
from devices.pipeline import IngestPipeline, Intake
from devices.pusher import Pusher
from devices.secrets import secret_hash
from devices.services.telemetry import IngestOutcome
from devices.stats import IngestStats

SECRET = "s3cret"


async def _accept_all(*, items, received_at, **_: object) -> IngestOutcome:
    return IngestOutcome(accepted=list(range(len(items))), samples={i: list(s.samples) for i, s in enumerate(items)})


async def _registry(ids: list[str]) -> dict[str, str]:
    return {d: secret_hash(SECRET) for d in ids}


class _Pipe:
    def __init__(self, request: Message) -> None:
        self.request = request
        self.responses: list[tuple[Message, bool]] = []

    def add_response(self, response: Message, is_last: bool = False) -> None:
        self.responses.append((response, is_last))


async def _answer(request: Message) -> list[tuple[Message, bool]]:
    intake, stats = Intake(), IngestStats()
    transport = CoapTransport(sink=intake, decoder=IotgwDecoder(max_payload=2048), stats=stats, max_payload=2048,
                              commit_wait=2.0)
    pipeline = IngestPipeline(intake=intake, stats=stats, pusher=Pusher(layer=InMemoryChannelLayer(), stats=stats),
                              store=_accept_all)
    site = DeviceSite(transport, keys=DeviceKeys(fetch=_registry), plain=True)
    running = asyncio.ensure_future(pipeline.run())
    pipe = _Pipe(request)
    try:
        async with asyncio.timeout(5):
            await site.render_to_pipe(pipe)
    finally:
        running.cancel()
    return pipe.responses


segments = st.one_of(st.sampled_from(["devices", "d1", "telemetry", "status", "commands", "response", ""]),
                     st.text(max_size=20))
queries = st.lists(st.one_of(st.just(f"secret={SECRET}"), st.text(max_size=40).map(lambda t: "secret=" + t),
                             st.text(max_size=30)), max_size=3)
payloads = st.one_of(st.binary(max_size=3000), st.sampled_from([b'{"t": 1}', b'[{"t": 1}, {"ts": 0, "x": 2}]',
                                                                 b"online", b"offline", b'{"ts": "x", "a": 1}']))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(code=st.sampled_from([Code.GET, Code.POST, Code.PUT, Code.DELETE, Code.FETCH]),
       path=st.one_of(st.lists(segments, max_size=5),
                      st.tuples(st.just("devices"), st.just("d1"),
                                st.sampled_from(["telemetry", "status", "commands"])).map(list)),
       query=queries, payload=payloads,
       block=st.none() | st.tuples(st.integers(0, 40), st.booleans(), st.integers(0, 7)),
       size1=st.none() | st.integers(0, 10**6))
def test_any_request_gets_a_proper_answer_and_never_a_server_error(code, path, query, payload, block, size1):
    request = Message(code=code, uri_path=tuple(path), uri_query=tuple(query), payload=payload)
    if block is not None:
        request.opt.block1 = BlockOption.BlockwiseTuple(*block)
    if size1 is not None:
        request.opt.size1 = size1
    request.remote = SimpleNamespace(blockwise_key=("fuzz",))
    responses = asyncio.run(_answer(request))
    assert len(responses) == 1 and responses[0][1], responses
    answer = responses[0][0]
    assert answer.code != Code.INTERNAL_SERVER_ERROR, answer.payload
    assert answer.code.is_successful() or answer.code in {
        Code.CONTINUE, Code.BAD_REQUEST, Code.UNAUTHORIZED, Code.NOT_FOUND, Code.METHOD_NOT_ALLOWED,
        Code.REQUEST_ENTITY_INCOMPLETE, Code.REQUEST_ENTITY_TOO_LARGE, Code.TOO_MANY_REQUESTS}, answer
    if not answer.code.is_successful() and answer.code != Code.CONTINUE:
        assert answer.payload, "an error carries its diagnostic"
