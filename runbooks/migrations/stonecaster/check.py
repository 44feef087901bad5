"""StoneCaster's database checks, run by the runbook's command steps
against $DATABASE_URL (the same secret the migrations use):

  check.py revision   prints the alembic revision the database is at (the
                      revision a rollback downgrades to); connecting at all
                      is the seed's "verify database connectivity"
  check.py integrity  fails when a constraint is not validated or an index
                      is invalid (what an interrupted migration leaves), or
                      when a session points at no account; prints the
                      row counts it saw
"""

import os
import sys

from sqlalchemy import create_engine, pool, text

url = os.environ.get("DATABASE_URL")
if not url:
    raise SystemExit("DATABASE_URL is not set: the runbook's step sets it from a secret")
mode = sys.argv[1] if len(sys.argv) > 1 else ""

engine = create_engine(url, poolclass=pool.NullPool)
with engine.connect() as connection:
    if mode == "revision":
        found = connection.execute(text("select version_num from alembic_version")).scalar()
        if not found:
            raise SystemExit("the database has no alembic revision: it was never migrated")
        print(found)
    elif mode == "integrity":
        problems = []
        for (name,) in connection.execute(
            text("select conname from pg_constraint where not convalidated")
        ):
            problems.append(f"constraint {name} is not validated")
        for (name,) in connection.execute(
            text("select indexrelid::regclass::text from pg_index where not indisvalid")
        ):
            problems.append(f"index {name} is invalid")
        orphans = connection.execute(
            text(
                "select count(*) from sessions s left join accounts a on a.id = s.account_id"
                " where a.id is null"
            )
        ).scalar()
        if orphans:
            problems.append(f"{orphans} sessions point at no account")
        accounts = connection.execute(text("select count(*) from accounts")).scalar()
        sessions = connection.execute(text("select count(*) from sessions")).scalar()
        print(f"accounts={accounts} sessions={sessions}")
        if problems:
            raise SystemExit("data integrity: " + "; ".join(problems))
    else:
        raise SystemExit("usage: check.py revision|integrity")
