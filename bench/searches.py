"""What the dataset's search blocks look like after a run: leaks, ranks, CoTs kept.

    python -m bench.searches [--database-url URL] [--top-k 10]

Reads the database of a run on any library (`DATABASE_URL`, else the embedded one of
`$ROCQCOT_HOME`) and reports, over the search blocks that have a target, with the query step 8
kept:

- the share whose query contains the target's statement (whitespace aside; target <= 5%) or
  its name (as a whole word; target 0);
- the share whose query is nearly the target's own text: token Jaccard > 0.8 with its
  docstring or with its embedded text (target <= 10%: a describer that writes the docstring
  and the query from one sentence has only moved the leak);
- the share whose target ranks in the top k (by its real rank: a target put in the results
  because step 6 wrote its docstring does not count; target >= 90%), and the share whose
  target is no dictionary entry at all (a name of a file the dictionary does not cover);
- the share of CoTs step 9 keeps (target >= 60%), and why the others were not kept.

The last line is `RESULT statement=... name=... jaccard=... top_k=... kept=... searches=...`.
"""

from __future__ import annotations

import argparse
import collections
import os
import re

import sqlalchemy as sa

from app.db import engine as db
from app.db.models import Cot, LibraryObject, SearchBlock
from app.describe import jaccard, statement_body
from app.entries import EntryFacts, dense_text


def share(count: int, total: int) -> str:
    return f"{count}/{total} ({100 * count / total:.1f}%)" if total else "0/0"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--database-url", help="the run's database (default: the embedded one)")
    parser.add_argument("--top-k", type=int, default=10)
    args = parser.parse_args()
    if args.database_url:
        os.environ["DATABASE_URL"] = args.database_url
    db.ensure_schema()  # a run of an earlier rocqcot: its schema brought to this one's
    with db.session_factory()() as session:
        facts = {
            row.fqn: EntryFacts(
                row.id,
                row.fqn,
                row.kind,
                row.name,
                row.fullname,
                row.docstring,
                row.docstring_source,
            )
            for row in session.execute(
                sa.select(LibraryObject).order_by(LibraryObject.library_order.desc())
            ).scalars()
        }
        blocks = session.execute(
            sa.select(SearchBlock.query, SearchBlock.target_fqn, SearchBlock.target_rank).where(
                SearchBlock.target_fqn.is_not(None)
            )
        ).all()
        verdicts = session.execute(sa.select(Cot.valid, Cot.invalid_reason)).all()
    statement = name = close = found = missing = 0
    for query, target, rank in blocks:
        entry = facts.get(target)
        missing += entry is None
        flat = " ".join(query.split())
        body = statement_body(entry.fullname or "") if entry else ""
        short = target.rsplit(".", 1)[-1]
        statement += bool(body) and body in flat
        name += re.search(rf"(?<![\w']){re.escape(short)}(?![\w'])", flat) is not None
        if entry is not None:
            texts = [entry.docstring or "", dense_text(entry)]
            close += any(jaccard(flat, text) > 0.8 for text in texts if text)
        found += rank is not None and rank <= args.top_k
    total = len(blocks)
    kept = sum(valid is True for valid, _ in verdicts)
    reasons = collections.Counter(
        re.sub(r"`[^`]*`|\d+", "…", reason) for valid, reason in verdicts if valid is False
    )
    print(f"target searches: {total}")
    print(f"  query contains the target's statement: {share(statement, total)}")
    print(f"  query contains the target's name: {share(name, total)}")
    print(f"  query nearly the target's docstring or embedded text: {share(close, total)}")
    print(f"  target in the top {args.top_k} (real rank): {share(found, total)}")
    print(f"  target not in the dictionary: {share(missing, total)}")
    print(f"CoTs kept by step 9: {share(kept, len(verdicts))}")
    for reason, count in reasons.most_common(5):
        print(f"  not kept ({count}): {reason}")
    print(
        f"RESULT statement={statement / max(1, total):.3f} name={name / max(1, total):.3f} "
        f"jaccard={close / max(1, total):.3f} top_k={found / max(1, total):.3f} "
        f"kept={kept / max(1, len(verdicts)):.3f} searches={total}"
    )


if __name__ == "__main__":
    main()
