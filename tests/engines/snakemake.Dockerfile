# The image Snakemake's TES tasks run in (tests/engines): the project's Debian base with
# snakemake and its S3 storage plugin from a wheelhouse made on the host. PIP_NO_INDEX and
# PIP_FIND_LINKS let the job script's own `pip install` of the storage plugin work offline.
ARG BASE_IMAGE=lanworker-base:bookworm
FROM ${BASE_IMAGE}
COPY wheels /wheels
RUN python3 -m venv /opt/snakemake \
 && /opt/snakemake/bin/pip install -q --no-index --find-links /wheels snakemake snakemake-storage-plugin-s3
ENV PATH=/opt/snakemake/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    PIP_NO_INDEX=1 \
    PIP_FIND_LINKS=/wheels
