"""tensorlite.distributed and DistributedDataParallel, run for real under `mpiexec -n 2`.

Each test writes a small script, launches it on two ranks and checks its exit code and
output. They are skipped when mpi4py or an `mpiexec` is not installed
(`pip install '.[mpi]' from a tensorlite checkout` provides both).
"""

import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _find_mpiexec():
    beside_python = os.path.join(os.path.dirname(sys.executable), "mpiexec")  # the mpich wheel's
    return beside_python if os.path.exists(beside_python) else shutil.which("mpiexec")


def _mpi4py_installed():
    import importlib.util

    return importlib.util.find_spec("mpi4py") is not None


MPIEXEC = _find_mpiexec()
needs_mpi = pytest.mark.skipif(
    MPIEXEC is None or not _mpi4py_installed(),
    reason="needs mpi4py and mpiexec: pip install '.[mpi]' from a tensorlite checkout")

# Every script starts like this: two ranks, one thread each, the NumPy kernels (no compile).
PREAMBLE = """
import sys
import numpy as np
import tensorlite as tl
import tensorlite.distributed as dist
from tensorlite import nn
from tensorlite.nn.parallel import DistributedDataParallel as DDP

dist.init_process_group()
rank, world = dist.get_rank(), dist.get_world_size()
assert world == 2, world
"""


def run_job(command, env, cwd, timeout):
    """Run `command` (mpiexec ...) to the end; fail the test, killing the whole job, if it hangs.

    Returns (CompletedProcess, seconds).
    """
    started = time.monotonic()
    # A session of its own, so that a hung job can be killed whole: mpiexec and every rank.
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True, cwd=cwd, start_new_session=True)
    try:
        stdout, stderr = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        stdout, stderr = process.communicate()
        pytest.fail(f"the job hung for {timeout} s\n{stdout}\n{stderr}")
    result = subprocess.CompletedProcess(command, process.returncode, stdout, stderr)
    return result, time.monotonic() - started


def job_environment(**variables):
    """This process's environment, the project importable, one thread per rank."""
    return dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", NUMBA_NUM_THREADS="1",
                PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""), **variables)


def run_on_two_ranks(tmp_path, body, timeout=60, setup=""):
    """Run PREAMBLE + setup + body with `mpiexec -n 2`; return (result, seconds)."""
    script = tmp_path / "script.py"
    script.write_text(PREAMBLE + setup + textwrap.dedent(body))
    return run_job([MPIEXEC, "-n", "2", sys.executable, str(script)],
                   job_environment(TENSORLITE_KERNELS="numpy"), tmp_path, timeout)


def assert_ok(result):
    assert result.returncode == 0, f"exit {result.returncode}\n{result.stdout}\n{result.stderr}"
    assert result.stdout.count("OK") == 2, result.stdout  # both ranks got to the end


# ----------------------------------------------------------------------------------------
# Without MPI


def test_importing_and_detecting_the_launcher_does_not_load_mpi():
    code = ("import sys, tensorlite.distributed as d; "
            "print(d.launched_by_mpiexec(), d.get_world_size(), d.is_initialized(), 'mpi4py' in sys.modules)")
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("PMI_", "OMPI_", "PMIX_", "MV2_", "MPI_LOCAL"))}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         timeout=60, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["False", "1", "False", "False"]


def test_launcher_detection_from_environment():
    from tensorlite import distributed as dist

    assert not dist.launched_by_mpiexec({})
    assert dist.launcher_world_size({}) == 1
    mpich = {"PMI_RANK": "3", "PMI_SIZE": "8", "MPI_LOCALNRANKS": "2"}
    assert dist.launched_by_mpiexec(mpich)
    assert dist.launcher_world_size(mpich) == 8
    assert dist.launcher_rank(mpich) == 3 and dist.launcher_rank({}) == 0
    assert dist.get_local_world_size(mpich) == 2
    openmpi = {"OMPI_COMM_WORLD_RANK": "0", "OMPI_COMM_WORLD_SIZE": "4",
               "OMPI_COMM_WORLD_LOCAL_SIZE": "4"}
    assert dist.launched_by_mpiexec(openmpi)
    assert dist.launcher_world_size(openmpi) == 4
    assert dist.get_local_world_size(openmpi) == 4


