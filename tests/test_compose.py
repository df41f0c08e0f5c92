"""docker-compose.yml stays in step with the CLI (no Docker engine runs here to start it)."""

from __future__ import annotations

from pathlib import Path

import yaml

from app.cli import app
from app.db.enums import Stage

COMPOSE = Path(__file__).resolve().parents[1] / "docker-compose.yml"


def test_compose_has_a_pgvector_database_and_workers_for_every_pipeline_stage() -> None:
    services = yaml.safe_load(COMPOSE.read_text())["services"]
    assert "pgvector" in services["db"]["image"]
    covered: set[Stage] = set()
    for name, service in services.items():
        if name == "db":
            continue
        command = service["command"]
        assert command[0] == "worker" and "--forever" in command, name
        assert service["environment"]["DATABASE_URL"].startswith("postgresql://")
        stages = [command[i + 1] for i, arg in enumerate(command) if arg == "--stage"]
        covered.update(Stage(stage) for stage in stages)  # a bad name raises here
    assert covered == set(Stage) - {Stage.probe}


def test_worker_command_accepts_the_compose_flags() -> None:
    import typer.main

    worker = typer.main.get_command(app).commands["worker"]
    options = {opt for param in worker.params for opt in param.opts}
    assert {"--stage", "--forever", "--concurrency"} <= options
