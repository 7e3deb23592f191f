#!/bin/bash
# One lease of a 2-GPU host for bench/gpu_truth.py, in three commands run back to back (the host
# is given back when idle, so each command keeps it busy up to LIMIT_S seconds):
#   bash bench/gpu_truth_lease.sh start LIMIT_S    carry DIR's contexts/ wheels/ sdist/ debs/: copy
#       DIR to /tmp/gt, install the small wheels, start DeepSpeed's and flash-attn's builds in
#       the background (own sessions, so they outlive the command), wait for them
#   bash bench/gpu_truth_lease.sh bnb LIMIT_S      carry DIR/wheels-big (bitsandbytes): install it,
#       run the alpaca-lora and qlora contexts, wait for the builds
#   bash bench/gpu_truth_lease.sh checks LIMIT_S   run the deepspeed and flash-attn contexts as each
#       build finishes; the table, results and build logs go to $OUT
#   bash bench/gpu_truth_lease.sh ds-image LIMIT_S  alone, one command: carry DIR's contexts/ wheels/
#       sdist/ debs/; build DeepSpeed exactly as the image does (gpu_truth.py build --as-image: the
#       context's pip line and build_ext hook, ops side by side), then its deepspeed-ops and
#       deepspeed-cpu-adam checks; builds.json, the build log and the table go to $OUT
# The image's own CUDA toolchain instead of the host's nvcc (a slim cuda base's cuda-toolkit wheels,
# `gpu_truth.py prepare DIR --toolkit 13.0.2`; nvidia-nvvm's wheel alone is 59 MiB, so it travels first):
#   bash bench/gpu_truth_lease.sh tk-nvvm          carry DIR/toolkit-nvvm: keep it in /tmp/tk
#   bash bench/gpu_truth_lease.sh tk-ds LIMIT_S    carry DIR's contexts/ wheels/ sdist/ debs/ toolkit/: build
#       DeepSpeed as the image does with the wheels as CUDA_HOME (gpu_truth.py build --as-image --toolkit
#       /tmp/tk), then run the deepspeed and flash-attn contexts
#   bash bench/gpu_truth_lease.sh tk-bnb           carry DIR/wheels-big: run the alpaca-lora and qlora
#       contexts; the whole table, builds.json and the build log go to $OUT
#   bash bench/gpu_truth_lease.sh tk-one LIMIT_S   alone, one command (prepare --toolkit 13.0.2 --toolkit-tar):
#       carry DIR's contexts/ wheels/ sdist/ debs/ toolkit-*.tar.xz (or the tar first with tk-carry when the
#       five pass 64 MiB): tk-ds, then the table to $OUT
#       (DSOPS="fused_adam cpu_adam": only those ops, a shorter build of the same toolchain)
# Both compiles of a release with the image's toolchain, over one lease of a 16-core GPU host (flash-attn's
# kernels alone take about 20 minutes there, more than one command's 10), from
# `gpu_truth.py prepare .gpu --release R --toolkit V --toolkit-tar` (V: the cuda-toolkit release R's torch
# depends on; 2026.12's torch 2.15.0: 13.2.2):
#   bash bench/gpu_truth_lease.sh tk-ds-train      after tk-carry, carry DIR's contexts/ wheels/ sdist/ debs/ and
#       .whl-train: DeepSpeed with the toolkit wheels (DSOPS), its checks, then the DeepSpeed training entry's GPU
#       variant with that build (BUILD_S, TRAIN_S: the time limits of the build and of the training run)
#   bash bench/gpu_truth_lease.sh tk-train         after tk-start and tk-wait built flash-attn (and DeepSpeed) into
#       /tmp/gt/site, carry .whl-train (`training_gpu.py prepare .whl-train --release flash-attn-fsdp@2026.12`): the
#       training entries' GPU variants of RELEASES (default flash-attn-fsdp@2026.12: flash-attention 2 through
#       attn_implementation, on the host's torch 2.11.0, that release's own) with those builds
#   bash bench/gpu_truth_lease.sh tk-carry          carry DIR/toolkit-V.tar.xz alone (13.2.2: 55 MiB; with the
#       rest it passes one call's 64 MiB): keep it in /tmp/tk for tk-start and tk-one
#   bash bench/gpu_truth_lease.sh tk-start LIMIT_S  carry DIR's contexts/ wheels/ sdist/ debs/ (about 15 MiB):
#       copy them to /tmp/gt, unpack the toolkit as CUDA_HOME, start DeepSpeed's build as the image does
#       (DSOPS: only those ops) and then flash-attn's (FAJOBS, default 12), both in the background with
#       the wheels' nvcc (own sessions: they outlive the command), wait up to LIMIT_S
#   bash bench/gpu_truth_lease.sh tk-wait LIMIT_S   carry nothing: wait for the builds, run the deepspeed and
#       flash-attn contexts as each finishes; table, builds.json and logs to $OUT (repeat while building)
#   then tk-bnb (carry DIR/wheels-big): the alpaca-lora and qlora contexts, and the whole table.
# DIR is $GPU_TRUTH_DIR or .gpu (made here by `python bench/gpu_truth.py prepare .gpu`).
# DSJOBS / FAJOBS: MAX_JOBS of each build (ds-image: the job budget; default the image's rule, which reads MemAvailable) (default 8 and 28 on 32 cores: DeepSpeed's ops build one
# after another with a few sources each, flash-attn's 70-odd kernels in parallel).
export PYTHONUNBUFFERED=1 NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
DIR=${GPU_TRUTH_DIR:-.gpu}; G=/tmp/gt; T0=$(date +%s); phase=$1; limit=${2:-540}; REPO=$PWD
status() { echo "== $(( $(date +%s)-T0 )) s"; cat $G/builds.json 2>/dev/null; echo; tail -n 3 $G/ds.out $G/fa.out 2>/dev/null
  for l in $G/deepspeed-serial.log $G/flash-attn.log; do [ -f $l ] && echo "-- $l: $(wc -l <$l) lines: $(tail -c 400 $l | tr '\n' ' ')"; done
  pgrep -fa '[g]t.py build' | cut -c1-100; uptime; }
