# The Riverline worker image that docker-compose.yml runs (the broker is apache/kafka).
FROM python:3.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    RIVERLINE_HOME=/var/lib/riverline

RUN useradd --create-home --uid 10001 riverline \
    && mkdir -p /var/lib/riverline \
    && chown riverline /var/lib/riverline

WORKDIR /app

# The dependencies first, so a code change does not reinstall them: pyproject.toml's
# runtime ones (not the dev tools), at the versions requirements.lock pins.
COPY pyproject.toml README.md requirements.lock ./
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" > /tmp/requirements.txt \
    && sed -e '/--hash=/d' -e 's/ \\$//' requirements.lock > /tmp/constraints.txt \
    && pip install -r /tmp/requirements.txt -c /tmp/constraints.txt \
    && rm /tmp/requirements.txt /tmp/constraints.txt

# Editable, as in development: Riverline finds schemas/ and pipelines/ beside streams/.
# benchmarks/ stays out of the worker image: there `riverline bench` says it is not
# installed (streams/cli/plugins.py) and every other command works.
COPY streams ./streams
COPY agents ./agents
COPY schemas ./schemas
COPY pipelines ./pipelines
RUN pip install --no-deps -e .

USER riverline
EXPOSE 6066
CMD ["riverline", "worker", "--pipeline", "pipelines/phishing.toml"]
