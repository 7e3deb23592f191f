"""Every way a profile can be wrong gets one exact message, located by file and line.

Each case breaks tests/unit/fixtures/good.yaml in one place (text replacement), runs
`stackbuild show` on the result, and expects exit code 3 and the exact problem line
`good.yaml:LINE: field.path: problem (fix)`, LINE being the line of an anchor text.
"""

from __future__ import annotations

from pathlib import Path

import pytest

GOOD = (Path(__file__).parent / "fixtures" / "good.yaml").read_text()

# (case id, text to replace, replacement, anchor whose line the problem points at, expected message)
CASES = [
    ("unknown-top-key", "title: A good stack", "title: A good stack\ntitel: typo", "titel:",
     "titel: unknown field (did you mean 'title'? allowed: apt, checks, default_release, description, files, fixes, "
     "name, namesake, notes, releases, requires_python, title)"),
    ("unknown-release-key", "    era: true", "    era: true\n    torhc: x", "torhc:",
     "releases.2023.06.torhc: unknown field (did you mean 'torch'? allowed: apt, audit_allow, bootstrap, checks, compiled, cuda, "
     "date, declined, env, era, fixes, held, last_packages, multinode, namesake, notes, options, packages, patches, summary, targets, torch, training, "
     "with_torch)"),
    ("unknown-target-key", "        arch_list: [\"8.0\", \"9.0\"]", "        arch_list: [\"8.0\", \"9.0\"]\n        archs: []",
     "archs:", "releases.2023.06.targets.cuda.archs: unknown field (did you mean 'arch_list'? allowed: arch_list, "
     "base, env, python)"),
    ("unknown-compiled-key", "        why: offload ops", "        why: offload ops\n        flags: {}", "flags:",
     "releases.2023.06.compiled[0].flags: unknown field (allowed: env, memory_per_job_gib, no_build_isolation, "
     "package, parallel_extensions, requires, targets, why)"),
    ("unknown-check", "title: A good stack", "title: A good stack\nchecks: [lora-saves]", "checks:",
     "checks[0]: there is no smoke check 'lora-saves' (did you mean 'lora-save'? checks are listed in "
     "builder/smoke/checks.py)"),
    ("check-twice", "    era: true", "    era: true\n    checks: [ninja, ninja]", "checks: [ninja",
     "releases.2023.06.checks[1]: check 'ninja' is listed twice (stack and release checks add up) (keep one entry)"),
    ("missing-title", "title: A good stack\n", "", "name:", "title: required field is missing (add 'title')"),
    ("missing-torch", "    torch: \"2.0.1\"\n", "", "\"2023.06\":",
     "releases.2023.06.torch: required field is missing (add 'torch')"),
    ("name-mismatch", "name: good", "name: other", "name:",
     "name: name 'other' does not match the file name 'good.yaml' (rename the file or set name: good)"),
    ("name-invalid", "name: good", "name: Good_Stack", "name:",
     "name: 'Good_Stack' is not a stack name (use lowercase words joined by '-')"),
    ("default-release-unknown", 'default_release: "2023.06"', 'default_release: "2024.01"', "default_release:",
     "default_release: '2024.01' is not a release of this stack (use one of: 2023.06)"),
    ("release-name-float", '  "2023.06":', "  2023.06:", "  2023.06:",
     "releases.2023.06: release name 2023.06 is a float, not a string (quote it: \"2023.06\")"),
    ("release-name-invalid", '  "2023.06":', '  "2023 06":', '"2023 06":',
     "releases.2023 06: '2023 06' is not a valid release name (use letters, digits, '.', '_' or '-', like 2023.06)"),
    ("python-float", 'python: "3.10"', "python: 3.10", "python: 3.10",
     "releases.2023.06.targets.cuda.python: expected a string, got float 3.1 (YAML read this as the number 3.1; "
     "quote it)"),
    ("python-not-base", 'python: "3.9"', 'python: "3.11"', 'python: "3.11"',
     "releases.2023.06.targets.cpu.python: python 3.11 is not what debian:bullseye-slim ships (3.9) "
     "(set python: \"3.9\" or choose another base)"),
    ("python-torch-compile", 'base: debian:bullseye-slim\n        python: "3.9"',
     'base: debian:bookworm-slim\n        python: "3.11"', 'python: "3.11"',
     "releases.2023.06.targets.cpu.python: torch 2.0.1's torch.compile refuses Python 3.11 (supports up to 3.10) "
     "(use an older Python (e.g. debian:bullseye-slim, ubuntu22.04) or a newer torch)"),
    ("python-no-wheels", 'base: debian:bullseye-slim\n        python: "3.9"',
     'base: debian:trixie-slim\n        python: "3.13"', 'python: "3.13"',
     "releases.2023.06.targets.cpu.python: torch 2.0.1 has no wheels for Python 3.13 (it supports 3.8-3.11) "
     "(choose a base image whose Python torch supports)"),
    ("requires-python", 'base: debian:bullseye-slim\n        python: "3.9"', 'base: debian:bullseye-slim\n        python: "3.9"',
     "python: \"3.9\"", None),  # placeholder replaced below (needs requires_python change)
    ("unknown-base", "base: debian:bullseye-slim", "base: alpine:3.19", "alpine",
     "releases.2023.06.targets.cpu.base: unknown base image 'alpine:3.19' (use debian:{bullseye,bookworm,trixie}-slim "
     "for cpu; nvidia/cuda:<X.Y.Z>-[cudnn[N]-]devel-ubuntu{20.04,22.04,24.04} for cuda)"),
    ("cpu-on-cuda-base", "base: debian:bullseye-slim\n        python: \"3.9\"",
     "base: nvidia/cuda:11.8.0-cudnn8-devel-ubuntu22.04\n        python: \"3.10\"", "base: nvidia/cuda:11.8.0-cudnn8-devel-ubuntu22.04\n        python: \"3.10\"\n    compiled",
     None),  # placeholder replaced below
    ("cuda-runtime-base", "nvidia/cuda:11.8.0-cudnn8-devel-ubuntu22.04", "nvidia/cuda:11.8.0-cudnn8-runtime-ubuntu22.04",
     "runtime", "releases.2023.06.targets.cuda.base: 'nvidia/cuda:11.8.0-cudnn8-runtime-ubuntu22.04' has no nvcc; "
     "compiled ops need a -devel image (use the -devel flavour of this image)"),
    ("cuda-base-mismatch", "nvidia/cuda:11.8.0-cudnn8-devel-ubuntu22.04", "nvidia/cuda:12.1.1-cudnn8-devel-ubuntu22.04",
     "12.1.1", "releases.2023.06.targets.cuda.base: base image CUDA 12.1 does not match the release's CUDA 11.8 "
     "(nvcc must match the CUDA torch was built with; use a base with the same CUDA)"),
    ("torch-no-cuda-build", 'cuda: "11.8"', 'cuda: "12.1"', 'cuda: "12.1"',
     "releases.2023.06.cuda: torch 2.0.1 has no CUDA 12.1 build (torch 2.0.1 is built for CUDA 11.7, 11.8)"),
    ("torch-unknown", 'torch: "2.0.1"', 'torch: "1.13.1"', 'torch: "1.13.1"',
     "releases.2023.06.torch: torch 1.13.1 is not in stackbuild's compatibility table (known: 2.0.x, 2.1.x, 2.2.x, "
     "2.3.x, 2.4.x, 2.5.x, 2.6.x, 2.7.x, 2.8.x, 2.9.x, 2.10.x, 2.11.x, 2.15.x; add a row to builder/profile/versions.py with its Python and "
     "CUDA support)"),
    ("torch-local-version", 'torch: "2.0.1"', 'torch: "2.0.1+cu118"', 'torch: "2.0.1+cu118"',
     "releases.2023.06.torch: '2.0.1+cu118' has a local version (name the plain release; the CUDA build follows "
     "from 'cuda')"),
    ("numpy2-with-old-torch", "      - numpy==1.24.4", "      - numpy==2.0.0", "with_torch:",
     "releases.2023.06.with_torch: torch 2.0.1 breaks with NumPy 2 (pin numpy 1.x in with_torch, e.g. numpy==1.24.4)"),
    ("requirement-syntax", "      - transformers==4.28.1", "      - transformers===", "transformers===",
     "releases.2023.06.packages[0]: 'transformers===' is not a valid requirement (write name==version)"),
    ("requirement-not-pinned", "      - transformers==4.28.1", "      - transformers>=4.28", "transformers>=4.28",
     "releases.2023.06.packages[0]: 'transformers>=4.28' is not pinned to one exact version (pin it: "
     "transformers==<version> (a curated stack fixes every version))"),
    ("requirement-shell", "      - transformers==4.28.1", "      - transformers==4.28.1;rm", "transformers==4.28.1;rm",
     "releases.2023.06.packages[0]: 'transformers==4.28.1;rm' is not a pinned requirement (write name==version; no "
     "spaces, markers or shell characters)"),
    ("requirement-wildcard", "      - transformers==4.28.1", "      - transformers==4.28.*", "transformers==4.28.*",
     "releases.2023.06.packages[0]: 'transformers==4.28.*' is not pinned to one exact version (pin it: "
     "transformers==<version> (a curated stack fixes every version))"),
    ("git-short-commit", "      - transformers==4.28.1",
     "      - transformers @ git+https://github.com/huggingface/transformers.git@796162c", "git+https",
     "releases.2023.06.packages[0]: git pin '796162c' is not a full commit (pin the full 40-character commit hash, "
     "not a branch, tag or short hash)"),
    ("git-http-url", "      - transformers==4.28.1", "      - transformers @ http://example.com/t.tar.gz", "http://",
     "releases.2023.06.packages[0]: URL 'http://example.com/t.tar.gz' is not a git+https URL at a commit (use name @ "
     "git+https://host/org/repo.git@<40-hex commit>)"),
    ("duplicate-pin", "      - transformers==4.28.1", "      - transformers==4.28.1\n      - ninja==1.11.1",
     "transformers==4.28.1\n      - ninja==1.11.1", "releases.2023.06.packages[1]: 'ninja' is pinned twice (also at "
     "releases.2023.06.compiled[0].requires[0]) (keep one pin)"),
    ("torch-in-packages", "      - transformers==4.28.1", "      - torch==2.0.1", "- torch==2.0.1",
     "releases.2023.06.packages[0]: torch is pinned by the release's 'torch' and 'cuda' fields (remove it from this "
     "list)"),
    ("env-name", 'BNB_CUDA_VERSION: "118"', '1BNB: "118"', "1BNB",
     "releases.2023.06.targets.cuda.env.1BNB: '1BNB' is not an environment variable name (use letters, digits and "
     "'_', not starting with a digit)"),
    ("env-value-dollar", 'BNB_CUDA_VERSION: "118"', 'BNB_CUDA_VERSION: "$(id)"', "BNB_CUDA_VERSION",
     "releases.2023.06.targets.cuda.env.BNB_CUDA_VERSION: value '$(id)' has characters that are unsafe in a "
     "Dockerfile (use letters, digits and _ . / : ; , = + @ % - only (no spaces, quotes, $ or newlines))"),
    ("env-value-newline", 'BNB_CUDA_VERSION: "118"', 'BNB_CUDA_VERSION: "118\\nRUN id"', "BNB_CUDA_VERSION",
     "releases.2023.06.targets.cuda.env.BNB_CUDA_VERSION: value '118\\nRUN id' has characters that are unsafe in a "
     "Dockerfile (use letters, digits and _ . / : ; , = + @ % - only (no spaces, quotes, $ or newlines))"),
    ("env-value-number", 'BNB_CUDA_VERSION: "118"', "BNB_CUDA_VERSION: 118", "BNB_CUDA_VERSION",
     "releases.2023.06.targets.cuda.env.BNB_CUDA_VERSION: expected a string, got int 118 (YAML read this as a number; "
     "quote it)"),
    ("apt-injection", "  - libaio-dev", "  - libaio-dev && curl x | sh", "libaio-dev &&",
     "apt[0]: 'libaio-dev && curl x | sh' is not a Debian package name (use a package name like libaio-dev "
     "(optionally =version))"),
    ("apt-duplicate", "  - libaio-dev", "  - libaio-dev\n  - libaio-dev", "  - libaio-dev\n  - libaio-dev",
     None),  # placeholder replaced below
    ("arch-format", 'arch_list: ["8.0", "9.0"]', 'arch_list: ["sm80", "9.0"]', "arch_list",
     "releases.2023.06.targets.cuda.arch_list[0]: 'sm80' is not a known compute capability (use one of 7.0, 7.5, "
     "8.0, 8.6, 8.9, 9.0, 10.0, 12.0 (quoted))"),
    ("arch-too-new-for-cuda", 'arch_list: ["8.0", "9.0"]', 'arch_list: ["8.0", "10.0"]', "arch_list",
     "releases.2023.06.targets.cuda.arch_list[1]: CUDA 11.8 cannot compile for sm_100 (sm_100 needs CUDA >= 12.8; "
     "drop it or use a newer CUDA)"),
    ("arch-flash-attn-pre-ampere", 'arch_list: ["8.0", "9.0"]', 'arch_list: ["7.0", "8.0", "9.0"]', "arch_list",
     "releases.2023.06.targets.cuda.arch_list[0]: flash-attn does not support sm_70 (it needs sm80+, Ampere or "
     "newer) (limit arch_list to 8.0 and above; pre-Ampere GPUs use the xformers option)"),
    ("arch-on-cpu", 'python: "3.9"', 'python: "3.9"\n        arch_list: ["8.0"]', 'arch_list: ["8.0"]',
     "releases.2023.06.targets.cpu.arch_list: the cpu target compiles no CUDA code (remove arch_list)"),
    ("flash-attn-isolation", "        targets: [cuda]\n        no_build_isolation: true",
     "        targets: [cuda]\n        no_build_isolation: false", "no_build_isolation: false",
     "releases.2023.06.compiled[1].no_build_isolation: flash-attn's setup.py imports torch, which build isolation "
     "hides (No module named 'torch') (set no_build_isolation: true)"),
    ("flash-attn-no-max-jobs", "        memory_per_job_gib: 9\n", "", "flash-attn==1.0.9",
     "releases.2023.06.compiled[1]: flash-attn's build needs MAX_JOBS bounded by memory or it is OOM-killed (set "
     "memory_per_job_gib (about 9 at NVCC_THREADS=4))"),
    ("deepspeed-no-libaio", "apt:\n  - libaio-dev\n", "", "env:\n          cuda:",
     "releases.2023.06.compiled[0].env.cuda: async_io is pre-compiled but libaio-dev is not installed (Unable to "
     "pre-compile async_io) (add libaio-dev to apt)"),
    ("deepspeed-sparse-attn", '            DS_BUILD_SPARSE_ATTN: "0"\n', "", "env:\n          cuda:",
     "releases.2023.06.compiled[0].env.cuda: deepspeed 0.9.3 aborts on sparse_attn, which needs torch < 2 (set "
     "DS_BUILD_SPARSE_ATTN: \"0\")"),
    ("deepspeed-no-ninja", "        requires:\n          - ninja==1.11.1\n", "", "deepspeed==0.9.3",
     "releases.2023.06.compiled[0].requires: DeepSpeed JIT-loads ops at run time and needs ninja (add "
     "ninja==<version> to requires)"),
    ("compiled-env-foreign-target", "        targets: [cuda]\n        no_build_isolation: true\n        memory_per_job_gib: 9",
     "        targets: [cuda]\n        no_build_isolation: true\n        memory_per_job_gib: 9\n        env:\n"
     "          cpu:\n            X: \"1\"", "env:\n          cpu:",
     "releases.2023.06.compiled[1].env.cpu: env for target 'cpu', which this step does not build (add 'cpu' to "
     "targets or remove this env)"),
    ("parallel-without-budget", "        no_build_isolation: true\n        env:\n          cuda:",
     "        no_build_isolation: true\n        parallel_extensions: true\n        env:\n          cuda:",
     "parallel_extensions: true",
     "releases.2023.06.compiled[0].parallel_extensions: extensions built side by side share a job budget, which "
     "memory_per_job_gib sizes (set memory_per_job_gib (e.g. 4))"),
    ("parallel-isolated", "        targets: [cuda]\n        no_build_isolation: true\n        memory_per_job_gib: 9",
     "        targets: [cuda]\n        no_build_isolation: false\n        memory_per_job_gib: 9\n"
     "        parallel_extensions: true", "parallel_extensions: true",
     "releases.2023.06.compiled[1].parallel_extensions: build isolation replaces the PYTHONPATH that brings in the "
     "build_ext hook (set no_build_isolation: true)"),
    ("parallel-own-pythonpath", "        memory_per_job_gib: 9",
     "        memory_per_job_gib: 9\n        parallel_extensions: true\n        env:\n          cuda:\n"
     "            PYTHONPATH: /src", "PYTHONPATH: /src",
     "releases.2023.06.compiled[1].env.cuda.PYTHONPATH: parallel_extensions sets PYTHONPATH for the build (the "
     "build_ext hook) (remove PYTHONPATH here)"),
    ("target-unknown", "      cpu:\n        base", "      rocm:\n        base", "rocm:",
     "releases.2023.06.targets.rocm: 'rocm' is not allowed (use 'cuda' or 'cpu')"),
    ("xformers-wrong-torch", "xformers==0.0.20", "xformers==0.0.34", "xformers==0.0.34",
     "releases.2023.06.packages[1]: xformers 0.0.34 requires torch==2.10.0, the release pins 2.0.1 "
     "(choose the xformers release built for this torch)"),
    ("fix-unknown-id", "  - issue: ds-aio-precompile", "  - issue: ds-aio-precompil", "ds-aio-precompil",
     "fixes[0].issue: unknown known-issue id 'ds-aio-precompil' (did you mean 'ds-aio-precompile'? ids are defined "
     "in stacks/known-issues.yaml)"),
    ("fix-bad-via", "    via: apt", "    via: magic", "via: magic",
     "fixes[0].via: 'magic' is not allowed (use 'apt', 'pin', 'build-flag', 'env', 'patch', 'python', 'base-image', "
     "'config' or 'run-option')"),
    ("fix-duplicate", "      - issue: fsdp-save-oom", "      - issue: ds-aio-precompile", "      - issue: ds-aio-precompile",
     "releases.2023.06.fixes[0]: issue 'ds-aio-precompile' is listed twice (stack and release fixes add up) (keep one "
     "entry)"),
    ("fix-via-patch-without-patch", "        fixes: fsdp-save-oom\n", "        fixes: ds-pydantic2\n", "\n    fixes:\n",
     "releases.2023.06.fixes: fix 'fsdp-save-oom' is 'via: patch' but no patch fixes it (add the patch or change "
     "'via')"),
    ("patch-path-traversal", "file: distributed/fsdp/_state_dict_utils.py", "file: ../../etc/passwd.py", "file: ../",
     "releases.2023.06.patches[0].file: '../../etc/passwd.py' is not a relative .py path inside the package (write it "
     "like distributed/fsdp/_state_dict_utils.py)"),
    ("patch-noop", 'replace: "state_dict[fqn] = state_dict[fqn].cpu().clone().detach()"',
     'replace: "state_dict[fqn] = state_dict[fqn].clone().detach()"', "replace:",
     "releases.2023.06.patches[0].replace: replacement equals the text found (change the replacement)"),
    ("patch-unknown-package", "package: torch", "package: fastchat", "package: fastchat",
     "releases.2023.06.patches[0].package: patch targets 'fastchat', which this release does not install (use one "
     "of: deepspeed, flash-attn, ninja, numpy, torch, transformers, xformers)"),
    ("date-invalid", 'date: "2023-06-02"', 'date: "June 2023"', "date:",
     "releases.2023.06.date: 'June 2023' is not a date (write it as YYYY-MM-DD)"),
    ("summary-multiline", "    summary: era release", "    summary: \"era\\nrelease\"", "summary:",
     "releases.2023.06.summary: must be one non-empty line of printable text (remove line breaks and control "
     "characters)"),
    ("file-name-traversal", "  config.json:", "  ../config.json:", "../config.json",
     "files.../config.json: '../config.json' is not a plain file name (use letters, digits, '.', '_' and '-' (no "
     "folders))"),
    ("bootstrap-without-pip", "      - pip==23.1.2", "      - setuptools==67.8.0", "bootstrap:",
     "releases.2023.06.bootstrap: bootstrap must pin pip (add pip==<version>)"),
    ("duplicate-key", "    era: true", "    era: true\n    era: false", "era: false",
     "releases.2023.06.era: duplicate key (first defined on line 26) (keep one of them)"),
    ("yaml-syntax", "    summary: era release", "    summary: [unclosed", 'date: "2023-06-02"',
     "YAML syntax error: did not find expected ',' or ']' (fix the YAML syntax)"),
    ("not-a-mapping", GOOD, "- just\n- a list\n", "- just",
     "a profile must be a YAML mapping (start from an existing stacks/*.yaml)"),
    ("option-name", "      extra:\n", "      Extra_Opt:\n", "Extra_Opt",
     "releases.2023.06.options.Extra_Opt: 'Extra_Opt' is not an option name (use lowercase words joined by '-')"),
    ("requires-python-bad", 'requires_python: ">=3.9"', 'requires_python: "three point nine"', "requires_python",
     "requires_python: 'three point nine' is not a version specifier (write it like \">=3.9\")"),
]