def test_collectives_before_init_explain_what_to_call():
    from tensorlite import distributed as dist

    if dist.is_initialized():
        pytest.skip("a process group exists in this process")
    import numpy as np

    with pytest.raises(RuntimeError, match="init_process_group"):
        dist.all_reduce(np.zeros(3))
    with pytest.raises(ValueError, match="backend"):
        dist.init_process_group(backend="gloo")
    assert dist.get_rank() == 0 and dist.get_world_size() == 1


# ----------------------------------------------------------------------------------------
# Collectives


@needs_mpi
def test_all_reduce_and_broadcast(tmp_path):
    result, _ = run_on_two_ranks(tmp_path, """
        x = np.array([1.0, -2.0, 5.0]) * (rank + 1)            # rank 0: x, rank 1: 2x
        for op, expected in [("sum", [3.0, -6.0, 15.0]), ("avg", [1.5, -3.0, 7.5]),
                             ("max", [2.0, -2.0, 10.0]), ("min", [1.0, -4.0, 5.0])]:
            y = x.copy()
            assert dist.all_reduce(y, op=op) is y
            assert np.array_equal(y, expected), (op, y)
        pending = x.copy()
        work = dist.all_reduce(pending, op="avg", async_op=True)
        assert work.wait() is pending and np.array_equal(pending, [1.5, -3.0, 7.5])
        assert work.is_completed() and np.array_equal(work.wait(), [1.5, -3.0, 7.5])
        counts = np.array([rank + 1, 10], dtype=np.int64)
        dist.all_reduce(counts)
        assert counts.tolist() == [3, 20]
        f32 = np.full(5, rank + 1, dtype=np.float32)
        dist.all_reduce(f32, op="avg")
        assert f32.dtype == np.float32 and np.all(f32 == 1.5)

        z = np.arange(6.0).reshape(2, 3) + 100 * rank
        dist.broadcast(z, src=1)
        assert np.array_equal(z, np.arange(6.0).reshape(2, 3) + 100)

        for bad in (np.zeros((4, 4))[:, 0], [1.0, 2.0]):
            try:
                dist.all_reduce(bad)
            except (TypeError, ValueError) as error:
                assert "all_reduce" in str(error)
            else:
                raise AssertionError("a strided view / list was accepted")
        try:
            dist.all_reduce(x, op="prod")
        except ValueError as error:
            assert "'prod'" in str(error)
        dist.barrier()
        print("OK")
    """)
    assert_ok(result)


# ----------------------------------------------------------------------------------------
# DistributedDataParallel

MODEL = """
class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(3, 5, dtype=np.float64)
        self.fc2 = nn.Linear(5, 2, dtype=np.float64)
        self.unused = nn.Parameter(np.zeros(4))   # never gets a gradient
        self.register_buffer("scale", np.full(3, 10.0 + rank))          # differs per rank
        self.register_buffer("mask", np.arange(4) < 2 + rank)           # bool, differs per rank

    def forward(self, x, y):
        out = self.fc2(self.fc1(tl.tensor(x)).tanh())
        return ((out - tl.tensor(y)) ** 2).mean()

def local_loss(model, x, y, accum):
    # rank r owns rows [r * n, (r + 1) * n) of every micro-batch
    n = len(x) // world
    return model(x[rank * n:(rank + 1) * n], y[rank * n:(rank + 1) * n]) / accum
"""


