# alpaca-lora@2026.11, target cpu
# alpaca-lora (LoRA fine-tuning with peft, 8-bit base model)
# Rendered by `stackbuild render` from stacks/alpaca-lora.yaml: edit the profile, not this file.
# Layers run from the most stable and expensive (OS, Python, torch) to the most volatile
# (pins, stackbuild's files, labels), so bumping one pin rebuilds only what follows it.

FROM debian:bookworm-slim

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

# Python 3.11 from the distribution, in a virtual environment so pip never
# touches the system's packages; pip, setuptools and wheel (and uv, which installs every later
# hash-checked section of the lock) from the lock, every file hash-checked.
COPY lock/1-bootstrap.txt /opt/stackbuild/lock/
RUN . /opt/stackbuild/site.sh && site_begin \
 && python3 -c 'import sys; assert sys.version_info[:2] == (3, 11), sys.version' \
 && python3 -m venv /opt/venv \
 && /opt/venv/bin/python -m pip install --no-deps --require-hashes -r /opt/stackbuild/lock/1-bootstrap.txt \
 && sed -n 's/ .*//; /==/p' /opt/stackbuild/lock/1-bootstrap.txt > /opt/stackbuild/held.txt \
 && site_end

ENV PATH=/opt/venv/bin:$PATH \
    VIRTUAL_ENV=/opt/venv

# torch: torch==2.10.0 from PyPI, with what it needs as of the
# release's date: the lock's [torch] section, installed without a resolver, every file hash-checked.
# The largest layer, shared by every stack and release with the same base, Python and torch lock.
# triton/backends/nvidia/lib: copies of CUDA libraries a package bundles;
# cuda_dedupe.py links each that is byte for byte a file of the CUDA wheels (or an earlier copy) to
# that file, in this layer, so the bytes are stored once (a different build is left as it is).
COPY cuda_dedupe.py /opt/stackbuild/cuda_dedupe.py
COPY lock/2-torch.txt /opt/stackbuild/lock/
RUN . /opt/stackbuild/site.sh && site_begin \
 && uv pip install --python /opt/venv/bin/python --compile-bytecode --no-deps --require-hashes -r /opt/stackbuild/lock/2-torch.txt \
 && /opt/venv/bin/python /opt/stackbuild/cuda_dedupe.py /opt/venv/lib/python3.11/site-packages triton/backends/nvidia/lib=nvidia \
 && sed -n 's/ .*//; /==/p' /opt/stackbuild/lock/2-torch.txt >> /opt/stackbuild/held.txt \
 && site_end

# Multi-node: an ssh server and client (DeepSpeed's and MPI-style launchers), pdsh, the RDMA
# user-space libraries NCCL needs for InfiniBand/RoCE, and NCCL's defaults (/etc/nccl.conf).
# Small, after torch (which stays shared) and before anything stack-specific (so every stack of
# the release family shares it too). Host keys are deleted here and made by stackbuild-sshd when
# a container starts: no two containers of this image may share one.
COPY multinode/ /opt/stackbuild/multinode/
# hadolint ignore=DL3008
RUN . /opt/stackbuild/site.sh && site_begin \
 && apt-get update \
 && apt-get install -y --no-install-recommends \
      ibverbs-providers \
      iproute2 \
      libibverbs1 \
      librdmacm1 \
      openssh-client \
      openssh-server \
      pdsh \
 && apt-get clean \
 && rm -rf /var/lib/apt/lists/* \
 && rm -f /etc/ssh/ssh_host_* \
 && install -m 0755 /opt/stackbuild/multinode/stackbuild-sshd /usr/local/bin/stackbuild-sshd \
 && install -m 0644 /opt/stackbuild/multinode/nccl.conf /etc/nccl.conf \
 && install -m 0644 /opt/stackbuild/multinode/ssh_config /etc/ssh/ssh_config.d/stackbuild.conf \
 && site_end
ENV PDSH_RCMD_TYPE=ssh

# The remaining pins and what they need as of the release's date (the lock's [packages] section),
# installed without a resolver, every file hash-checked. Bumping one rebuilds from here on.
COPY lock/4-packages.txt /opt/stackbuild/lock/
RUN . /opt/stackbuild/site.sh && site_begin \
 && uv pip install --python /opt/venv/bin/python --compile-bytecode --no-deps --require-hashes -r /opt/stackbuild/lock/4-packages.txt \
 && sed -n 's/ .*//; /==/p' /opt/stackbuild/lock/4-packages.txt >> /opt/stackbuild/held.txt \
 && site_end

# The stack's own top-level pins, last and in a layer of their own (the lock's [last] section):
# bumping one rebuilds only this.
COPY lock/5-last.txt /opt/stackbuild/lock/
RUN . /opt/stackbuild/site.sh && site_begin \
 && uv pip install --python /opt/venv/bin/python --compile-bytecode --no-deps --require-hashes -r /opt/stackbuild/lock/5-last.txt \
 && sed -n 's/ .*//; /==/p' /opt/stackbuild/lock/5-last.txt >> /opt/stackbuild/held.txt \
 && site_end

# stackbuild's own files: the smoke checks that prove the image (python /opt/stackbuild/smoke/run.py),
# what the image says about itself.
COPY smoke/ /opt/stackbuild/smoke/
COPY manifest.json /opt/stackbuild/manifest.json

