# deepspeed-zero3-offload@2023.06, target cuda
# DeepSpeed ZeRO-3 with CPU/NVMe offload and pre-compiled ops
# Rendered by `stackbuild render` from stacks/deepspeed-zero3-offload.yaml: edit the profile, not this file.
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

# The stack's own system libraries, after torch: every stack on the same base, Python and torch
# lock shares the layers above, the torch layer (gigabytes) included.
# hadolint ignore=DL3008
RUN . /opt/stackbuild/site.sh && site_begin \
 && apt-get update \
 && apt-get install -y --no-install-recommends \
      libaio-dev \
 && rm -rf /var/lib/apt/lists/* \
 && site_end

# deepspeed: ZeRO-3 offload; its ops are pre-compiled here, LLM-unused ones switched off
# Built with --no-build-isolation: its setup.py imports the torch installed above.
# The build host's CPU flags go to /opt/stackbuild/build-host-cpu.txt: code compiled here may need them.
RUN . /opt/stackbuild/site.sh && site_begin \
 && pip install -c /opt/stackbuild/held.txt ninja==1.11.1 pydantic==1.10.9 py-cpuinfo==9.0.0 hjson==3.1.0 \
 && DS_BUILD_OPS=1 \
    DS_BUILD_QUANTIZER=0 \
    DS_BUILD_RANDOM_LTD=0 \
    DS_BUILD_SPARSE_ATTN=0 \
    DS_BUILD_SPATIAL_INFERENCE=0 \
    DS_BUILD_STOCHASTIC_TRANSFORMER=0 \
    DS_BUILD_TRANSFORMER=0 \
    DS_BUILD_TRANSFORMER_INFERENCE=0 \
    TORCH_CUDA_ARCH_LIST='8.0;8.6;9.0' \
    pip install --no-build-isolation -c /opt/stackbuild/held.txt deepspeed==0.9.3 \
 && printf '%s\n' ninja==1.11.1 pydantic==1.10.9 py-cpuinfo==9.0.0 hjson==3.1.0 deepspeed==0.9.3 >> /opt/stackbuild/held.txt \
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
 && printf '%s\n' accelerate==0.18.0 datasets==2.11.0 fsspec==2023.4.0 huggingface-hub==0.14.1 pyarrow==12.0.1 sentencepiece==0.1.99 tokenizers==0.13.3 transformers==4.28.1 >> /opt/stackbuild/held.txt \
 && site_end

# stackbuild's own files: the smoke checks that prove the image (python /opt/stackbuild/smoke/run.py),
# what the image says about itself, and ready-made configs.
# files/ds_config_zero3_offload.json: ZeRO-3 with optimizer and parameters offloaded to pinned CPU memory; "auto" values are filled by the Hugging Face Trainer.
COPY files/ /opt/stackbuild/files/
COPY smoke/ /opt/stackbuild/smoke/
COPY manifest.json /opt/stackbuild/manifest.json

WORKDIR /workspace
CMD ["bash"]

# Labels last: they change with every pin, and nothing builds on top of them.
LABEL \
      org.opencontainers.image.title="stackbuild deepspeed-zero3-offload@2023.06 (cuda)" \
      org.opencontainers.image.description="DeepSpeed ZeRO-3 with CPU/NVMe offload and pre-compiled ops" \
      org.opencontainers.image.version="2023.06-cuda" \
      org.opencontainers.image.base.name="nvidia/cuda:11.8.0-cudnn8-devel-ubuntu22.04" \
      io.stackbuild.stack="deepspeed-zero3-offload" \
      io.stackbuild.release="2023.06" \
      io.stackbuild.target="cuda" \
      io.stackbuild.options="" \
      io.stackbuild.pins="{\"accelerate\":\"0.18.0\",\"datasets\":\"2.11.0\",\"deepspeed\":\"0.9.3\",\"fsspec\":\"2023.4.0\",\"hjson\":\"3.1.0\",\"huggingface-hub\":\"0.14.1\",\"ninja\":\"1.11.1\",\"numpy\":\"1.24.4\",\"py-cpuinfo\":\"9.0.0\",\"pyarrow\":\"12.0.1\",\"pydantic\":\"1.10.9\",\"sentencepiece\":\"0.1.99\",\"tokenizers\":\"0.13.3\",\"torch\":\"2.0.1+cu118\",\"transformers\":\"4.28.1\"}" \
      io.stackbuild.fixes="ds-aio-precompile,ds-ninja-missing,ds-cpu-adam-build,ds-sparse-attn-torch2,ds-era-pin,ds-pydantic2,torch-cu117-no-sm90,torch-compile-py311,numpy2-old-torch,datasets-fsspec-drift"
