# The certs service with SoftHSM2 for the embedded default. For a real HSM, mount its PKCS#11
# module and set MF_CERTS_HSM_MODULE, MF_CERTS_HSM_TOKEN and MF_CERTS_HSM_PIN_FILE.
FROM python:3.11-slim-bookworm

RUN apt-get update \
 && apt-get install -y --no-install-recommends softhsm2 openssl \
 && rm -rf /var/lib/apt/lists/*

WORKDIR /app
COPY pyproject.toml README.md ./
COPY hsm ./hsm
COPY repository ./repository
COPY scheduler ./scheduler
COPY server ./server
RUN pip install --no-cache-dir .

RUN useradd --system --home /var/lib/certs certs && mkdir -p /var/lib/certs \
 && chown certs /var/lib/certs
USER certs
ENV SOFTHSM2_CONF=/var/lib/certs/softhsm2.conf \
    MF_CERTS_HTTP_PORT=8204
EXPOSE 8204
ENTRYPOINT ["certs"]
CMD ["serve"]