@needs_mpi
def test_ddp_broadcasts_rank0_parameters_and_averages_gradients(tmp_path):
    result, _ = run_on_two_ranks(tmp_path, setup=MODEL, body="""
        tl.manual_seed(1 + rank)            # different initial weights on each rank
        model = DDP(Net(), bucket_cap_mb=1e-4)   # tiny cap: several buckets
        assert len(model._buckets) > 1
        tl.manual_seed(1)
        reference = Net()                   # what rank 0 built
        for (name, p), q in zip(model.module.named_parameters(), reference.parameters()):
            assert np.array_equal(p.data, q.data), name
        assert np.array_equal(model.module.scale.data, [10.0, 10.0, 10.0])
        assert model.module.mask.data.tolist() == [True, True, False, False]

        data = np.random.default_rng(0)
        x, y = data.standard_normal((8, 3)), data.standard_normal((8, 2))
        local_loss(model, x, y, 1).backward()
        assert model.sync_gradients()
        reference(x, y).backward()          # the whole batch in one process
        for (name, p), q in zip(model.module.named_parameters(), reference.parameters()):
            if name == "unused":
                assert p.grad is None and q.grad is None
                continue
            np.testing.assert_allclose(p.grad, q.grad, rtol=1e-6, atol=1e-12, err_msg=name)

        # a gradient on one rank only is averaged with zeros; None everywhere stays None
        model.zero_grad()
        if rank == 0:
            model.module.unused.grad = tl.Tensor(np.full(4, 3.0))
        model.sync_gradients()
        assert np.array_equal(model.module.unused.grad, np.full(4, 1.5))
        assert model.module.fc1.weight.grad is None

        # no_sync: gradients of the first micro-batch stay local; the second sync averages both
        model.zero_grad()
        reference.zero_grad()
        x2, y2 = data.standard_normal((8, 3)), data.standard_normal((8, 2))
        with model.no_sync():
            local_loss(model, x, y, 2).backward()
            assert not model.sync_gradients()
            g = model.module.fc1.weight.grad.data.copy()
            mean = g.copy()
            dist.all_reduce(mean, op="avg")
            assert not np.allclose(g, mean)    # really not averaged
        local_loss(model, x2, y2, 2).backward()
        assert model.sync_gradients()
        (reference(x, y) / 2).backward()
        (reference(x2, y2) / 2).backward()
        for (name, p), q in zip(model.module.named_parameters(), reference.parameters()):
            if q.grad is not None:
                np.testing.assert_allclose(p.grad, q.grad, rtol=1e-6, atol=1e-12, err_msg=name)

        # the wrapper is a Module over the same parameters; forward delegates
        assert [id(p) for p in model.parameters()] == [id(p) for p in model.module.parameters()]
        print("OK")
    """)
    assert_ok(result)


@needs_mpi
def test_ddp_training_keeps_ranks_identical_and_matches_one_process(tmp_path):
    result, _ = run_on_two_ranks(tmp_path, setup=MODEL, body="""
        tl.manual_seed(0)
        model = DDP(Net())
        optimizer = tl.optim.AdamW(model.parameters(), lr=1e-2)
        tl.manual_seed(0)
        reference = Net()
        reference_optimizer = tl.optim.AdamW(reference.parameters(), lr=1e-2)
        data = np.random.default_rng(0)
        for step in range(5):
            x, y = data.standard_normal((8, 3)), data.standard_normal((8, 2))
            local_loss(model, x, y, 1).backward()
            model.sync_gradients()
            tl.optim.clip_grad_norm_(list(model.parameters()), 0.5)
            optimizer.step()
            optimizer.zero_grad()
            reference(x, y).backward()
            tl.optim.clip_grad_norm_(list(reference.parameters()), 0.5)
            reference_optimizer.step()
            reference_optimizer.zero_grad()
        for p, q in zip(model.parameters(), reference.parameters()):
            np.testing.assert_allclose(p.data, q.data, rtol=1e-6, atol=1e-12)
            theirs = p.data.copy()
            dist.broadcast(theirs, src=1)
            assert np.array_equal(p.data, theirs)     # every rank holds the same model
        print("OK")
    """)
    assert_ok(result)


# ----------------------------------------------------------------------------------------
# Failures end the job


@needs_mpi
def test_an_exception_on_one_rank_ends_the_whole_job(tmp_path):
    result, seconds = run_on_two_ranks(tmp_path, """
        x = np.ones(4)
        if rank == 1:
            raise ValueError("bad data on rank 1")
        dist.all_reduce(x)                  # rank 0 waits here for a partner that died
        print("rank 0 should never get here")
    """, timeout=30)
    assert result.returncode != 0
    assert "ValueError: bad data on rank 1" in result.stderr
    assert "never" not in result.stdout
    assert seconds < 15


@needs_mpi
def test_abort_prints_one_line_and_ends_the_job_with_its_code(tmp_path):
    result, seconds = run_on_two_ranks(tmp_path, """
        if rank == 1:
            dist.abort("data file is empty: input.txt", 2)
        dist.barrier()
        print("rank 0 should never get here")
    """, timeout=30)
    assert result.returncode == 2, (result.returncode, result.stderr)
    assert result.stderr.count("rank 1: data file is empty: input.txt") == 1
    assert "never" not in result.stdout
    assert seconds < 15


