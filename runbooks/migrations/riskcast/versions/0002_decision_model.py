"""RISKCAST 1.2: each decision names the model that made it, and a request
is decided once (a unique index: a database holding duplicate requests
fails this migration, as a real one would).

Revision ID: 0002
Revises: 0001
"""

from alembic import op

revision = "0002"
down_revision = "0001"


def upgrade():
    op.execute("alter table decisions add column model text not null default 'v1'")
    op.execute("create unique index decisions_request_id on decisions (request_id)")


def downgrade():
    op.execute("drop index decisions_request_id")
    op.execute("alter table decisions drop column model")
