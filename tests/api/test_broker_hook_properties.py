"""Property test of the broker hooks in-process, on the test database: whatever a broker (or anyone) posts to
/mqtt/auth, /mqtt/acl or /mqtt/superuser, the answer is allow or deny in the broker's format, never a 500."""

from __future__ import annotations

import json
from urllib.parse import urlencode

import pytest
from django.test import Client
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from devices.services.devices import device_register

pytestmark = pytest.mark.django_db

TEXT = st.text(st.characters(codec=None, categories=None, exclude_categories=()), max_size=30)
VALUES = st.one_of(TEXT, st.integers(), st.none(), st.booleans(), st.sampled_from(["hookdev", "publish", "2"]))
FIELDS = st.dictionaries(st.sampled_from(["username", "password", "clientid", "topic", "action", "acc", "ip"]),
                         VALUES, max_size=6)


@pytest.fixture
def device():
    return device_register(device_id="hookdev")[0]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(hook=st.sampled_from(["auth", "acl", "superuser"]), fields=FIELDS, as_json=st.booleans(),
       fmt=st.sampled_from(["", "?format=emqx", "?format=go-auth"]))
def test_any_hook_request_is_allowed_or_denied(device, hook, fields, as_json, fmt):
    client = Client()
    if as_json:
        body = json.dumps(fields).encode("utf-8", "surrogatepass")
        response = client.post(f"/mqtt/{hook}{fmt}", body, content_type="application/json")
    else:
        form = {k: "" if v is None else str(v) for k, v in fields.items()}
        body = urlencode(form, encoding="utf-8", errors="surrogatepass")
        response = client.post(f"/mqtt/{hook}{fmt}", body, content_type="application/x-www-form-urlencoded")
    assert response.status_code in (200, 403), response.content
    answer = response.json()
    assert answer.get("result") in ("allow", "deny") or answer.get("ok") in (True, False)