# ----------------------------------------------------------------------------------------
# The trainer's pieces (models/distributed_training.py): two ranks follow one process


@needs_mpi
def test_two_ranks_follow_the_single_process_run_with_dropout(tmp_path):
    result, _ = run_on_two_ranks(tmp_path, """
        from tensorlite.models import distributed_training as dt
        from tensorlite.models.data import TokenDataset
        from tensorlite.models.gpt import GPT, GPTConfig

        world = dt.init_world()
        assert (world.rank, world.size) == (rank, 2)
        tokens = np.random.default_rng(0).integers(0, 16, size=3000)
        dataset = TokenDataset(tokens)
        config = GPTConfig(vocab_size=16, block_size=8, n_layer=1, n_head=2, n_embd=16, dropout=0.2)
        GRAD_ACCUM, SEED = 4, 7

        def train(world, steps=4):
            tl.manual_seed(SEED + world.rank)        # DDP must make the ranks agree anyway
            model = GPT(config, dtype=np.float64)
            optimizer = model.configure_optimizers(weight_decay=0.1, learning_rate=1e-2)
            ddp = DDP(model) if world.size > 1 else None
            data_rng = np.random.default_rng([SEED, 1])
            losses = []
            for it in range(steps):
                batches = dt.draw_micro_batches(dataset, 3, 8, data_rng, GRAD_ACCUM, world)
                local_sum = 0.0
                for j, x, y in batches:
                    dt.seed_dropout(SEED, it, j)
                    _, loss = model(x, y)
                    local_sum += loss.item()
                    (loss / len(batches)).backward()
                if ddp is not None:
                    ddp.sync_gradients()
                [loss_sum] = dt.global_sum([local_sum], world)
                losses.append(loss_sum / GRAD_ACCUM)
                tl.optim.clip_grad_norm_(list(model.parameters()), 1.0)
                optimizer.step()
                optimizer.zero_grad()
            evaluation = dt.estimate_loss(model, dataset, 3, 8, 5,
                                          lambda split: np.random.default_rng([SEED, 2, split]), world)
            return losses, evaluation, model

        losses, evaluation, model = train(world)
        alone_losses, alone_evaluation, alone = train(dt.World())
        np.testing.assert_allclose(losses, alone_losses, rtol=1e-10)
        for split in ("train", "val"):
            np.testing.assert_allclose(evaluation[split], alone_evaluation[split], rtol=1e-10)
        for p, q in zip(model.parameters(), alone.parameters()):
            np.testing.assert_allclose(p.data, q.data, rtol=1e-9, atol=1e-12)
        assert len(set(np.round(losses, 12))) == len(losses)   # training moved

        # a grad-accum that does not split is a usage error naming both numbers
        try:
            dt.local_micro_steps(3, world)
        except ValueError as error:
            assert "(3)" in str(error) and "(2)" in str(error)
        else:
            raise AssertionError("--grad-accum 3 on 2 ranks was accepted")
        print("OK")
    """)
    assert_ok(result)


@needs_mpi
def test_setup_errors_are_agreed_and_reported_once(tmp_path):
    result, _ = run_on_two_ranks(tmp_path, """
        from tensorlite.models import distributed_training as dt

        world = dt.init_world()
        assert dt.agree_on_setup(world) == (0, None)
        # bad data on rank 1 only: the job agrees on code 2, rank 1 reports
        error = ValueError("data file is empty: x.txt") if rank == 1 else None
        code, message = dt.agree_on_setup(world, error, 2 if error else 0)
        assert code == 2
        assert message == ("rank 1: data file is empty: x.txt" if rank == 1 else None), message
        # a bad flag fails on every rank alike: only rank 0 reports it
        code, message = dt.agree_on_setup(world, ValueError("--lr must be > 0"), 2)
        assert code == 2 and message == ("--lr must be > 0" if rank == 0 else None), message
        with dt.quiet_unless_main(world):
            print(f"printed by rank {rank}")
        import os
        assert dt.configure_threads(world) == max(1, os.cpu_count() // 2)   # the cores, shared
        print("OK")
    """)
    assert_ok(result)
    assert "printed by rank 0" in result.stdout and "printed by rank 1" not in result.stdout