# Cases whose text is easier to state directly than as one replacement.
CASES = [c for c in CASES if c[4] is not None] + [
    ("namesake-repository", "repository: example/trainer", "repository: https://github.com/x", "repository:",
     "namesake.repository: 'https://github.com/x' is not a GitHub owner/name (write it like tloen/alpaca-lora)"),
    ("namesake-script-path", "scripts: [train.py, train_mem.py]", "scripts: [train.py, ../x.py]", "scripts:",
     "namesake.scripts[1]: '../x.py' is not a relative .py path (write it as in the repository, like "
     "fastchat/train/train.py)"),
    ("namesake-short-commit", "commit: 3312cc15ac337d9aebca2a05e81e4331d1368150", "commit: 3312cc1", "commit:",
     "releases.2023.06.namesake.commit: '3312cc1' is not a full commit (pin the full 40-character commit hash, "
     "not a branch, tag or short hash)"),
    ("namesake-missing", "    namesake:\n      commit:", "    namesakes:\n      commit:", "namesakes:",
     "releases.2023.06.namesakes: unknown field (did you mean 'namesake'? allowed: apt, audit_allow, bootstrap, checks, compiled, "
     "cuda, date, declined, env, era, fixes, held, last_packages, multinode, namesake, notes, options, packages, patches, summary, targets, "
     "torch, training, with_torch)"),
    ("namesake-unknown-script", "scripts: [train_mem.py]", "scripts: [train_xformers.py]", "train_xformers.py",
     "releases.2023.06.namesake.unable[0].scripts[0]: 'train_xformers.py' is not one of the namesake scripts "
     "(use one of: train.py, train_mem.py)"),
    ("namesake-unknown-issue", "          instead: the cuda", "          issue: no-such-issue\n          instead: the cuda",
     "issue: no-such", "releases.2023.06.namesake.unable[0].issue: unknown known-issue id 'no-such-issue' (ids are "
     "defined in stacks/known-issues.yaml)"),
    ("namesake-no-instead", "          instead: the cuda target, or train.py on cpu\n", "", "      unable:\n        - scripts",
     "releases.2023.06.namesake.unable[0].instead: required field is missing (add 'instead')"),

    ("requires-python-unmet", 'requires_python: ">=3.9"', 'requires_python: ">=3.10"', 'python: "3.9"',
     "releases.2023.06.targets.cpu.python: python 3.9 does not satisfy the stack's requires_python '>=3.10' "
     "(choose a base image with a newer Python)"),
    ("cpu-on-cuda-base", "base: debian:bullseye-slim\n        python: \"3.9\"",
     "base: nvidia/cuda:11.8.0-cudnn8-devel-ubuntu22.04\n        python: \"3.10\"",
     "      cpu:\n        base: nvidia",
     "releases.2023.06.targets.cpu.base: the cpu target builds on a Debian slim base, not "
     "'nvidia/cuda:11.8.0-cudnn8-devel-ubuntu22.04' (use debian:bullseye-slim (3.9), bookworm-slim (3.11) or "
     "trixie-slim (3.13))"),
    # a slim cuda base takes CUDA from torch's wheels; PyPI has no nvcc before CUDA 13, and this release compiles
    ("cuda-slim-base-no-nvcc-wheel", "base: nvidia/cuda:11.8.0-cudnn8-devel-ubuntu22.04\n        python: \"3.10\"",
     "base: debian:bullseye-slim\n        python: \"3.9\"", "      cuda:\n        base: debian",
     "releases.2023.06.targets.cuda.base: 'debian:bullseye-slim' has no CUDA compiler, and PyPI has none for CUDA "
     "11.8 (its nvidia-cuda-nvcc-cu12 wheels hold only ptxas); a compiled package needs CUDA >= 13.0 on a slim base "
     "(use nvidia/cuda:11.8.<patch>-cudnn-devel-ubuntu24.04 (NVIDIA's toolkit), or a torch built for CUDA >= 13.0 "
     "(torch >= 2.11))"),
    ("apt-duplicate", "  - libaio-dev", "  - libaio-dev\n  - libaio-dev", "  - libaio-dev\n  - libaio-dev",
     "apt[1]: 'libaio-dev' is listed twice (remove the duplicate)"),
    ("option-installs-nothing", "        packages:\n          - einops==0.6.1\n", "        packages: []\n", "      extra:",
     "releases.2023.06.options.extra: option 'extra' installs nothing (give it packages or last_packages)"),
    ("option-advisory-unknown", "          - einops==0.6.1\n", "          - einops==0.6.1\n        advisories: [lomo-grad-acum]\n",
     "advisories:", "releases.2023.06.options.extra.advisories[0]: 'lomo-grad-acum' is an unknown known-issue id (name an "
     "entry of stacks/known-issues.yaml with kind: advisory)"),
    ("option-advisory-is-a-failure", "          - einops==0.6.1\n",
     "          - einops==0.6.1\n        advisories: [lomo-optim-missing]\n", "advisories:",
     "releases.2023.06.options.extra.advisories[0]: 'lomo-optim-missing' is not an advisory (a failure goes under "
     "fixes) (name an entry of stacks/known-issues.yaml with kind: advisory)"),
    ("declined-and-shipped", "    options:\n", "    declined:\n      extra: {summary: s, why: w, instead: i}\n    options:\n",
     "      extra: {summary", "releases.2023.06.declined.extra: option 'extra' is both shipped and declined (keep one of "
     "the two)"),
    ("declined-without-instead", "    options:\n", "    declined:\n      other: {summary: s, why: w}\n    options:\n",
     "      other: {summary", "releases.2023.06.declined.other.instead: required field is missing (add 'instead')"),
]