waitfor() { while [ $(( $(date +%s)-T0 )) -lt $limit ]; do pgrep -f '[g]t.py build' >/dev/null || break; sleep 15; done; status; }
toolkit_tar() { ls $REPO/$DIR/toolkit-*.tar.xz 2>/dev/null || ls /tmp/tk/toolkit-*.tar.xz 2>/dev/null; }
built() { python3 -c "import json,sys; sys.exit(0 if '$1' in json.load(open('$G/builds.json')) else 1)" 2>/dev/null; }
# The training entries' GPU variants of RELEASES with what the lease built into $G/site (DeepSpeed, flash-attn)
# and the wheels of .whl-train on the path (tk-ds-train, tk-train)
train() {
  python3 -m pip install -q --no-index --no-deps --no-compile --upgrade --target $G/site $REPO/.whl-train/*.whl
  cd $REPO; for d in $G/debs/*.deb; do dpkg-deb -x $d $G/aio; done
  PYTHONPATH=$G/site PATH=$G/site/bin:$PATH CUDA_HOME=$(ls -d $G/toolkit-site/nvidia/cu13) \
    LD_LIBRARY_PATH=$G/aio/usr/lib/x86_64-linux-gnu${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH} \
    timeout ${TRAIN_S:-200} python3 bench/training_gpu.py run $(printf -- '--release %s ' $RELEASES) \
    --markdown $OUT/training-gpu.md; cat $OUT/training-gpu.md
}
case $phase in
start)
  rm -rf $G; cp -r $DIR $G; cp bench/gpu_truth.py /tmp/gt.py
  python3 -m pip install -q --no-index --no-deps --no-compile --upgrade --target $G/site $G/wheels/*.whl || exit 1
  for d in $G/debs/*.deb; do dpkg-deb -x $d $G/aio; done; ln -sf libaio.so.1 $G/aio/usr/lib/x86_64-linux-gnu/libaio.so
  cd $G
  setsid nohup python3 /tmp/gt.py build $G --no-wheels --only deepspeed --jobs ${DSJOBS:-8} > $G/ds.out 2>&1 < /dev/null &
  sleep 3
  setsid nohup python3 /tmp/gt.py build $G --no-wheels --only flash-attn --jobs ${FAJOBS:-28} > $G/fa.out 2>&1 < /dev/null &
  sleep 5; nvidia-smi -L; nproc; free -g; python3 -c 'import torch;print(torch.__version__, torch.version.cuda)'
  waitfor ;;
bnb)
  python3 -m pip install -q --no-index --no-deps --no-compile --upgrade --target $G/site $REPO/$DIR/wheels-big/*.whl || exit 1
  cd $G; python3 /tmp/gt.py run $G --context alpaca qlora
  status; waitfor ;;
checks)
  cd $G; ds=0; fa=0
  while [ $(( $(date +%s)-T0 )) -lt $limit ]; do
    [ $ds = 0 ] && built deepspeed && { python3 /tmp/gt.py run $G --context deepspeed; ds=1; }
    [ $fa = 0 ] && built flash-attn && { python3 /tmp/gt.py run $G --context flash-attn; fa=1; }
    [ $ds$fa = 11 ] && break; pgrep -f '[g]t.py build' >/dev/null || break; sleep 10; done
  status
  python3 /tmp/gt.py run $G --context none --markdown $OUT/gpu-truth.md > /dev/null
  cp $G/results.json $G/builds.json $OUT/ 2>/dev/null; for l in ds.out fa.out deepspeed-serial.log flash-attn.log; do [ -f $G/$l ] && tail -c 200000 $G/$l > $OUT/$l; done
  cat $OUT/gpu-truth.md ;;
ds-image)
  rm -rf $G; mkdir -p $G; for d in contexts wheels sdist debs; do cp -r $DIR/$d $G/; done; cp bench/gpu_truth.py /tmp/gt.py
  nproc; free -g | head -2; python3 -c 'import torch;print(torch.__version__, torch.version.cuda)'
  cd $G; timeout $(( limit - 60 )) python3 /tmp/gt.py build $G --only deepspeed --as-image ${DSJOBS:+--jobs $DSJOBS}; echo "build exit $?"
  python3 /tmp/gt.py run $G --context deepspeed --only deepspeed-ops deepspeed-cpu-adam --launcher-gpus 1 \
    --markdown $OUT/gpu-truth.md > /dev/null
  cat $OUT/gpu-truth.md; cp $G/builds.json $G/results.json $OUT/ 2>/dev/null
  [ -f $G/deepspeed-image.log ] && tail -c 4000000 $G/deepspeed-image.log > $OUT/deepspeed-image.log
  cat $G/builds.json ;;
tk-nvvm)
  mkdir -p /tmp/tk && cp $DIR/toolkit-nvvm/*.whl /tmp/tk/ && ls -la /tmp/tk
  nvidia-smi -L; nproc; free -g | head -2; python3 -c 'import torch;print(torch.__version__, torch.version.cuda)' ;;
tk-ds)
  rm -rf $G; mkdir -p $G; for d in contexts wheels sdist debs; do cp -r $DIR/$d $G/; done
  cp $DIR/toolkit/*.whl /tmp/tk/ && cp bench/gpu_truth.py /tmp/gt.py && ls /tmp/tk
  cd $G; timeout $(( limit - 90 )) python3 /tmp/gt.py build $G --only deepspeed --as-image --toolkit /tmp/tk \
    ${DSJOBS:+--jobs $DSJOBS}; echo "build exit $?"
  grep -c "toolkit-site/nvidia/cu13/bin/nvcc" $G/deepspeed-image.log; grep -m2 -o "[^ ]*/bin/nvcc " $G/deepspeed-image.log
  python3 /tmp/gt.py run $G --context deepspeed flash-attn --launcher-gpus 1
  cat $G/builds.json ;;
tk-one)
  rm -rf $G; mkdir -p $G; for d in contexts wheels sdist debs; do cp -r $DIR/$d $G/; done; cp bench/gpu_truth.py /tmp/gt.py
  nvidia-smi -L; nproc; python3 -c 'import torch;print(torch.__version__, torch.version.cuda)'
  cd $G; timeout $(( limit - 100 )) python3 /tmp/gt.py build $G --only deepspeed --as-image \
    --toolkit $(toolkit_tar | head -1) ${DSJOBS:+--jobs $DSJOBS} ${DSOPS:+--ops $DSOPS}; echo "build exit $?"
  echo "nvcc calls from the wheels: $(grep -c 'toolkit-site/nvidia/cu13/bin/nvcc' $G/deepspeed-image.log)," \
    "from elsewhere: $(grep -o '[^ ]*/bin/nvcc ' $G/deepspeed-image.log | grep -vc toolkit-site)"
  python3 /tmp/gt.py run $G --context ${CONTEXTS:-deepspeed flash-attn} --launcher-gpus 1 --markdown $OUT/gpu-truth.md > /dev/null
  cat $OUT/gpu-truth.md; cp $G/results.json $G/builds.json $OUT/ 2>/dev/null
  [ -f $G/deepspeed-image.log ] && tail -c 4000000 $G/deepspeed-image.log > $OUT/deepspeed-image.log ;;
