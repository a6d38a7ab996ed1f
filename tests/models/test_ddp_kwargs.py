"""DDP as our Accelerators build it: no per-forward buffer sync, and no deprecation warning."""

import socket
import warnings

import torch
import torch.distributed as dist

from instructflow.models.runtime import make_accelerator


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_ddp_skips_the_buffer_sync_of_each_forward_without_a_future_warning():
    dist.init_process_group(
        "gloo", init_method=f"tcp://127.0.0.1:{_free_port()}", rank=0, world_size=1
    )
    try:
        model = torch.nn.Linear(2, 2)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            # as accelerate builds it on CPU (Accelerator.prepare_model, MULTI_CPU)
            settings = make_accelerator("fp32").ddp_handler.to_kwargs()
            ddp = torch.nn.parallel.DistributedDataParallel(model, **settings)
        assert not [w for w in caught if "broadcast_buffers" in str(w.message)]
        assert ddp.forward_sync_buffers is False  # PPO's processes make unequal forward counts
    finally:
        dist.destroy_process_group()
