"""RastUp 1.2: each booking has a status, and a payment pays for one
booking only (a unique index: a database holding two bookings with one
payment reference fails this migration, as a real one would). Additive, so
1.0.0 runs on it too (the seed's two-phase rule).

Revision ID: 0002
Revises: 0001
"""

from alembic import op

revision = "0002"
down_revision = "0001"


def upgrade():
    op.execute("alter table bookings add column status text not null default 'confirmed'")
    op.execute("create unique index bookings_payment_ref on bookings (payment_ref)")


def downgrade():
    op.execute("drop index bookings_payment_ref")
    op.execute("alter table bookings drop column status")
