"""ledger/: ratings of answered requests (the caller's ``rate`` and the judge's), on both backends:
their migration, the upsert that returns the rating it replaced, and reading them back for the
quality estimates. Rows come from ``ledger_rows.py``."""

from __future__ import annotations

import dataclasses

import pytest

from llm_router.ledger import LedgerBase
from llm_router.ledger.records import RatedRequest, RatingRow
from llm_router.types import InvalidInput

from .backends import Store, columns, tables
from .ledger_rows import DAY, MIGRATION_NAMES, row

RATING_COLUMNS = ["request_id", "source", "ts", "tag", "model", "task_type", "score", "comment", "criteria", "rater"]


def rating(request_id: str = "req-a", *, source: str = "caller", ts: str = f"{DAY}T12:00:00.000Z",
           score: float = 4.0, **kw: str | None) -> RatingRow:
    fields = {"tag": "team", "model": "anthropic:claude-haiku-4-5", "task_type": "code"} | kw
    return RatingRow(request_id, source, ts, score=score, **fields)  # type: ignore[arg-type]


def _indexes(led: LedgerBase) -> list[str]:
    from llm_router.ledger import Ledger

    if isinstance(led, Ledger):
        rows = led.query("SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'ratings' AND sql IS NOT NULL")
    else:
        rows = led.query("SELECT indexname AS name FROM pg_indexes WHERE schemaname = current_schema()"
                         " AND tablename = 'ratings' AND indexname NOT LIKE '%pkey'")
    return sorted(r["name"] for r in rows)


# -- the migration --------------------------------------------------------------------------------

def test_a_fresh_ledger_has_the_ratings_table_keyed_by_request_and_source(ledger: LedgerBase) -> None:
    assert ledger.migrations_applied[-1] == "014_create_ratings"
    assert columns(ledger, "ratings") == RATING_COLUMNS
    assert _indexes(ledger) == ["idx_ratings_ts"]
    assert ledger.meta("writer_schema") == "3"  # ratings are not spend: writers of schema 3 miss nothing


def test_a_ledger_from_before_ratings_gains_them_and_keeps_its_rows(
    store: Store, monkeypatch: pytest.MonkeyPatch,
) -> None:
    from llm_router.ledger import postgres, schema

    before = MIGRATION_NAMES.index("014_create_ratings")
    with monkeypatch.context() as m:
        m.setattr(schema, "MIGRATIONS", schema.MIGRATIONS[:before])
        m.setattr(postgres, "MIGRATIONS", postgres.MIGRATIONS[:before])
        old = store.open()
        try:
            assert "ratings" not in tables(old)
            old.record(kept := row(tag="team", task_type="code", cost_nusd=7))
        finally:
            old.close()

    led = store.open()
    try:
        assert led.migrations_applied == ["014_create_ratings"]
        assert columns(led, "ratings") == RATING_COLUMNS
        assert led.totals()["cost_nusd"] == 7
        assert led.meta("writer_schema") == "3"
        assert led.rated_request(kept.id) == RatedRequest(kept.id, "team", "code", "anthropic", "claude-haiku-4-5", "ok")
        assert led.put_rating(rating(kept.id)) is None
        assert led.ratings() == [rating(kept.id)]
    finally:
        led.close()


# -- writing --------------------------------------------------------------------------------------

def test_a_second_rating_of_the_same_source_replaces_the_first_and_returns_it(ledger: LedgerBase) -> None:
    first = rating(score=2.0, comment="missed the edge case")
    second = rating(ts=f"{DAY}T13:00:00.000Z", score=5.0, comment="fixed", model="openai:gpt-5-mini")

    assert ledger.put_rating(first) is None
    assert ledger.put_rating(second) == first
    assert ledger.ratings() == [second]
    assert ledger.put_rating(dataclasses.replace(second, score=3.0)) == second


def test_a_request_keeps_one_rating_per_source(ledger: LedgerBase) -> None:
    caller = rating(score=5.0)
    judge = rating(source="judge", ts=f"{DAY}T12:00:01.000Z", score=3.5, criteria='{"correct": 4, "complete": 3}',
                   rater="anthropic:claude-sonnet-4-5")
    other = rating("req-b", ts=f"{DAY}T12:00:02.000Z", score=1.0)
    for r in (caller, judge, other):
        assert ledger.put_rating(r) is None

    again = dataclasses.replace(judge, ts=f"{DAY}T12:00:03.000Z", score=4.5)
    assert ledger.put_rating(again) == judge
    assert ledger.ratings() == [caller, other, again]
    assert ledger.query("SELECT count(*) AS n FROM ratings")[0]["n"] == 3


def test_a_rating_keeps_a_unicode_comment_and_a_fractional_score(ledger: LedgerBase) -> None:
    r = rating(comment="Très bien — 正确 ✅\n\"quoted\" 'and' %s ?", score=3.75, tag="équipe", task_type="要約")
    ledger.put_rating(r)
    assert ledger.ratings() == [r]
    assert ledger.put_rating(rating(comment=None)) == r


