# The rocqcot worker image: Debian's Rocq 8.16 and MathComp 1.15, and rocqcot itself.
FROM python:3.11-slim-bookworm
RUN apt-get update -qq \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        coq libcoq-mathcomp \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /rocqcot
COPY pyproject.toml README.md alembic.ini ./
COPY app app
COPY workers workers
COPY migrations migrations
RUN pip install --no-cache-dir .
ENTRYPOINT ["rocqcot"]
