# flash-attn-fsdp@2023.06, target cuda, options xformers
# flash-attn with PyTorch FSDP (FastChat-style full fine-tuning)
# Rendered by `stackbuild render` from stacks/flash-attn-fsdp.yaml: edit the profile, not this file.
# Layers run from the most stable and expensive (OS, Python, torch) to the most volatile
# (pins, stackbuild's files, labels), so bumping one pin rebuilds only what follows it.

FROM nvidia/cuda:11.8.0-cudnn8-devel-ubuntu22.04

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

# Python 3.10 from the distribution, in a virtual environment so pip never
# touches the system's packages; build tools pinned (and held) for reproducible source builds.
RUN . /opt/stackbuild/site.sh && site_begin \
 && python3 -c 'import sys; assert sys.version_info[:2] == (3, 10), sys.version' \
 && python3 -m venv /opt/venv \
 && /opt/venv/bin/python -m pip install pip==23.1.2 setuptools==67.8.0 wheel==0.40.0 uv==0.13.9 \
 && printf '%s\n' pip==23.1.2 setuptools==67.8.0 wheel==0.40.0 uv==0.13.9 > /opt/stackbuild/held.txt \
 && site_end

ENV PATH=/opt/venv/bin:$PATH \
    VIRTUAL_ENV=/opt/venv

# torch: torch==2.0.1+cu118 from https://download.pytorch.org/whl/cu118 (its CUDA 11.8 build).
# The largest layer, shared by every stack and release with the same base, Python and torch;
# held.txt constrains every later pip install to it, so nothing can swap torch behind our back.
RUN . /opt/stackbuild/site.sh && site_begin \
 && pip install -c /opt/stackbuild/held.txt --extra-index-url https://download.pytorch.org/whl/cu118 torch==2.0.1+cu118 numpy==1.24.4 \
 && printf '%s\n' torch==2.0.1+cu118 numpy==1.24.4 >> /opt/stackbuild/held.txt \
 && site_end

# flash-attn: the last 1.x release, whose API (flash_attn_unpadded_*) FastChat's mid-2023 monkeypatch imports
# Built with --no-build-isolation: its setup.py imports the torch installed above.
# MAX_JOBS is sized to the build host's memory (9 GiB per compile job).
# The build host's CPU flags go to /opt/stackbuild/build-host-cpu.txt: code compiled here may need them.
RUN . /opt/stackbuild/site.sh && site_begin \
 && MAX_JOBS="$(awk -v per=9 -v cpus="$(nproc)" '/^MemAvailable:/ { n = int($2 / 1048576 / per); if (n < 1) n = 1; if (n > cpus) n = cpus; print n }' /proc/meminfo)" \
 && export MAX_JOBS \
 && pip install -c /opt/stackbuild/held.txt ninja==1.11.1 packaging==23.1 einops==0.6.1 \
 && TORCH_CUDA_ARCH_LIST='8.0;9.0' \
    pip install --no-build-isolation -c /opt/stackbuild/held.txt flash-attn==1.0.9 \
 && printf '%s\n' ninja==1.11.1 packaging==23.1 einops==0.6.1 flash-attn==1.0.9 >> /opt/stackbuild/held.txt \
 && { grep -m1 -E '^(flags|Features)' /proc/cpuinfo || true; } > /opt/stackbuild/build-host-cpu.txt \
 && site_end

# The remaining pins, held to everything installed above. Bumping one rebuilds from here on.
RUN . /opt/stackbuild/site.sh && site_begin \
 && pip install -c /opt/stackbuild/held.txt \
      accelerate==0.18.0 \
      datasets==2.11.0 \
      fsspec==2023.4.0 \
      huggingface-hub==0.14.1 \
      pyarrow==12.0.1 \
      sentencepiece==0.1.99 \
      tokenizers==0.13.3 \
      transformers==4.28.1 \
      xformers==0.0.20 \
 && printf '%s\n' accelerate==0.18.0 datasets==2.11.0 fsspec==2023.4.0 huggingface-hub==0.14.1 pyarrow==12.0.1 sentencepiece==0.1.99 tokenizers==0.13.3 transformers==4.28.1 xformers==0.0.20 >> /opt/stackbuild/held.txt \
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
      org.opencontainers.image.title="stackbuild flash-attn-fsdp@2023.06 (cuda)" \
      org.opencontainers.image.description="flash-attn with PyTorch FSDP (FastChat-style full fine-tuning)" \
      org.opencontainers.image.version="2023.06-cuda" \
      org.opencontainers.image.base.name="nvidia/cuda:11.8.0-cudnn8-devel-ubuntu22.04" \
      io.stackbuild.stack="flash-attn-fsdp" \
      io.stackbuild.release="2023.06" \
      io.stackbuild.target="cuda" \
      io.stackbuild.options="xformers" \
      io.stackbuild.pins="{\"accelerate\":\"0.18.0\",\"datasets\":\"2.11.0\",\"einops\":\"0.6.1\",\"flash-attn\":\"1.0.9\",\"fsspec\":\"2023.4.0\",\"huggingface-hub\":\"0.14.1\",\"ninja\":\"1.11.1\",\"numpy\":\"1.24.4\",\"packaging\":\"23.1\",\"pyarrow\":\"12.0.1\",\"sentencepiece\":\"0.1.99\",\"tokenizers\":\"0.13.3\",\"torch\":\"2.0.1+cu118\",\"transformers\":\"4.28.1\",\"xformers\":\"0.0.20\"}" \
      io.stackbuild.fixes="fa-build-no-torch,fastchat-functools-cache,fa-ampere-only,fsdp-save-oom,torch-cu117-no-sm90,torch-compile-py311,numpy2-old-torch,datasets-fsspec-drift"