# -- reading --------------------------------------------------------------------------------------

def test_rated_request_reads_a_recorded_row_and_none_for_an_unknown_id(ledger: LedgerBase) -> None:
    answered = row(tag="team", task_type="code", provider="openai", model="gpt-5-mini")
    failed = row(status="error", provider=None, model=None)
    ledger.record(answered)
    ledger.record(failed)

    assert ledger.rated_request(answered.id) == RatedRequest(answered.id, "team", "code", "openai", "gpt-5-mini", "ok")
    assert ledger.rated_request(answered.id).ref == "openai:gpt-5-mini"  # type: ignore[union-attr]
    got = ledger.rated_request(failed.id)
    assert got == RatedRequest(failed.id, "", "", None, None, "error") and got.ref is None
    assert ledger.rated_request("no-such-request") is None


def test_ratings_come_oldest_first_from_since_ts_and_the_newest_limit_of_them(ledger: LedgerBase) -> None:
    made = [rating(f"req-{n}", ts=f"{DAY}T12:00:0{n}.000Z", score=float(1 + n % 5)) for n in (3, 0, 4, 1, 2)]
    for r in made:
        ledger.put_rating(r)
    in_order = sorted(made, key=lambda r: r.ts)

    assert ledger.ratings() == in_order
    assert ledger.ratings(since_ts=f"{DAY}T12:00:02.000Z") == in_order[2:]
    assert ledger.ratings(limit=2) == in_order[3:]
    assert ledger.ratings(since_ts=f"{DAY}T12:00:01.000Z", limit=3) == in_order[2:]
    assert ledger.ratings(since_ts=f"{DAY}T13:00:00.000Z") == []
    assert ledger.ratings(limit=0) == []


def test_ratings_of_the_same_moment_come_in_the_order_of_their_key(ledger: LedgerBase) -> None:
    same = [rating(rid, source=src) for rid, src in (("req-b", "judge"), ("req-a", "judge"), ("req-b", "caller"),
                                                       ("req-a", "caller"))]
    for r in same:
        ledger.put_rating(r)
    ordered = sorted(same, key=lambda r: (r.request_id, r.source))
    assert ledger.ratings() == ordered
    assert ledger.ratings(limit=1) == ordered[-1:]


def test_a_negative_limit_is_refused_naming_it(ledger: LedgerBase) -> None:
    with pytest.raises(InvalidInput, match="limit") as e:
        ledger.ratings(limit=-1)
    assert e.value.field == "limit"


# -- upkeep leaves them be ------------------------------------------------------------------------

def test_pruning_and_rebuilding_the_sums_keep_every_rating(ledger: LedgerBase) -> None:
    old = row(day="2025-01-02", task_type="code")
    ledger.record(old)
    kept = rating(old.id, ts="2025-01-02T12:00:00.000Z")
    ledger.put_rating(kept)

    assert ledger.prune("2025-03-01") == 1
    assert ledger.rated_request(old.id) is None
    ledger.rebuild_rollups(lambda ts: ts[:10])
    assert ledger.ratings() == [kept]


@pytest.mark.postgres
@pytest.mark.parametrize("there_before", [False, True])
def test_a_rating_racing_another_servers_returns_the_one_it_replaced(pg_url: str, there_before: bool) -> None:
    """Another server's transaction writes the same request's rating first and commits while this
    one waits on it: the rating returned as replaced is that one, whether it was the first or not."""
    import threading
    import time

    import psycopg

    from llm_router.ledger import postgres

    led = postgres.PostgresLedger(pg_url)
    try:
        if there_before:
            led.put_rating(rating(score=1.0))
        theirs, ours = rating(score=2.0, comment="theirs"), rating(score=5.0, comment="ours")
        got: list[RatingRow | None] = []
        with psycopg.connect(pg_url) as other:
            other.execute("INSERT INTO ratings (request_id, source, ts, tag, model, task_type, score, comment, criteria,"
                          " rater) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s) ON CONFLICT (request_id, source)"
                          " DO UPDATE SET score = excluded.score, comment = excluded.comment",
                          dataclasses.astuple(theirs))
            writer = threading.Thread(target=lambda: got.append(led.put_rating(ours)))
            writer.start()
            deadline = time.monotonic() + 10
            while not other.execute(  # wait until the ledger's statement waits on the other's row
                "SELECT 1 FROM pg_stat_activity WHERE application_name = %s AND wait_event_type = 'Lock'",
                (postgres.APPLICATION_NAME,),
            ).fetchall():
                assert time.monotonic() < deadline, "the ledger's write never waited on the other transaction"
                time.sleep(0.01)
            other.commit()
            writer.join(timeout=10)
        assert got == [theirs]
        assert led.ratings() == [ours]
    finally:
        led.close()