tk-ds-train)
  # after tk-carry, one command: DeepSpeed built as the image does with the toolkit wheels (DSOPS: only those
  # ops), the deepspeed context's checks, then deepspeed-zero3-offload's training entry's GPU variant
  # (bench/training_gpu.py, carry .whl-train made by `training_gpu.py prepare .whl-train --release
  # deepspeed-zero3-offload@2026.12`) with that DeepSpeed; each result goes to $OUT as soon as it exists
  rm -rf $G; mkdir -p $G; for d in contexts wheels sdist debs; do cp -r $DIR/$d $G/; done; cp bench/gpu_truth.py /tmp/gt.py
  nvidia-smi -L; nproc; python3 -c 'import torch;print(torch.__version__, torch.version.cuda)'
  # torch's headers include cuSPARSE's (cusparse.h), which the image has beside the compiler in nvidia/cu13/include
  # (torch's own nvidia-cusparse wheel) and this host keeps in its torch's venv
  export CPATH=$(python3 -c "import torch,os;print(os.path.join(os.path.dirname(os.path.dirname(torch.__file__)),'nvidia','cu13','include'))")${CPATH:+:$CPATH}
  cd $G; timeout ${BUILD_S:-300} python3 /tmp/gt.py build $G --only deepspeed --as-image \
    --toolkit $(toolkit_tar | head -1) ${DSJOBS:+--jobs $DSJOBS} ${DSOPS:+--ops $DSOPS}; echo "build exit $?"
  echo "nvcc calls from the wheels: $(grep -c 'toolkit-site/nvidia/cu13/bin/nvcc' $G/deepspeed-image.log)," \
    "from elsewhere: $(grep -o '[^ ]*/bin/nvcc ' $G/deepspeed-image.log | grep -vc toolkit-site)"
  cp $G/builds.json $OUT/ 2>/dev/null; tail -c 2000000 $G/deepspeed-image.log > $OUT/deepspeed-image.log
  timeout 150 python3 /tmp/gt.py run $G --context deepspeed --launcher-gpus 1 --markdown $OUT/gpu-truth.md > /dev/null
  cat $OUT/gpu-truth.md; cp $G/results.json $OUT/ 2>/dev/null
  RELEASES=deepspeed-zero3-offload@2026.12 train ;;
