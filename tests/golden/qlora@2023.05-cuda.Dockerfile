# qlora@2023.05, target cuda
# QLoRA (4-bit base model, LoRA adapters, paged optimizers)
# Rendered by `stackbuild render` from stacks/qlora.yaml: edit the profile, not this file.
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

# The remaining pins, held to everything installed above. Bumping one rebuilds from here on.
RUN . /opt/stackbuild/site.sh && site_begin \
 && pip install -c /opt/stackbuild/held.txt \
      'accelerate @ git+https://github.com/huggingface/accelerate.git@0226f750257b3bf2cadc4f189f9eef0c764a0467' \
      bitsandbytes==0.39.0 \
      datasets==2.11.0 \
      einops==0.6.1 \
      evaluate==0.4.0 \
      fsspec==2023.4.0 \
      huggingface-hub==0.14.1 \
      'peft @ git+https://github.com/huggingface/peft.git@3714aa2fff158fdfa637b2b65952580801d890b2' \
      protobuf==3.20.3 \
      pyarrow==12.0.1 \
      safetensors==0.3.1 \
      scikit-learn==1.2.2 \
      scipy==1.10.1 \
      sentencepiece==0.1.99 \
      tokenizers==0.13.3 \
      'transformers @ git+https://github.com/huggingface/transformers.git@796162c51298547c357b20cc33d64cbcf77d0241' \
 && printf '%s\n' 'accelerate @ git+https://github.com/huggingface/accelerate.git@0226f750257b3bf2cadc4f189f9eef0c764a0467' bitsandbytes==0.39.0 datasets==2.11.0 einops==0.6.1 evaluate==0.4.0 fsspec==2023.4.0 huggingface-hub==0.14.1 'peft @ git+https://github.com/huggingface/peft.git@3714aa2fff158fdfa637b2b65952580801d890b2' protobuf==3.20.3 pyarrow==12.0.1 safetensors==0.3.1 scikit-learn==1.2.2 scipy==1.10.1 sentencepiece==0.1.99 tokenizers==0.13.3 'transformers @ git+https://github.com/huggingface/transformers.git@796162c51298547c357b20cc33d64cbcf77d0241' >> /opt/stackbuild/held.txt \
 && site_end

# stackbuild's own files: the smoke checks that prove the image (python /opt/stackbuild/smoke/run.py),
# what the image says about itself.
COPY smoke/ /opt/stackbuild/smoke/
COPY manifest.json /opt/stackbuild/manifest.json

ENV \
    LD_LIBRARY_PATH="/usr/local/cuda/lib64:/usr/local/nvidia/lib:/usr/local/nvidia/lib64"

WORKDIR /workspace
CMD ["bash"]

# Labels last: they change with every pin, and nothing builds on top of them.
LABEL \
      org.opencontainers.image.title="stackbuild qlora@2023.05 (cuda)" \
      org.opencontainers.image.description="QLoRA (4-bit base model, LoRA adapters, paged optimizers)" \
      org.opencontainers.image.version="2023.05-cuda" \
      org.opencontainers.image.base.name="nvidia/cuda:11.8.0-cudnn8-devel-ubuntu22.04" \
      io.stackbuild.stack="qlora" \
      io.stackbuild.release="2023.05" \
      io.stackbuild.target="cuda" \
      io.stackbuild.options="" \
      io.stackbuild.pins="{\"accelerate\":\"git+https://github.com/huggingface/accelerate.git@0226f750257b3bf2cadc4f189f9eef0c764a0467\",\"bitsandbytes\":\"0.39.0\",\"datasets\":\"2.11.0\",\"einops\":\"0.6.1\",\"evaluate\":\"0.4.0\",\"fsspec\":\"2023.4.0\",\"huggingface-hub\":\"0.14.1\",\"numpy\":\"1.24.4\",\"peft\":\"git+https://github.com/huggingface/peft.git@3714aa2fff158fdfa637b2b65952580801d890b2\",\"protobuf\":\"3.20.3\",\"pyarrow\":\"12.0.1\",\"safetensors\":\"0.3.1\",\"scikit-learn\":\"1.2.2\",\"scipy\":\"1.10.1\",\"sentencepiece\":\"0.1.99\",\"tokenizers\":\"0.13.3\",\"torch\":\"2.0.1+cu118\",\"transformers\":\"git+https://github.com/huggingface/transformers.git@796162c51298547c357b20cc33d64cbcf77d0241\"}" \
      io.stackbuild.fixes="protobuf-missing,qlora-transformers-too-old,bnb-cpu-lib,torch-cu117-no-sm90,torch-compile-py311,numpy2-old-torch,datasets-fsspec-drift"
