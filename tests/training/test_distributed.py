"""The process group that one domain's data-parallel training joins under torchrun."""

from __future__ import annotations

from tests.helpers import run_torchrun

_GROUP = """
import atexit, os, sys
import torch.distributed as dist
from domain_mlflow.training.distributed import join_process_group

report = open(os.path.join(sys.argv[1], f"rank-{os.environ['RANK']}.txt"), "w")
# atexit runs last-in first-out: this runs after whatever join_process_group registers
atexit.register(lambda: print(f"at exit: started {dist.is_initialized()}", file=report))
group = join_process_group()
again = join_process_group()
print(f"rank {group.rank} of {group.world_size}: {group.from_main(f'from {group.rank}')!r}, "
      f"joined again as {again.rank} of {again.world_size}, started {dist.is_initialized()}",
      file=report)
"""


def test_a_group_joined_for_training_is_joined_once_and_destroyed_when_the_process_exits(
        tmp_path):
    """A rank that exits with its gloo group alive can abort (SIGABRT) in shutdown."""
    script = tmp_path / "group.py"
    script.write_text(_GROUP)
    done = run_torchrun(str(script), str(tmp_path), timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    for rank in (0, 1):
        assert (tmp_path / f"rank-{rank}.txt").read_text().splitlines() == [
            f"rank {rank} of 2: 'from 0', joined again as {rank} of 2, started True",
            "at exit: started False",
        ]
