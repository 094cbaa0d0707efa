# The certs service with SoftHSM2 as its embedded HSM. Build it with docker/build, which makes the
# base image and the wheels first and then runs (BuildKit)
#   docker build --network none -f Dockerfile --build-arg BASE=IMAGE -t certs CONTEXT
# with a CONTEXT holding docker/certs-entrypoint, docker/certs-healthcheck and wheels/deps,
# wheels/app: nothing is fetched during the build. BASE is a Debian bookworm image with python3,
# python3-venv, softhsm2 and tini (docker/make-base-image makes one without any registry).
# State (token, PIN, CA certificate, CRL, SQLite) lives in the volume /var/lib/certs, owned by
# the user certs (uid 10001). For a real HSM, mount its PKCS#11 module and set
# MF_CERTS_HSM_MODULE, MF_CERTS_HSM_TOKEN and MF_CERTS_HSM_PIN_FILE.
ARG BASE=certs-base:bookworm
FROM ${BASE}

RUN groupadd --system --gid 10001 certs \
 && useradd --system --uid 10001 --gid certs --home-dir /var/lib/certs \
            --shell /usr/sbin/nologin certs \
 && mkdir -p /var/lib/certs \
 && chown certs:certs /var/lib/certs \
 && chmod 0700 /var/lib/certs
# The dependencies first: this layer is rebuilt only when they change.
RUN --mount=type=bind,source=wheels/deps,target=/tmp/wheels \
    python3 -m venv /opt/certs \
 && /opt/certs/bin/pip install --no-cache-dir --no-index --no-deps /tmp/wheels/*.whl
COPY certs-entrypoint certs-healthcheck /usr/local/bin/
RUN --mount=type=bind,source=wheels/app,target=/tmp/wheels \
    /opt/certs/bin/pip install --no-cache-dir --no-index --no-deps /tmp/wheels/*.whl \
 && /opt/certs/bin/pip check

ENV PATH=/opt/certs/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    MF_CERTS_HTTP_HOST=0.0.0.0 \
    MF_CERTS_HTTP_PORT=8204 \
    MF_CERTS_LOG_LEVEL=info \
    PYTHONDONTWRITEBYTECODE=1
VOLUME /var/lib/certs
WORKDIR /var/lib/certs
USER certs
EXPOSE 8204
HEALTHCHECK --interval=15s --timeout=5s --start-period=60s --retries=3 CMD ["certs-healthcheck"]
ENTRYPOINT ["tini", "--", "certs-entrypoint"]
CMD ["serve"]
