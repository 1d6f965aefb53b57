"""The judge's scores land in the ledger's ratings and in the estimates adaptive plans from."""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest

from llm_router.calls import CompleteArgs
from llm_router.engine import Engine

pytestmark = pytest.mark.anyio


async def test_a_judged_answer_becomes_a_judge_rating_and_moves_the_estimate(tmp_path: Path) -> None:
    from llm_router.config import settings_from_dict
    from llm_router.defaults import demo_config

    data = demo_config(str(tmp_path / "ledger.db"))
    for p in data["providers"]:
        p["mock"] = {"imitates": p["mock"]["imitates"]}  # no latency, no faults
    data["resilience"] = {"max_retries": 0}
    data["quality"] = {"judge_model": "anthropic:claude-sonnet-4-5", "judge_sample_rate": 1.0}
    engine = Engine(settings_from_dict(data, source="test"))
    try:
        result = await engine.complete(CompleteArgs(prompt="Name three primary colours.", task_type="listing",
                                                    model="openai:gpt-4o-mini"))
        assert engine.judge is not None
        with anyio.fail_after(10):
            while engine.judge.status()["judged"] + engine.judge.status()["failed"] < 1:
                await anyio.sleep(0.01)
        assert engine.judge.status()["judged"] == 1, engine.judge.status()
        rows = engine.ledger.query("SELECT request_id, source, model, task_type, rater FROM ratings")
        assert rows == [{"request_id": result.request_id, "source": "judge", "model": "openai:gpt-4o-mini",
                         "task_type": "listing", "rater": "anthropic:claude-sonnet-4-5"}]
        estimate = engine.board.estimate("openai:gpt-4o-mini", "listing")
        assert estimate.ratings == 1 and estimate.weight == pytest.approx(0.5, rel=1e-3)
        judged = engine.ledger.query("SELECT tag, status FROM requests WHERE tag = 'judge'")
        assert judged == [{"tag": "judge", "status": "ok"}]
        assert engine.quality_status()["judge"]["judged"] == 1
    finally:
        await engine.aclose()
