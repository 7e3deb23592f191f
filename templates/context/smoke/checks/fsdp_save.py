"""A tiny model under FSDP in two processes trains a step and saves a full state dict on rank 0.

With two GPUs it runs on them (NCCL); without a GPU, or with one, in two CPU processes (gloo) where this
torch's FSDP runs on CPU (2.1 and later): one process shards nothing, so one GPU has no gather to prove (an
older torch runs its one process there). On a GPU it also proves where the saved
tensors land: on the CPU - through offload_to_cpu=True, or, in images carrying the FSDP save
patch, through the patch itself with offload_to_cpu=False (the seed's out-of-memory at save).
"""

# smoke-runner: preload torch

import os
import socket
import tempfile

from _smoke import context, first_line, gpu_count, report

PATCH = "fsdp-save-cpu-clone"


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def worker(rank, world, port, device_kind, offload, out_dir):
    import torch
    import torch.distributed as dist
    from torch.distributed.fsdp import FullStateDictConfig, StateDictType
    from torch.distributed.fsdp import FullyShardedDataParallel as FSDP

    backend = "nccl" if device_kind == "cuda" else "gloo"
    dist.init_process_group(backend, init_method="tcp://127.0.0.1:{}".format(port), rank=rank, world_size=world)
    try:
        torch.manual_seed(0)
        model = torch.nn.Sequential(torch.nn.Linear(32, 64), torch.nn.ReLU(), torch.nn.Linear(64, 8))
        if device_kind == "cuda":
            torch.cuda.set_device(rank)
            wrapped = FSDP(model, device_id=torch.cuda.current_device())
            device = torch.device("cuda", rank)
        else:
            wrapped = FSDP(model, device_id=torch.device("cpu"))
            device = torch.device("cpu")
        optimizer = torch.optim.SGD(wrapped.parameters(), lr=0.1)
        x, y = torch.randn(4, 32, device=device), torch.randn(4, 8, device=device)
        loss = torch.nn.functional.mse_loss(wrapped(x), y)
        loss.backward()
        optimizer.step()
        config = FullStateDictConfig(offload_to_cpu=offload, rank0_only=True)
        with FSDP.state_dict_type(wrapped, StateDictType.FULL_STATE_DICT, config):
            state = wrapped.state_dict()
        if rank == 0:
            devices = sorted({str(t.device) for t in state.values()})
            torch.save({"state": state, "devices": devices, "loss": loss.item()}, os.path.join(out_dir, "full.pt"))
        dist.barrier()
        # past the last collective: what fails after this is gloo's teardown, not FSDP
        open(os.path.join(out_dir, "done-{}".format(rank)), "w").close()
    finally:
        dist.destroy_process_group()


def main():
    _, manifest = context()
    try:
        import torch
        import torch.multiprocessing as mp
    except Exception as exc:
        report("fail", "cannot import torch: {} (install the release's torch pin)".format(first_line(exc)))

    patched = PATCH in [p["id"] for p in manifest.get("patches", [])]
    gpus = gpu_count()
    major_minor = tuple(int(p) for p in torch.__version__.split("+")[0].split(".")[:2])
    one_gpu = ""
    if gpus >= 2 or (gpus == 1 and major_minor < (2, 1)):
        device_kind, world = "cuda", min(gpus, 2)
        # the patch makes the save land on the CPU by itself: prove it with offload_to_cpu off
        offload = not patched
    else:
        if major_minor < (2, 1):
            report("skip", "no GPU visible, and torch {}'s FSDP needs CUDA (CPU FSDP came in torch 2.1); run with "
                           "--gpus all".format(torch.__version__))
        if gpus == 1:
            # one process shards nothing (FSDP falls back to NO_SHARD) and ignores offload_to_cpu: its state
            # dict stays on cuda:0 (seen on an H100, torch 2.11), which is no gather and no fault of the image
            one_gpu = ("; one GPU: FSDP in one process shards nothing, so there is no gather to prove on it - "
                       "the save ran on the CPU in 2 processes (two GPUs prove the GPU path)")
        device_kind, world = "cpu", 2
        # the tensors are on the CPU already; torch's CPU FSDP fails with offload_to_cpu=True (seen on 2.3
        # and 2.10: "setStorage: ... out of bounds for storage of size 0")
        offload = False
    os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
    with tempfile.TemporaryDirectory() as out_dir:
        teardown = ""
        try:
            # CUDA needs spawned workers (so does a process that counted its GPU: CUDA is initialised in it); on
            # the CPU they are forked, with torch already imported
            mp.start_processes(worker, args=(world, free_port(), device_kind, offload, out_dir), nprocs=world,
                               join=True, start_method="spawn" if device_kind == "cuda" or gpus else "fork")
        except Exception as exc:  # a failed worker's traceback: its last line names the error
            lines = [line for line in str(exc).strip().splitlines() if line.strip()]
            last = lines[-1] if lines else type(exc).__name__
            if not all(os.path.exists(os.path.join(out_dir, "done-{}".format(r))) for r in range(world)):
                report("fail", "FSDP training or saving failed on {} ({} process(es), offload_to_cpu={}): {}".format(
                    device_kind, world, offload, last))
            # every rank finished training, saving and the last barrier: only the shutdown failed
            teardown = "; a worker died after the save, shutting down {} ({})".format(
                "NCCL" if device_kind == "cuda" else "gloo", last)
        saved = torch.load(os.path.join(out_dir, "full.pt"))
        size = os.path.getsize(os.path.join(out_dir, "full.pt"))
    state = saved["state"]
    expected = {"0.weight": (64, 32), "0.bias": (64,), "2.weight": (8, 64), "2.bias": (8,)}
    shapes = {k: tuple(v.shape) for k, v in state.items()}
    if shapes != expected:
        report("fail", "the full state dict has {} instead of {} (FSDP saved shards or wrapped names)".format(
            shapes, expected))
    if saved["devices"] != ["cpu"]:
        fix = ("the FSDP save patch is missing from torch: rebuild the image" if patched else
               "save with FullStateDictConfig(offload_to_cpu=True, rank0_only=True)")
        report("fail", "the full state dict was gathered on {}, not the CPU - saving a large model runs out of GPU "
                       "memory ({})".format(", ".join(saved["devices"]), fix))
    how = "the FSDP save patch (offload_to_cpu=False)" if device_kind == "cuda" and patched else \
        "offload_to_cpu={}".format(offload)
    report("pass", "FSDP on {} ({} processes) trained a step (loss {:.3f}) and saved a full state dict on rank 0 "
                   "({} tensors, {} bytes, on the CPU through {})".format(
                       device_kind, world, saved["loss"], len(state), size, how) + one_gpu + teardown)


if __name__ == "__main__":
    main()
