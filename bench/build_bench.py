"""Build benchmark: cold build, no-change rebuild, bump-one-pin rebuild, and a naive one-layer build.

Run on a machine with an engine (see README), with the settings a build needs there:

    STACKBUILD_BUILD_NETWORK=host STACKBUILD_CA_BUNDLE=/etc/ssl/certs/ca-certificates.crt \
        python bench/build_bench.py [STACK@RELEASE] [--pin peft=0.21.1]

It prints seconds for each case and the ratios the layer plan is judged by (goal: a rebuild
after bumping one stack-specific pin costs <= 5 % of a cold build). The naive comparison puts
the same pins in one `pip install` layer, as hand-written Dockerfiles often do. Everything the
benchmark builds is tagged stackbuild-bench/* and removed at the end.
"""

from __future__ import annotations

import argparse
import re
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from builder.build import build_image  # noqa: E402
from builder.config import load_settings  # noqa: E402
from builder.engine import DockerEngine  # noqa: E402
from builder.engine_api import BuildLog  # noqa: E402
from builder.lock import make_lock  # noqa: E402
from builder.lockfile import write_lock  # noqa: E402
from builder.plan import lock_path  # noqa: E402
from builder.plan import plan_build  # noqa: E402
from builder.profile import load_stack, stack_path  # noqa: E402
from builder.render import prepare  # noqa: E402
from builder.site import SiteServer  # noqa: E402

LABEL = {"io.stackbuild.bench": "1"}


def timed(label: str, fn):
    started = time.monotonic()
    result = fn()
    seconds = time.monotonic() - started
    print(f"{label:<44} {seconds:8.1f} s", flush=True)
    return seconds, result


def bumped_profile(spec: str, pin: str, folder: Path, settings) -> Path:
    """A copy of the stack's profile with one pin changed (name==old -> name==new), locked again."""
    name, new = pin.split("=", 1)
    stack, _, release = spec.partition("@")
    text = stack_path(stack).read_text()
    pattern = re.compile(rf"(- {re.escape(name)}==)([^\s]+)")
    matches = list(pattern.finditer(text))
    if not matches:
        raise SystemExit(f"{name} is not pinned in {stack}")
    text = pattern.sub(rf"\g<1>{new}", text)
    path = folder / f"{stack}.yaml"
    path.write_text(text)
    plan = plan_build(load_stack(str(path)), release or None, "cpu", with_lock=False)
    write_lock(lock_path(plan), make_lock(plan, settings))  # a bump is a profile edit plus `stackbuild lock`
    return path


def naive_dockerfile(plan) -> str:
    """The same image as one apt layer and one pip layer: what a hand-written Dockerfile often does."""
    pins = " ".join(f"{name}=={version}" for name, version in plan.pins.items() if name != "torch")
    return f"""FROM {plan.target.base.ref}
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
COPY site.sh /opt/stackbuild/site.sh
RUN . /opt/stackbuild/site.sh && site_begin && apt-get update \\
 && apt-get install -y --no-install-recommends {" ".join(plan.apt)} && rm -rf /var/lib/apt/lists/* \\
 && python3 -m venv /opt/venv && /opt/venv/bin/pip install --no-cache-dir {plan.target.torch.requirement} {pins} \\
 && site_end
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("spec", nargs="?", default="alpaca-lora@2026.11")
    parser.add_argument("--pin", default="peft=0.21.1", help="NAME=NEWVERSION to bump (default peft=0.21.1)")
    parser.add_argument("--no-naive", action="store_true", help="skip the naive one-layer comparison")
    args = parser.parse_args()
    # The bench's own names, so the real stackbuild/<stack> tags are never moved.
    settings = replace(load_settings(), registry="stackbuild-bench")
    engine = DockerEngine.connect(timeout=3600)
    stack, _, release = args.spec.partition("@")
    made: list[str] = []

    def build(context, tag, nocache=False):
        made.append(tag)
        result = build_image(context, settings, engine=engine, extra_tags=(tag,), extra_labels=LABEL, nocache=nocache)
        made.extend((result.ref.moving, result.ref.immutable))
        return result

    print(f"benchmark: {args.spec} (cpu), bump {args.pin}")
    context = prepare(stack, release or None, "cpu", ())
    cold, _ = timed("cold build (--no-cache)", lambda: build(context, "stackbuild-bench/cold:1", nocache=True))
    same, _ = timed("no-change build (content tag found)", lambda: build(context, "stackbuild-bench/cold:2"))
    with tempfile.TemporaryDirectory() as folder:
        bumped = prepare(str(bumped_profile(args.spec, args.pin, Path(folder), settings)), release or None, "cpu", ())
        bump, _ = timed(f"rebuild after bumping {args.pin}", lambda: build(bumped, "stackbuild-bench/bump:1"))

    print()
    print(f"no-change rebuild / cold      {same / cold:7.2%}")
    print(f"bump-one-pin rebuild / cold   {bump / cold:7.2%}   (goal <= 5 %)")
    if args.no_naive:
        _cleanup(engine, made)
        return
    naive = naive_dockerfile(context.plan)
    site = dict(context.files)["site.sh"]
    network = None if settings.build_network == "default" else settings.build_network

    def naive_build(text: str, tag: str, nocache: bool):
        made.append(tag)
        with SiteServer(settings.site):
            return engine.build(text, (("site.sh", site),), tag, LABEL, network, nocache, {}, BuildLog(),
                                lambda event: None)

    name, new = args.pin.split("=", 1)
    naive_cold, _ = timed("naive one-layer build (--no-cache)", lambda: naive_build(naive, "stackbuild-bench/naive:1", True))
    naive_bumped = re.sub(rf"{re.escape(name)}==\S+", f"{name}=={new}", naive)
    naive_bump, _ = timed(f"naive rebuild after bumping {args.pin}",
                          lambda: naive_build(naive_bumped, "stackbuild-bench/naive:2", False))

    print(f"naive bump rebuild / cold     {naive_bump / cold:7.2%}")
    print(f"naive cold / layered cold     {naive_cold / cold:7.2f}x")
    _cleanup(engine, made)


def _cleanup(engine: DockerEngine, made: list[str]) -> None:
    for tag in dict.fromkeys(made):
        try:
            engine.client.remove_image(tag, force=True)
        except Exception as exc:  # a failed cleanup must not hide the figures
            print(f"could not remove {tag}: {exc}", file=sys.stderr)


if __name__ == "__main__":
    main()
