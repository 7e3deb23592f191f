# flash-attn-fsdp@2023.06, target cpu
# flash-attn with PyTorch FSDP (FastChat-style full fine-tuning)
# Rendered by `stackbuild render` from stacks/flash-attn-fsdp.yaml: edit the profile, not this file.
# Layers run from the most stable and expensive (OS, Python, torch) to the most volatile
# (pins, stackbuild's files, labels), so bumping one pin rebuilds only what follows it.

FROM debian:bullseye-slim

SHELL ["/bin/bash", "-o", "pipefail", "-c"]
ENV DEBIAN_FRONTEND=noninteractive \
    LANG=C.UTF-8 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONUNBUFFERED=1

# Site settings (index URLs that may carry credentials, an extra CA, mirrors) reach each network
# step from stackbuild's loopback server through this script, never through a layer.
COPY site.sh /opt/stackbuild/site.sh

# OS packages every stack needs: the interpreter and its headers, and a C toolchain for compiled
# ops and torch.compile (a stack's own system libraries come after torch, which stays shared).
# Versions come from the base image's distribution release, which the FROM line fixes.
# hadolint ignore=DL3008
RUN . /opt/stackbuild/site.sh && site_begin \
 && apt-get update \
 && apt-get install -y --no-install-recommends \
      build-essential \
      ca-certificates \
      git \
      python3 \
      python3-dev \
      python3-venv \
 && rm -rf /var/lib/apt/lists/* \
 && site_end

# Python 3.9 from the distribution, in a virtual environment so pip never
# touches the system's packages; pip, setuptools and wheel (and uv, which installs every later
# hash-checked section of the lock) from the lock, every file hash-checked.
COPY lock/1-bootstrap.txt /opt/stackbuild/lock/
RUN . /opt/stackbuild/site.sh && site_begin \
 && python3 -c 'import sys; assert sys.version_info[:2] == (3, 9), sys.version' \
 && python3 -m venv /opt/venv \
 && /opt/venv/bin/python -m pip install --no-deps --require-hashes -r /opt/stackbuild/lock/1-bootstrap.txt \
 && sed -n 's/ .*//; /==/p' /opt/stackbuild/lock/1-bootstrap.txt > /opt/stackbuild/held.txt \
 && site_end

ENV PATH=/opt/venv/bin:$PATH \
    VIRTUAL_ENV=/opt/venv

# torch: torch==2.0.1 from PyPI, with what it needs as of the
# release's date: the lock's [torch] section, installed without a resolver, every file hash-checked.
# The largest layer, shared by every stack and release with the same base, Python and torch lock.
COPY lock/2-torch.txt /opt/stackbuild/lock/
RUN . /opt/stackbuild/site.sh && site_begin \
 && uv pip install --python /opt/venv/bin/python --compile-bytecode --no-deps --require-hashes -r /opt/stackbuild/lock/2-torch.txt \
 && sed -n 's/ .*//; /==/p' /opt/stackbuild/lock/2-torch.txt >> /opt/stackbuild/held.txt \
 && site_end

# The remaining pins and what they need as of the release's date (the lock's [packages] section),
# installed without a resolver, every file hash-checked. Bumping one rebuilds from here on.
COPY lock/4-packages.txt /opt/stackbuild/lock/
RUN . /opt/stackbuild/site.sh && site_begin \
 && uv pip install --python /opt/venv/bin/python --compile-bytecode --no-deps --require-hashes -r /opt/stackbuild/lock/4-packages.txt \
 && sed -n 's/ .*//; /==/p' /opt/stackbuild/lock/4-packages.txt >> /opt/stackbuild/held.txt \
 && site_end

# Checked patches, after every install so none can undo them. Each fails the build unless its
# text occurs exactly as often as the profile says.
COPY patches/ /opt/stackbuild/patches/
# fsdp-save-cpu-clone: clone full-state-dict tensors on the CPU, not the GPU, when FSDP saves
RUN python /opt/stackbuild/patches/apply_patch.py /opt/stackbuild/patches/fsdp-save-cpu-clone.json

# stackbuild's own files: the smoke checks that prove the image (python /opt/stackbuild/smoke/run.py),
# what the image says about itself.
COPY smoke/ /opt/stackbuild/smoke/
COPY manifest.json /opt/stackbuild/manifest.json