WORKDIR /workspace
CMD ["bash"]

# Labels last: they change with every pin, and nothing builds on top of them.
LABEL \
      org.opencontainers.image.title="stackbuild alpaca-lora@2026.11 (cpu)" \
      org.opencontainers.image.description="alpaca-lora (LoRA fine-tuning with peft, 8-bit base model)" \
      org.opencontainers.image.version="2026.11-cpu" \
      org.opencontainers.image.base.name="debian:bookworm-slim" \
      io.stackbuild.stack="alpaca-lora" \
      io.stackbuild.release="2026.11" \
      io.stackbuild.target="cpu" \
      io.stackbuild.options="" \
      io.stackbuild.pins="{\"accelerate\":\"1.13.0\",\"bitsandbytes\":\"0.49.1\",\"datasets\":\"4.8.4\",\"fire\":\"0.7.1\",\"peft\":\"0.21.2\",\"protobuf\":\"7.36.2\",\"sentencepiece\":\"0.2.1\",\"torch\":\"2.10.0\",\"transformers\":\"5.14.1\"}" \
      io.stackbuild.fixes="protobuf-missing,peft-empty-adapter,bnb-cpu-lib" \
      io.stackbuild.lock="{\"accelerate\":\"1.13.0\",\"aiohappyeyeballs\":\"2.7.1\",\"aiohttp\":\"3.14.5\",\"aiosignal\":\"1.4.0\",\"annotated-doc\":\"0.0.7\",\"annotated-types\":\"0.8.0\",\"anyio\":\"4.14.2\",\"attrs\":\"26.1.0\",\"bitsandbytes\":\"0.49.1\",\"certifi\":\"2026.10.19.post1\",\"charset-normalizer\":\"3.5.3\",\"click\":\"8.5.1\",\"cuda-bindings\":\"12.9.4\",\"cuda-pathfinder\":\"1.3.3\",\"datasets\":\"4.8.4\",\"dill\":\"0.4.1\",\"filelock\":\"3.20.3\",\"fire\":\"0.7.1\",\"frozenlist\":\"1.8.0\",\"fsspec\":\"2026.1.0\",\"h11\":\"0.16.0\",\"hf-xet\":\"1.8.0\",\"httpcore\":\"1.0.9\",\"httpx\":\"0.28.1\",\"huggingface-hub\":\"1.33.0\",\"idna\":\"3.20\",\"jinja2\":\"3.1.6\",\"markdown-it-py\":\"4.3.0\",\"markupsafe\":\"3.0.3\",\"mdurl\":\"0.1.2\",\"mpmath\":\"1.3.0\",\"multidict\":\"7.2.1\",\"multiprocess\":\"0.70.19\",\"networkx\":\"3.6.1\",\"numpy\":\"2.4.6\",\"nvidia-cublas-cu12\":\"12.8.4.1\",\"nvidia-cuda-cupti-cu12\":\"12.8.90\",\"nvidia-cuda-nvrtc-cu12\":\"12.8.93\",\"nvidia-cuda-runtime-cu12\":\"12.8.90\",\"nvidia-cudnn-cu12\":\"9.10.2.21\",\"nvidia-cufft-cu12\":\"11.3.3.83\",\"nvidia-cufile-cu12\":\"1.13.1.3\",\"nvidia-curand-cu12\":\"10.3.9.90\",\"nvidia-cusolver-cu12\":\"11.7.3.90\",\"nvidia-cusparse-cu12\":\"12.5.8.93\",\"nvidia-cusparselt-cu12\":\"0.7.1\",\"nvidia-nccl-cu12\":\"2.27.5\",\"nvidia-nvjitlink-cu12\":\"12.8.93\",\"nvidia-nvshmem-cu12\":\"3.4.5\",\"nvidia-nvtx-cu12\":\"12.8.90\",\"packaging\":\"26.4\",\"pandas\":\"3.1.1\",\"peft\":\"0.21.2\",\"pip\":\"25.3\",\"propcache\":\"0.5.4\",\"protobuf\":\"7.36.2\",\"psutil\":\"7.2.2\",\"pyarrow\":\"26.0.1\",\"pydantic\":\"2.13.5\",\"pydantic-core\":\"2.46.5\",\"pygments\":\"2.21.0\",\"python-dateutil\":\"4.0.0\",\"pyyaml\":\"6.0.4\",\"regex\":\"2026.11.19\",\"requests\":\"2.34.2\",\"rich\":\"15.0.0\",\"safetensors\":\"0.8.0\",\"sentencepiece\":\"0.2.1\",\"setuptools\":\"80.9.0\",\"shellingham\":\"1.5.4\",\"sympy\":\"1.14.0\",\"termcolor\":\"3.3.0\",\"tokenizers\":\"0.22.2\",\"torch\":\"2.10.0\",\"tqdm\":\"4.70.1\",\"transformers\":\"5.14.1\",\"triton\":\"3.6.0\",\"typer\":\"0.29.2\",\"typing-extensions\":\"4.15.0\",\"typing-inspection\":\"0.4.5\",\"tzdata\":\"2026.6\",\"urllib3\":\"2.8.0\",\"uv\":\"0.13.9\",\"wheel\":\"0.45.1\",\"xxhash\":\"4.1.0\",\"yarl\":\"1.25.1\"}"
