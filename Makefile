# iotgw — `make run` starts the all-in-one gateway; `make test` runs the whole suite.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
HOST   ?= 127.0.0.1
PORT   ?= 8000
MQTT_PORT ?= 1883
# CoAP devices, in plain mode (the banner says so): docs/transports/coap.md.
COAP_PORT ?= 5683

.PHONY: venv run test lint bench migrate demo clean sparkplug-proto

venv: $(VENV)/.installed

# requirements-test.lock is the runtime tree (requirements.lock, all the image installs) plus test tooling.
$(VENV)/.installed: requirements.lock requirements-test.lock pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements-test.lock
	touch $@

migrate: venv
	$(BIN)/python manage.py migrate --noinput -v0

demo: migrate
	$(BIN)/python manage.py demo

run: demo
	$(BIN)/python manage.py collectstatic --noinput -v0
	$(BIN)/python manage.py gateway --host $(HOST) --port $(PORT) --mqtt-port $(MQTT_PORT) --coap-port $(COAP_PORT) --coap-plain --simulate 3

test: venv
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# The floor plan (docs/architecture.md): ruff, the import contracts, then the types of core, devices and bridge.
lint: venv
	$(BIN)/ruff check .
	$(BIN)/lint-imports
	$(BIN)/mypy

bench: venv
	$(BIN)/python -m bench $(BENCH_ARGS)

# Regenerate core/sparkplug/sparkplug_b_pb2.py(i) from the Eclipse Tahu .proto beside it, with a throwaway
# generator (grpcio-tools is not a dependency: the committed code needs only the protobuf runtime it pins).
SPB := core/sparkplug
sparkplug-proto:
	$(PYTHON) -m venv var/protoc-venv
	var/protoc-venv/bin/python -m pip install --quiet grpcio-tools==1.85.1 protobuf==7.36.2
	cd $(SPB) && ../../var/protoc-venv/bin/python -m grpc_tools.protoc --proto_path=. --python_out=. --pyi_out=. sparkplug_b.proto

clean:
	rm -rf $(VENV) db.sqlite3* staticfiles var test-output