WORKDIR /workspace
CMD ["bash"]

# Labels last: they change with every pin, and nothing builds on top of them.
LABEL \
      org.opencontainers.image.title="stackbuild flash-attn-fsdp@2023.06 (cpu)" \
      org.opencontainers.image.description="flash-attn with PyTorch FSDP (FastChat-style full fine-tuning)" \
      org.opencontainers.image.version="2023.06-cpu" \
      org.opencontainers.image.base.name="debian:bullseye-slim" \
      io.stackbuild.stack="flash-attn-fsdp" \
      io.stackbuild.release="2023.06" \
      io.stackbuild.target="cpu" \
      io.stackbuild.options="" \
      io.stackbuild.pins="{\"accelerate\":\"0.18.0\",\"datasets\":\"2.11.0\",\"fsspec\":\"2023.4.0\",\"huggingface-hub\":\"0.14.1\",\"numpy\":\"1.24.4\",\"pyarrow\":\"12.0.1\",\"sentencepiece\":\"0.1.99\",\"tokenizers\":\"0.13.3\",\"torch\":\"2.0.1\",\"transformers\":\"4.28.1\"}" \
      io.stackbuild.fixes="fa-build-no-torch,fastchat-functools-cache,fa-ampere-only,fsdp-save-oom,torch-cu117-no-sm90,torch-compile-py311,numpy2-old-torch,datasets-fsspec-drift" \
      io.stackbuild.lock="{\"accelerate\":\"0.18.0\",\"aiohttp\":\"3.8.4\",\"aiosignal\":\"1.3.1\",\"async-timeout\":\"4.0.2\",\"attrs\":\"23.1.0\",\"certifi\":\"2023.5.7\",\"charset-normalizer\":\"3.1.0\",\"cmake\":\"3.26.3\",\"datasets\":\"2.11.0\",\"dill\":\"0.3.6\",\"filelock\":\"3.12.0\",\"frozenlist\":\"1.3.3\",\"fsspec\":\"2023.4.0\",\"huggingface-hub\":\"0.14.1\",\"idna\":\"3.4\",\"jinja2\":\"3.1.2\",\"lit\":\"16.0.3\",\"markupsafe\":\"2.1.2\",\"mpmath\":\"1.3.0\",\"multidict\":\"6.0.4\",\"multiprocess\":\"0.70.14\",\"networkx\":\"3.1\",\"numpy\":\"1.24.4\",\"nvidia-cublas-cu11\":\"11.10.3.66\",\"nvidia-cuda-cupti-cu11\":\"11.7.101\",\"nvidia-cuda-nvrtc-cu11\":\"11.7.99\",\"nvidia-cuda-runtime-cu11\":\"11.7.99\",\"nvidia-cudnn-cu11\":\"8.5.0.96\",\"nvidia-cufft-cu11\":\"10.9.0.58\",\"nvidia-curand-cu11\":\"10.2.10.91\",\"nvidia-cusolver-cu11\":\"11.4.0.1\",\"nvidia-cusparse-cu11\":\"11.7.4.91\",\"nvidia-nccl-cu11\":\"2.14.3\",\"nvidia-nvtx-cu11\":\"11.7.91\",\"packaging\":\"23.1\",\"pandas\":\"2.0.2\",\"pip\":\"23.1.2\",\"psutil\":\"5.9.5\",\"pyarrow\":\"12.0.1\",\"python-dateutil\":\"2.8.2\",\"pytz\":\"2023.3\",\"pyyaml\":\"6.0\",\"regex\":\"2023.6.3\",\"requests\":\"2.31.0\",\"responses\":\"0.18.0\",\"sentencepiece\":\"0.1.99\",\"setuptools\":\"67.8.0\",\"six\":\"1.16.0\",\"sympy\":\"1.11.1\",\"tokenizers\":\"0.13.3\",\"torch\":\"2.0.1\",\"tqdm\":\"4.65.0\",\"transformers\":\"4.28.1\",\"triton\":\"2.0.0\",\"typing-extensions\":\"4.5.0\",\"tzdata\":\"2023.3\",\"urllib3\":\"2.0.3\",\"uv\":\"0.13.9\",\"wheel\":\"0.40.0\",\"xxhash\":\"3.2.0\",\"yarl\":\"1.9.2\"}"
