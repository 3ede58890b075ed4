"""PyTorch eager reference for `ktrack bench train`: the same model (torchvision ResNet with a
5-class head, as ktrack's `Classifier`), batch, image size, loss (cross-entropy) and optimiser
(AdamW, lr 1e-4), forward + backward + step, timed after warm-up steps; and the forward pass
alone. Prints one JSON object. `ktrack bench train --eager PYTHON` runs it beside ktrack."""
import argparse
import json
import time

import torch
import torchvision

p = argparse.ArgumentParser()
p.add_argument("--arch", default="resnet18")
p.add_argument("--size", type=int, default=128)
p.add_argument("--batch", type=int, default=32)
p.add_argument("--steps", type=int, default=10)
p.add_argument("--warmup", type=int, default=2)
p.add_argument("--device", default="cpu")
p.add_argument("--threads", type=int, default=2)
p.add_argument("--bf16", action="store_true", help="bf16 autocast (and channels-last on CUDA)")
a = p.parse_args()

torch.set_num_threads(a.threads)
dev = torch.device(a.device)
cuda = dev.type == "cuda"
if cuda:
    torch.backends.cudnn.benchmark = True
model = getattr(torchvision.models, a.arch)(num_classes=5).to(dev).train()
# ktrack's AdamW hyper-parameters (burn's: eps 1e-5, weight decay 1e-4); PyTorch's default
# implementation for the device (for-each on CUDA, per-tensor on the CPU).
opt = torch.optim.AdamW(model.parameters(), lr=1e-4, eps=1e-5, weight_decay=1e-4)
loss_fn = torch.nn.CrossEntropyLoss()
g = torch.Generator().manual_seed(0)
x = torch.randn(a.batch, 3, a.size, a.size, generator=g)
y = torch.arange(a.batch) % 5


def sync():
    if cuda:
        torch.cuda.synchronize()


# bf16: PyTorch's autocast (bf16 convolutions and matmuls, fp32 weights and optimizer state),
# plus channels-last on CUDA, where it is what makes bf16 convolutions fast.
fmt = torch.channels_last if a.bf16 and cuda else torch.contiguous_format
model = model.to(memory_format=fmt)


def autocast():
    return torch.autocast(dev.type, dtype=torch.bfloat16, enabled=a.bf16)


def step():
    xb, yb = x.to(dev).contiguous(memory_format=fmt), y.to(dev)
    opt.zero_grad(set_to_none=True)
    with autocast():
        loss = loss_fn(model(xb), yb)
    loss.backward()
    opt.step()


def forward():
    with torch.no_grad(), autocast():
        model(x.to(dev).contiguous(memory_format=fmt))


def timed(fn):
    for _ in range(a.warmup):
        fn()
    sync()
    t = time.perf_counter()
    for _ in range(a.steps):
        fn()
    sync()
    return (time.perf_counter() - t) / a.steps


train = timed(step)
model.eval()
fwd = timed(forward)
print(json.dumps({
    "torch": torch.__version__,
    "device": a.device,
    "threads": torch.get_num_threads(),
    "images_per_second": a.batch / train,
    "forward_images_per_second": a.batch / fwd,
}))
