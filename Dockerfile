# The worker's own image. Run it with the host's docker socket and a work dir that has
# the same path on the host and in this container (or map it with --host-workdir):
#
#   docker run -d --name lanworker --stop-timeout 90 \
#     -v /var/run/docker.sock:/var/run/docker.sock \
#     --group-add "$(stat -c %g /var/run/docker.sock)" \
#     -v /srv/lanworker:/srv/lanworker -e LANWORKER_WORK_ROOT=/srv/lanworker \
#     -e LANWORKER_QUEUE=https://sqs.us-east-1.amazonaws.com/123456789012/jobs \
#     lanworker docker --allow-image 'registry.example.com/team/*'
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    LANWORKER_METRICS_PORT=9100 \
    LANWORKER_GRACE_PERIOD_S=60 \
    LANWORKER_LOG_FORMAT=json

RUN useradd --system --uid 10001 --home-dir /app --shell /usr/sbin/nologin lanworker

WORKDIR /app
COPY pyproject.toml README.md worker.py ./
COPY lanworker ./lanworker
COPY schemas ./schemas
RUN pip install --no-cache-dir -e . && chown -R root:root /app

USER lanworker
EXPOSE 9100
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python3", "-c", "import urllib.request,sys; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:9100/healthz', timeout=4).status == 200 else 1)"]

ENTRYPOINT ["python3", "/app/worker.py"]
CMD ["docker"]
