# One image for the web (Daphne) and bridge (runworker) processes of compose.yaml.
FROM python:3.11-slim
ENV PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
WORKDIR /app
COPY requirements.lock pyproject.toml ./
RUN pip install -r requirements.lock
COPY . .
RUN DJANGO_DEBUG=0 python manage.py collectstatic --noinput -v0
EXPOSE 8000
CMD ["daphne", "-b", "0.0.0.0", "-p", "8000", "iotgw.asgi:application"]
