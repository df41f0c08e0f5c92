# The rocqcot worker image: Debian's Rocq and MathComp, and rocqcot itself. The Debian release
# chooses the toolchain: bookworm (default) Coq 8.16 + MathComp 1.15, trixie Coq 8.20 +
# MathComp 2.3 (`docker build --build-arg DEBIAN=trixie .`).
ARG DEBIAN=bookworm
FROM python:3.11-slim-${DEBIAN}
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
