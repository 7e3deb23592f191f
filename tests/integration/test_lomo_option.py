"""alpaca-lora --with lomo (its default release) on the cpu target: built once, it shares the plain image's layers, and
`stackbuild test` passes with the option's checks; each check is shown able to fail."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from builder.plan.build_plan import plan_build
from builder.profile.load import load_stack
from builder.smoke.run import run_smoke

from .conftest import TEST_LABEL

STACK, OPTIONS = "alpaca-lora", ("lomo",)
RELEASE = load_stack(STACK).default_release  # what `stackbuild build alpaca-lora --with lomo` builds
SITE = "/opt/venv/lib/python3.11/site-packages"


@pytest.fixture(scope="module")
def lomo_image(stack_images):
    return stack_images(STACK, RELEASE, OPTIONS)


def _layers(client, image_id: str) -> list[str]:
    return client.images.get(image_id).attrs["RootFS"]["Layers"]


def test_the_option_image_shares_every_layer_before_its_last_install_with_the_plain_image(
        lomo_image, stack_images, docker_client):
    plain = _layers(docker_client, stack_images(STACK, RELEASE).image_id)
    lomo = _layers(docker_client, lomo_image.image_id)
    shared = next((i for i, (a, b) in enumerate(zip(plain, lomo)) if a != b), min(len(plain), len(lomo)))
    # the lock keeps every version of the plain image, so only the last five layers are the option's own:
    # the [last] lock and its install (peft + lomo-optim), stackbuild's checks, its manifest, the workdir
    assert len(lomo) == len(plain) and shared == len(plain) - 5, (shared, len(plain))
    assert lomo_image.ref.moving.endswith(f":{RELEASE}-cpu-lomo")


def test_stackbuild_test_passes_with_the_lomo_checks(lomo_image):
    run = subprocess.run([sys.executable, "-m", "builder", "test", STACK, "-t", "cpu", "--with", "lomo", "--json"],
                         capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    report = json.loads(run.stdout)
    results = {r["check"]: r for r in report["results"]}
    manifest = plan_build(load_stack(STACK), RELEASE, "cpu", OPTIONS).manifest()
    assert list(results) == [c["name"] for c in manifest["checks"]]
    assert report["ok"] and {"lomo-trainer", "adalomo-trainer"} <= set(results)
    lomo = results["lomo-trainer"]
    assert lomo["status"] == "pass" and "Lomo" in lomo["detail"] and "no gradient held" in lomo["detail"], lomo
    assert "optimizer state none" in lomo["detail"], lomo
    # lomo-optim 0.1.1 puts AdaLomo's moments on CUDA: without a GPU the check says so and never passes
    ada = results["adalomo-trainer"]
    assert ada["status"] == "skip" and "no GPU" in ada["detail"] and ".cuda()" in ada["detail"], ada


def test_lomo_optim_imports_offline_in_the_image(lomo_image, docker_client):
    container = docker_client.containers.run(lomo_image.ref.immutable, ["python", "-c",
                                             "import lomo_optim, transformers.trainer_optimizer as t; "
                                             "print(lomo_optim.__version__, t.is_lomo_available())"],
                                             network_mode="none", detach=True, labels={TEST_LABEL: "1"})
    try:
        assert container.wait(timeout=300)["StatusCode"] == 0, container.logs().decode()
        assert container.logs(stderr=False).decode().split() == ["0.1.1", "True"]
    finally:
        container.remove(force=True)


# Each case breaks what lomo-trainer guards, in an image derived from the option's (offline), and the
# message the check must then give.
BREAKS = [
    # the package the Trainer imports for optim="lomo" is gone: transformers' own ImportError, named
    (["pip uninstall -y lomo-optim"], "lomo-optim-missing"),
    # LOMO keeps its gradients instead of freeing each one inside backward: the memory saving is gone
    ([f"sed -i 's/^\\(\\s*\\)p.grad = None$/\\1pass/' {SITE}/lomo_optim/lomo.py"], "left a gradient on"),
]


@pytest.mark.parametrize(("lines", "message"), BREAKS, ids=["uninstalled", "grads-kept"])
def test_lomo_trainer_fails_when_what_it_guards_is_broken(lines, message, lomo_image, engine, derived_image):
    report = run_smoke(engine, derived_image(lomo_image.ref.immutable, lines), only=["lomo-trainer"])
    [result] = report.results
    assert result.check == "lomo-trainer" and result.status == "fail", result
    assert message in result.detail, result.detail
    assert not report.ok and report.exit_code == 1
