"""The build-and-check step of `stackbuild propose` on a real engine: a release's cpu image (built once a run
by the session's fixture, so here it is found by its content tag) proves itself with every smoke check.

The proposal's choices around this step (which move to hold back when a build or check fails, with what
evidence, and writing nothing on failure) are unit-tested with a check that fails on purpose
(tests/unit/test_propose.py); a whole proposal with a cold build of a new torch takes far longer than CI
has for one test, and is what `stackbuild propose` runs for each stack's next release."""

from __future__ import annotations

import pytest

from builder.lock.proposal import build_and_check
from builder.plan.build_plan import plan_for

pytestmark = pytest.mark.docker


def test_build_and_check_passes_a_built_release_with_every_smoke_check(stack_images, settings, docker_client):
    built = stack_images("alpaca-lora", "2026.11")

    def smoke_containers() -> set[str]:
        return {c.id for c in docker_client.containers.list(
            all=True, filters={"label": "io.stackbuild.smoke", "ancestor": built.ref.immutable})}

    before = smoke_containers()
    plan = plan_for("alpaca-lora", "2026.11", "cpu")
    events = []
    verdict = build_and_check(settings, on_event=events.append)(plan)
    assert verdict.ok, (verdict.what, verdict.evidence)
    assert any("is here already" in e.text for e in events), [e.text for e in events]  # no second build
    names = [check for check, _status, _detail in verdict.checks]
    assert names == [c.name for c in plan.checks]  # every check the image carries ran
    assert all(status in ("pass", "warn", "skip") for _check, status, _detail in verdict.checks)
    assert verdict.training  # what the training scripts' step did, in words (its runner, or why none ran)
    assert smoke_containers() - before == set()  # the smoke container went
