
import sys
import numpy as np
import tensorlite as tl
import tensorlite.distributed as dist
from tensorlite.nn.parallel import DistributedDataParallel as DDP

launched = dist.launched_by_mpiexec()
if launched:
    dist.init_process_group()
rank = dist.get_rank() if launched else 0
world = dist.get_world_size() if launched else 1

tl.manual_seed(rank)                      # deliberately different starts: DDP fixes it
model = tl.nn.Sequential(tl.nn.Linear(4, 32), tl.nn.Tanh(), tl.nn.Linear(32, 3)).double()
if launched:
    model = DDP(model)                    # rank 0's weights everywhere
rng = np.random.default_rng(0)
X = tl.tensor(rng.normal(size=(64, 4)))
Y = tl.tensor(rng.integers(0, 3, 64))
share = slice(rank * 64 // world, (rank + 1) * 64 // world)
optimizer = tl.optim.SGD(model.parameters(), lr=0.1)
loss_fn = tl.nn.CrossEntropyLoss()
for step in range(int(sys.argv[1])):
    optimizer.zero_grad()
    loss = loss_fn(model(X[share]), Y[share])
    loss.backward()
    if launched:
        model.sync_gradients()            # one allreduce: the averaged gradients
    optimizer.step()
weights = np.concatenate([p.numpy().ravel() for p in model.parameters()])
sys.stdout.write(f"rank {rank} of {world}: checksum {weights.sum():.12f}\n")  # one write
