"""Print what the architecture work must leave unchanged: the sha256 of `stackbuild schema`, of every
golden Dockerfile as rendered now, and the content hash of every stack x release x target x option plan.

    python bench/identity_snapshot.py > before.txt   # in a checkout of the tree before a change
    python bench/identity_snapshot.py > after.txt    # after it; `diff before.txt after.txt` must be empty
"""

from __future__ import annotations

import hashlib
import json

import _shared  # noqa: F401 - puts the checkout on sys.path

from builder.plan.build_plan import plan_build  # noqa: E402
from builder.profile import targets  # noqa: E402
from builder.profile.load import available_stacks, load_stack  # noqa: E402
from builder.cli.catalog import profile_schema  # noqa: E402
from builder.render.dockerfile import render_context  # noqa: E402
from builder.render.identity import content_hash  # noqa: E402


def main() -> None:
    schema = json.dumps(profile_schema(), indent=2, sort_keys=True)
    print(f"schema {hashlib.sha256(schema.encode()).hexdigest()}")
    count = 0
    for name in available_stacks():
        stack = load_stack(name)
        for rel in stack.releases.values():
            for target in targets.ordered(rel.targets):
                for options in [()] + [(o,) for o, spec in rel.options.items() if target in spec.targets]:
                    context = render_context(plan_build(stack, rel.name, target, options))
                    dockerfile = hashlib.sha256(context.dockerfile.encode()).hexdigest()
                    label = f"{name}@{rel.name}-{target}{''.join('+' + o for o in options)}"
                    print(f"{label} dockerfile {dockerfile[:16]} content {content_hash(context, context.plan.target.base.ref)}")
                    count += 1
    print(f"plans {count}")


if __name__ == "__main__":
    main()