# ----------------------------------------------------------------------------------------
# tensorlite-train under mpiexec

TRAIN_ARGS = ["--kernels", "numpy", "--n-layer", "1", "--n-head", "2", "--n-embd", "16",
              "--block-size", "16", "--batch-size", "4", "--grad-accum", "2", "--dropout", "0.1",
              "--warmup-iters", "5", "--lr-decay-iters", "30", "--eval-interval", "15",
              "--eval-iters", "4", "--log-interval", "1", "--no-progress"]


def trainer(tmp_path, out_dir, *extra):
    return [sys.executable, "-m", "tensorlite.models.train", *TRAIN_ARGS, "--out-dir", str(tmp_path / out_dir), *extra]


def run_trainer(tmp_path, out_dir, *extra, ranks=2):
    """tensorlite-train on `ranks` processes (1: without mpiexec); returns the CompletedProcess."""
    command = trainer(tmp_path, out_dir, *extra)
    if ranks > 1:
        command = [MPIEXEC, "-n", str(ranks), *command]
    result, _ = run_job(command, job_environment(), tmp_path, timeout=120)
    return result


def train_losses(out_dir):
    import json
    with open(out_dir / "metrics.jsonl") as f:
        return [record["loss"] for record in map(json.loads, f) if record["event"] == "train"]


def checkpoint_arrays(out_dir):
    import numpy as np
    with np.load(out_dir / "ckpt.npz") as archive:
        return {name: archive[name] for name in archive.files if archive[name].dtype.kind == "f"}


@needs_mpi
def test_trainer_on_two_ranks_follows_one_process_and_resumes_exactly(tmp_path):
    import numpy as np

    single = run_trainer(tmp_path, "single", "--max-iters", "30", ranks=1)
    assert single.returncode == 0, single.stderr
    both = run_trainer(tmp_path, "mpi", "--max-iters", "30")
    assert both.returncode == 0, both.stderr
    assert both.stdout.count("step 30: train loss") == 1  # rank 0 alone prints
    assert "2 processes (MPI) x 1 threads" in both.stdout
    losses, alone = train_losses(tmp_path / "mpi"), train_losses(tmp_path / "single")
    assert len(losses) == len(alone) == 30
    np.testing.assert_allclose(losses, alone, rtol=1e-5)
    params, alone_params = checkpoint_arrays(tmp_path / "mpi"), checkpoint_arrays(tmp_path / "single")
    assert params.keys() == alone_params.keys()
    for name in params:
        np.testing.assert_allclose(params[name], alone_params[name], rtol=1e-5, atol=1e-6, err_msg=name)

    first = run_trainer(tmp_path, "resumed", "--max-iters", "15")
    assert first.returncode == 0, first.stderr
    second = run_trainer(tmp_path, "resumed", "--max-iters", "30", "--resume")
    assert second.returncode == 0, second.stderr
    resumed = checkpoint_arrays(tmp_path / "resumed")
    for name in params:
        assert np.array_equal(resumed[name], params[name]), name


@needs_mpi
def test_trainer_reports_a_bad_flag_once(tmp_path):
    result = run_trainer(tmp_path, "out", "--max-iters", "3", "--grad-accum", "3")
    assert result.returncode == 2
    assert result.stderr.count("tensorlite-train: error:") == 1, result.stderr
    assert "divisible by the number of processes (2)" in result.stderr


@needs_mpi
def test_trainer_with_bad_data_on_one_rank_ends_at_once(tmp_path):
    good, empty = tmp_path / "good.txt", tmp_path / "empty.txt"
    good.write_text("a small text to train on, repeated.\n" * 40)
    empty.write_text("")
    rank0 = trainer(tmp_path, "out", "--max-iters", "3", "--data", str(good))
    rank1 = trainer(tmp_path, "out", "--max-iters", "3", "--data", str(empty))
    # MPMD launch: rank 0 reads the good file, rank 1 the empty one
    result, seconds = run_job([MPIEXEC, "-n", "1", *rank0, ":", "-n", "1", *rank1],
                              job_environment(), tmp_path, timeout=60)
    assert result.returncode == 2, result.stderr
    assert result.stderr.count("error:") == 1 and "rank 1: data file is empty" in result.stderr
    assert seconds < 30
    assert not (tmp_path / "out").exists()  # nothing written
