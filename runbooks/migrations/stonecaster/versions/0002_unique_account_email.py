"""StoneCaster 1.2: an account has a display name, and an email belongs to
one account (a unique index: a database holding two accounts with the same
email fails this migration, as a real one would, with `could not create
unique index "accounts_email_key"`).

Revision ID: 0002
Revises: 0001
"""

from alembic import op

revision = "0002"
down_revision = "0001"


def upgrade():
    op.execute("alter table accounts add column display_name text")
    op.execute("create unique index accounts_email_key on accounts (email)")


def downgrade():
    op.execute("drop index accounts_email_key")
    op.execute("alter table accounts drop column display_name")
