# One image for the web (Daphne) and bridge (runworker) processes of compose.yaml. It holds the runtime
# dependencies only (requirements.lock): test tooling (pytest, Playwright, ruff) is in requirements-test.lock.
FROM python:3.11-slim
ENV PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /app
COPY requirements.lock ./
RUN pip install -r requirements.lock
COPY . .
RUN DJANGO_DEBUG=0 python manage.py collectstatic --noinput -v0 \
    && groupadd --system --gid 10001 iotgw \
    && useradd --system --uid 10001 --gid iotgw --home-dir /app --shell /usr/sbin/nologin iotgw \
    && mkdir -p /app/var && chown iotgw:iotgw /app/var
# Not root: the processes need to write nothing but var/ (the simulator's secrets).
USER 10001:10001
EXPOSE 8000
CMD ["daphne", "-b", "0.0.0.0", "-p", "8000", "--proxy-headers", "iotgw.asgi:application"]
