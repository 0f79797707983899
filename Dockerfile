# QuantumTrade daemon image: paper mode on the embedded defaults unless configured otherwise.
#   docker build -t quantumtrade .
#   docker run --rm -p 127.0.0.1:8080:8080 -e QT_ADMIN__HOST=0.0.0.0 quantumtrade
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md LICENSE ./
COPY quantumtrade ./quantumtrade
RUN python -m venv /opt/quantumtrade && /opt/quantumtrade/bin/pip install --no-cache-dir .

FROM python:3.11-slim
RUN useradd --system --create-home --home-dir /var/lib/quantumtrade --shell /usr/sbin/nologin quantumtrade
COPY --from=build /opt/quantumtrade /opt/quantumtrade
COPY quantumtrade.toml /etc/quantumtrade/quantumtrade.toml
ENV PATH=/opt/quantumtrade/bin:$PATH \
    NUMBA_CACHE_DIR=/var/lib/quantumtrade/numba-cache \
    PYTHONUNBUFFERED=1
USER quantumtrade
WORKDIR /var/lib/quantumtrade
# Compile the numba kernels into the image's cache, so the container trades seconds after it
# starts instead of compiling for a minute or more.
RUN quantumtrade warmup
EXPOSE 8080
STOPSIGNAL SIGTERM
# /health answers 503 "starting" until trading starts (warm-up, restore, history fetch).
HEALTHCHECK --interval=30s --timeout=3s --start-period=60s CMD python -c "import urllib.request,sys; urllib.request.urlopen('http://127.0.0.1:8080/health', timeout=2)" || exit 1
ENTRYPOINT ["quantumtrade"]
CMD ["run", "--config", "/etc/quantumtrade/quantumtrade.toml"]
