"""The whole pipeline schema: every table, the stage and status enums, the status view.

Revision ID: 0001
Revises:
Create Date: 2026-11-25 14:49:35.121502
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from pgvector.sqlalchemy import Vector
from sqlalchemy.dialects import postgresql

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

STAGES = (
    "build",
    "extract",
    "haves",
    "select",
    "evaluate",
    "cot",
    "docstring",
    "search",
    "repair",
    "best_query",
    "filter",
    "split",
    "probe",
)
STAGE = postgresql.ENUM(*STAGES, name="stage", create_type=False)
STATUS = postgresql.ENUM("pending", "running", "done", "failed", name="status", create_type=False)
STAGED_TABLES = (
    "libraries",
    "source_files",
    "theorems",
    "library_objects",
    "cots",
    "search_blocks",
    "jobs",
    "probes",
)


def stage_columns() -> list[sa.Column]:
    """The columns every staged table carries (`StageColumns` in the models)."""
    return [
        sa.Column("stage", STAGE, nullable=False),
        sa.Column("status", STATUS, nullable=False),
        sa.Column("attempts", sa.Integer(), server_default="0", nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("lease_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("worker", sa.Text(), nullable=True),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
    ]


def create_status_view() -> None:
    """`stage_status`: rows per table, stage and status, for `rocqcot status` and for users."""
    selects = [
        f"SELECT '{table}'::text AS table_name, stage, status, count(*) AS rows,"
        f" max(updated_at) AS last_update FROM {table} GROUP BY stage, status"
        for table in STAGED_TABLES
    ]
    op.execute("CREATE VIEW stage_status AS " + " UNION ALL ".join(selects))


def upgrade() -> None:
    op.execute("CREATE EXTENSION IF NOT EXISTS vector")
    STAGE.create(op.get_bind())
    STATUS.create(op.get_bind())
    op.create_table(
        "jobs",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("params", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("result", postgresql.JSONB(astext_type=sa.Text()), nullable=True),
        *stage_columns(),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("name"),
    )
    op.create_index("ix_jobs_stage_status", "jobs", ["stage", "status"], unique=False)
    op.create_table(
        "libraries",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("input_path", sa.Text(), nullable=False),
        sa.Column("output_path", sa.Text(), nullable=False),
        sa.Column("logical_prefix", sa.Text(), nullable=False),
        sa.Column("rocq_version", sa.Text(), nullable=True),
        sa.Column("extractor_version", sa.Text(), nullable=True),
        sa.Column("settings", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        *stage_columns(),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("name"),
    )
    op.create_index("ix_libraries_stage_status", "libraries", ["stage", "status"], unique=False)
    op.create_table(
        "llm_calls",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("request_hash", sa.Text(), nullable=False),
        sa.Column("model", sa.Text(), nullable=False),
        sa.Column("request", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("response", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("prompt_tokens", sa.Integer(), nullable=False),
        sa.Column("completion_tokens", sa.Integer(), nullable=False),
        sa.Column("cost_usd", sa.Double(), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("request_hash"),
    )
    op.create_table(
        "probes",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("payload", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("result", postgresql.JSONB(astext_type=sa.Text()), nullable=True),
        sa.Column("writes", sa.Integer(), server_default="0", nullable=False),
        *stage_columns(),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_probes_stage_status", "probes", ["stage", "status"], unique=False)
    op.create_table(
        "source_files",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("library_id", sa.Integer(), nullable=False),
        sa.Column("path", sa.Text(), nullable=False),
        sa.Column("logical_path", sa.Text(), nullable=False),
        sa.Column("from_rocq", sa.Boolean(), server_default="false", nullable=False),
        sa.Column("content_hash", sa.Text(), nullable=False),
        sa.Column("cleaned_text", sa.Text(), nullable=False),
        sa.Column("build_status", sa.Text(), nullable=True),
        sa.Column("build_error", sa.Text(), nullable=True),
        sa.Column("build_seconds", sa.Double(), nullable=True),
        sa.Column("dependency_order", sa.Integer(), nullable=True),
        sa.Column("requires", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("sentences", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("glob", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("header_docs", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("theorems_skipped", sa.Integer(), server_default="0", nullable=False),
        *stage_columns(),
        sa.ForeignKeyConstraint(["library_id"], ["libraries.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("library_id", "logical_path"),
    )
    op.create_index(
        "ix_source_files_stage_status", "source_files", ["stage", "status"], unique=False
    )
    op.create_table(
        "library_objects",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("file_id", sa.Integer(), nullable=False),
        sa.Column("fqn", sa.Text(), nullable=False),
        sa.Column("kind", sa.Text(), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("fullname", sa.Text(), nullable=True),
        sa.Column("type", sa.Text(), nullable=True),
        sa.Column("scope", sa.Text(), nullable=True),
        sa.Column("line", sa.Integer(), nullable=True),
        sa.Column("historic", sa.Text(), nullable=True),
        sa.Column("library_order", sa.BigInteger(), nullable=False),
        sa.Column("docstring", sa.Text(), nullable=True),
        sa.Column("docstring_source", sa.Text(), nullable=True),
        sa.Column("force_result", sa.Boolean(), server_default="false", nullable=False),
        *stage_columns(),
        sa.ForeignKeyConstraint(["file_id"], ["source_files.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("fqn", "kind"),
    )
    op.create_index("ix_library_objects_order", "library_objects", ["library_order"], unique=False)
    op.create_index(
        "ix_library_objects_stage_status", "library_objects", ["stage", "status"], unique=False
    )
    op.create_table(
        "theorems",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("fqn", sa.Text(), nullable=False),
        sa.Column("file_id", sa.Integer(), nullable=False),
        sa.Column("parent_id", sa.Integer(), nullable=True),
        sa.Column("have_index", sa.Integer(), nullable=True),
        sa.Column("kind", sa.Text(), nullable=False),
        sa.Column("statement", sa.Text(), nullable=False),
        sa.Column("proof", sa.Text(), nullable=False),
        sa.Column("tagged_proof", sa.Text(), nullable=True),
        sa.Column("line", sa.Integer(), nullable=True),
        sa.Column("character", sa.Integer(), nullable=True),
        sa.Column("byte_start", sa.Integer(), nullable=True),
        sa.Column("byte_end", sa.Integer(), nullable=True),
        sa.Column("source_hash", sa.Text(), nullable=True),
        sa.Column("extractor_version", sa.Text(), nullable=True),
        sa.Column("tactics", sa.Integer(), nullable=True),
        sa.Column("selected", sa.Boolean(), server_default="false", nullable=False),
        sa.Column("pool", sa.Text(), nullable=True),
        sa.Column("select_rank", sa.Integer(), nullable=True),
        sa.Column("evaluation", postgresql.JSONB(astext_type=sa.Text()), nullable=True),
        *stage_columns(),
        sa.ForeignKeyConstraint(["file_id"], ["source_files.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["parent_id"], ["theorems.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("fqn"),
    )
    op.create_index("ix_theorems_file", "theorems", ["file_id", "byte_start"], unique=False)
    op.create_index("ix_theorems_stage_status", "theorems", ["stage", "status"], unique=False)
    op.create_table(
        "annotations",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("theorem_id", sa.Integer(), nullable=False),
        sa.Column("kind", sa.Text(), nullable=False),
        sa.Column("step_index", sa.Integer(), server_default="-1", nullable=False),
        sa.Column("content", sa.Text(), nullable=False),
        sa.Column("writer", sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(["theorem_id"], ["theorems.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("theorem_id", "kind", "step_index"),
    )
    op.create_table(
        "cots",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("theorem_id", sa.Integer(), nullable=False),
        sa.Column("writer", sa.Text(), nullable=False),
        sa.Column("blocks", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("valid", sa.Boolean(), nullable=True),
        sa.Column("invalid_reason", sa.Text(), nullable=True),
        *stage_columns(),
        sa.ForeignKeyConstraint(["theorem_id"], ["theorems.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("theorem_id"),
    )
    op.create_index("ix_cots_stage_status", "cots", ["stage", "status"], unique=False)
    op.create_table(
        "haves",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("theorem_id", sa.Integer(), nullable=False),
        sa.Column("index", sa.Integer(), nullable=False),
        sa.Column("tactic", sa.Text(), nullable=False),
        sa.Column("statement", sa.Text(), nullable=False),
        sa.Column("proof", sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(["theorem_id"], ["theorems.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("theorem_id", "index"),
    )
    op.create_table(
        "object_embeddings",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("object_id", sa.Integer(), nullable=False),
        sa.Column("model", sa.Text(), nullable=False),
        sa.Column("dimensions", sa.Integer(), nullable=False),
        sa.Column("text_hash", sa.Text(), nullable=False),
        sa.Column("embedding", Vector(), nullable=False),
        sa.ForeignKeyConstraint(["object_id"], ["library_objects.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("object_id", "model"),
    )
    op.create_table(
        "proof_steps",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("theorem_id", sa.Integer(), nullable=False),
        sa.Column("index", sa.Integer(), nullable=False),
        sa.Column("chain", sa.Text(), nullable=False),
        sa.Column("goals", sa.Text(), nullable=False),
        sa.Column("goals_with_gvars", sa.Text(), nullable=False),
        sa.Column("goal_diff", sa.Text(), nullable=False),
        sa.Column("dependencies", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.ForeignKeyConstraint(["theorem_id"], ["theorems.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("theorem_id", "index"),
    )
    op.create_table(
        "examples",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("cot_id", sa.Integer(), nullable=False),
        sa.Column("index", sa.Integer(), nullable=False),
        sa.Column("blocks", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.ForeignKeyConstraint(["cot_id"], ["cots.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("cot_id", "index"),
    )
    op.create_table(
        "search_blocks",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("cot_id", sa.Integer(), nullable=False),
        sa.Column("block_index", sa.Integer(), nullable=False),
        sa.Column("target_fqn", sa.Text(), nullable=True),
        sa.Column("query", sa.Text(), nullable=False),
        sa.Column("target_rank", sa.Integer(), nullable=True),
        sa.Column("results", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        *stage_columns(),
        sa.ForeignKeyConstraint(["cot_id"], ["cots.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("cot_id", "block_index"),
    )
    op.create_index(
        "ix_search_blocks_stage_status", "search_blocks", ["stage", "status"], unique=False
    )
    op.create_table(
        "search_queries",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("search_block_id", sa.Integer(), nullable=False),
        sa.Column("candidate_index", sa.Integer(), nullable=False),
        sa.Column("query", sa.Text(), nullable=False),
        sa.Column("think", sa.Text(), nullable=True),
        sa.Column("writer", sa.Text(), nullable=False),
        sa.Column("target_rank", sa.Integer(), nullable=True),
        sa.Column("results", postgresql.JSONB(astext_type=sa.Text()), nullable=True),
        sa.Column("chosen", sa.Boolean(), server_default="false", nullable=False),
        sa.ForeignKeyConstraint(["search_block_id"], ["search_blocks.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("search_block_id", "candidate_index"),
    )
    create_status_view()


def downgrade() -> None:
    op.execute("DROP VIEW stage_status")
    op.drop_table("search_queries")
    op.drop_index("ix_search_blocks_stage_status", table_name="search_blocks")
    op.drop_table("search_blocks")
    op.drop_table("examples")
    op.drop_table("proof_steps")
    op.drop_table("object_embeddings")
    op.drop_table("haves")
    op.drop_index("ix_cots_stage_status", table_name="cots")
    op.drop_table("cots")
    op.drop_table("annotations")
    op.drop_index("ix_theorems_stage_status", table_name="theorems")
    op.drop_index("ix_theorems_file", table_name="theorems")
    op.drop_table("theorems")
    op.drop_index("ix_library_objects_stage_status", table_name="library_objects")
    op.drop_index("ix_library_objects_order", table_name="library_objects")
    op.drop_table("library_objects")
    op.drop_index("ix_source_files_stage_status", table_name="source_files")
    op.drop_table("source_files")
    op.drop_index("ix_probes_stage_status", table_name="probes")
    op.drop_table("probes")
    op.drop_table("llm_calls")
    op.drop_index("ix_libraries_stage_status", table_name="libraries")
    op.drop_table("libraries")
    op.drop_index("ix_jobs_stage_status", table_name="jobs")
    op.drop_table("jobs")
    STATUS.drop(op.get_bind())
    STAGE.drop(op.get_bind())