def _line_of(text: str, anchor: str) -> int:
    """Line of the anchor's last non-empty line (multi-line anchors make a line unique)."""
    start = text.index(anchor)
    segments = anchor.split("\n")
    last = max(i for i, segment in enumerate(segments) if segment.strip())
    return text.count("\n", 0, start) + 1 + last


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_bad_profile_is_reported_exactly(case, cli, tmp_path, monkeypatch):
    _, old, new, anchor, expected = case
    assert old in GOOD, f"fixture text not found: {old!r}"
    text = GOOD.replace(old, new, 1)
    (tmp_path / "good.yaml").write_text(text)
    monkeypatch.chdir(tmp_path)
    code, stdout, stderr = cli("show", "./good.yaml")
    assert code == 3, stderr
    assert stdout == ""
    assert "Traceback" not in stderr
    line = _line_of(text, anchor)
    lines = stderr.splitlines()
    assert lines[0].startswith("error: ") and lines[0].endswith("in good.yaml")
    assert f"good.yaml:{line}: {expected}" in lines[1:], stderr


def test_enough_cases():
    assert len(CASES) >= 40
    assert len({c[0] for c in CASES}) == len(CASES)


def test_the_fixture_itself_is_valid(cli, tmp_path, monkeypatch):
    (tmp_path / "good.yaml").write_text(GOOD)
    monkeypatch.chdir(tmp_path)
    code, stdout, stderr = cli("show", "./good.yaml")
    assert code == 0, stderr
    assert "good@2023.06" in stdout


def test_every_problem_is_reported_at_once(cli, tmp_path, monkeypatch):
    text = (GOOD.replace("title: A good stack", "title: A good stack\ntitel: x")
            .replace('python: "3.10"', "python: 3.10")
            .replace("    era: true", "    era: true\n    torhc: x"))
    (tmp_path / "good.yaml").write_text(text)
    monkeypatch.chdir(tmp_path)
    code, _, stderr = cli("show", "./good.yaml")
    assert code == 3
    assert stderr.startswith("error: 3 problems in good.yaml\n")
    assert "titel: unknown field" in stderr
    assert "targets.cuda.python: expected a string" in stderr
    assert "releases.2023.06.torhc: unknown field" in stderr
