"""PyTorch eager reference for the GPU check: the same model (torchvision ResNet-50 with a
5-class head), batch, image size, loss and optimiser as `ktrack bench train`, float32,
forward + backward + AdamW step, timed after warm-up steps."""
import argparse
import json
import time

import torch
import torchvision

p = argparse.ArgumentParser()
p.add_argument("--size", type=int, default=224)
p.add_argument("--batch", type=int, default=64)
p.add_argument("--steps", type=int, default=20)
p.add_argument("--warmup", type=int, default=3)
a = p.parse_args()

dev = torch.device("cuda:0")
model = torchvision.models.resnet50(num_classes=5).to(dev).train()
opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
loss_fn = torch.nn.CrossEntropyLoss()
g = torch.Generator().manual_seed(0)
x = torch.randn(a.batch, 3, a.size, a.size, generator=g)
y = torch.arange(a.batch) % 5


def step():
    # Host → device copy each step, as ktrack does.
    xb, yb = x.to(dev), y.to(dev)
    opt.zero_grad(set_to_none=True)
    loss = loss_fn(model(xb), yb)
    loss.backward()
    opt.step()


def timed(fn):
    for _ in range(a.warmup):
        fn()
    torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(a.steps):
        fn()
    torch.cuda.synchronize()
    return (time.perf_counter() - t) / a.steps


def forward():
    with torch.no_grad():
        model(x.to(dev))


out = {"device": f"pytorch-eager {torch.__version__} {torch.cuda.get_device_name(0)}"}
# cuDNN benchmark off (PyTorch's default) and on (what ktrack sets on CUDA).
for bench in (False, True):
    torch.backends.cudnn.benchmark = bench
    key = "cudnn_benchmark" if bench else "default"
    s = timed(step)
    # Forward alone as ktrack's bench measures it: no autograd, BatchNorm in inference mode.
    model.eval()
    f = timed(forward)
    model.train()
    out[key] = {
        "images_per_second": a.batch / s,
        "seconds_per_step": s,
        "forward_images_per_second": a.batch / f,
    }
out["images_per_second"] = out["cudnn_benchmark"]["images_per_second"]
print(json.dumps(out))