tk-train)
  RELEASES=${RELEASES:-flash-attn-fsdp@2026.12} train ;;
tk-carry)
  mkdir -p /tmp/tk && cp $DIR/toolkit-*.tar.xz /tmp/tk/ && ls -la /tmp/tk
  nvidia-smi -L; nproc; free -g | head -2; python3 -c 'import torch;print(torch.__version__, torch.version.cuda)' ;;
tk-start)
  rm -rf $G; mkdir -p $G; for d in contexts wheels sdist debs; do cp -r $DIR/$d $G/; done; cp bench/gpu_truth.py /tmp/gt.py
  tar=$(toolkit_tar | head -1); [ -n "$tar" ] || { echo "no toolkit-*.tar.xz in $DIR or /tmp/tk (run tk-carry)"; exit 1; }
  cp $tar $G/
  nvidia-smi -L; nproc; free -g | head -2; python3 -c 'import torch;print(torch.__version__, torch.version.cuda)'
  cd $G
  setsid nohup python3 /tmp/gt.py build $G --only deepspeed --as-image --toolkit $G/$(basename $tar) \
    ${DSJOBS:+--jobs $DSJOBS} ${DSOPS:+--ops $DSOPS} > $G/ds.out 2>&1 < /dev/null &
  # flash-attn's build finds the same CUDA_HOME (DIR/toolkit-site) once DeepSpeed's has unpacked it
  for _ in $(seq 120); do [ -e $G/toolkit-site/nvidia/cu13/lib64 ] && break; sleep 2; done
  ls -la $G/toolkit-site/nvidia/cu13/ || exit 1
  setsid nohup python3 /tmp/gt.py build $G --no-wheels --only flash-attn --jobs ${FAJOBS:-12} > $G/fa.out 2>&1 < /dev/null &
  sleep 10; grep -m1 "CUDA_HOME" $G/ds.out; waitfor ;;
