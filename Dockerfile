# The worker's own image. Build it with scripts/docker-build.sh, which needs no registry:
# it makes the base image from Debian packages (debootstrap + docker import) unless
# BASE_IMAGE names another one with python3 and venv (e.g. python:3.11-slim), and installs
# the project from a wheelhouse it builds beside this file, so the build has no network.
#
# Run it with the host's docker socket and a work dir that has the same path on the host
# and in this container (or map it with --host-workdir):
#
#   docker run -d --name lanworker --stop-timeout 90 \
#     -v /var/run/docker.sock:/var/run/docker.sock \
#     --group-add "$(stat -c %g /var/run/docker.sock)" \
#     -v /srv/lanworker:/srv/lanworker -e LANWORKER_WORK_ROOT=/srv/lanworker \
#     -e LANWORKER_QUEUE=https://sqs.us-east-1.amazonaws.com/123456789012/jobs \
#     lanworker docker --allow-image 'registry.example.com/team/*'
ARG BASE_IMAGE=lanworker-base:bookworm
FROM ${BASE_IMAGE}

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PATH=/opt/lanworker/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    LANWORKER_METRICS_PORT=9100 \
    LANWORKER_GRACE_PERIOD_S=60 \
    LANWORKER_LOG_FORMAT=json

RUN useradd --system --uid 10001 --home-dir /nonexistent --no-create-home --shell /usr/sbin/nologin lanworker

COPY build/wheels /tmp/wheels
RUN python3 -m venv /opt/lanworker \
    && /opt/lanworker/bin/pip install --no-cache-dir --no-index --find-links /tmp/wheels lanworker \
    && rm -rf /tmp/wheels

USER lanworker
WORKDIR /tmp
EXPOSE 9100
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python3", "-c", "import urllib.request,sys; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:9100/healthz', timeout=4).status == 200 else 1)"]

ENTRYPOINT ["lanworker"]
CMD ["docker"]