tk-wait)
  cd $G; ds=0; fa=0
  while [ $(( $(date +%s)-T0 )) -lt $limit ]; do
    [ $ds = 0 ] && built deepspeed && { python3 /tmp/gt.py run $G --context deepspeed --launcher-gpus 1; ds=1; }
    [ $fa = 0 ] && built flash-attn && { python3 /tmp/gt.py run $G --context flash-attn --launcher-gpus 1; fa=1; }
    [ $ds$fa = 11 ] && break; pgrep -f '[g]t.py build' >/dev/null || break; sleep 10; done
  status
  echo "nvcc calls from the wheels: $(cat $G/deepspeed-image.log $G/flash-attn.log 2>/dev/null | grep -c 'toolkit-site/nvidia/cu13/bin/nvcc')," \
    "from elsewhere: $(cat $G/deepspeed-image.log $G/flash-attn.log 2>/dev/null | grep -o '[^ ]*/bin/nvcc ' | grep -vc toolkit-site)"
  python3 /tmp/gt.py run $G --context none --markdown $OUT/gpu-truth.md > /dev/null
  cp $G/results.json $G/builds.json $OUT/ 2>/dev/null
  for l in deepspeed-image.log flash-attn.log ds.out fa.out; do [ -f $G/$l ] && tail -c 2000000 $G/$l > $OUT/$l; done
  cat $OUT/gpu-truth.md ;;
tk-bnb)
  python3 -m pip install -q --no-index --no-deps --no-compile --upgrade --target $G/site $REPO/$DIR/wheels-big/*.whl || exit 1
  cd $G; python3 /tmp/gt.py run $G --context alpaca qlora --launcher-gpus 1
  python3 /tmp/gt.py run $G --context none --markdown $OUT/gpu-truth.md > /dev/null
  cp $G/results.json $G/builds.json $OUT/ 2>/dev/null; [ -f $G/deepspeed-image.log ] && tail -c 4000000 $G/deepspeed-image.log > $OUT/deepspeed-image.log
  cat $OUT/gpu-truth.md ;;
esac
