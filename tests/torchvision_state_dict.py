"""Writes torchvision ResNets' state_dicts with torch.save (as users do) for tests/test_import.cpp.

usage: torchvision_state_dict.py OUT_DIR MODEL SIZE
  OUT_DIR/MODEL.pt      torchvision.models.MODEL(weights=None) state_dict: random init (seed 0),
                        with BatchNorm statistics and affine parameters drawn at random too, so
                        that a BN mapped onto the wrong layer changes the logits
  OUT_DIR/MODEL-io.pt   {"x": 4x3xSIZExSIZE input, "logits": the eval-mode logits}
  OUT_DIR/refuse-*.pt   state_dicts a safe reader must refuse (a global that is not a tensor's,
                        an object whose unpickling would run a command, a non-tensor value, a
                        nested dict)
"""
import os
import sys

import torch
import torchvision

out, name, size = sys.argv[1], sys.argv[2], int(sys.argv[3])
torch.manual_seed(0)
model = getattr(torchvision.models, name)(weights=None)
with torch.no_grad():
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.weight.uniform_(0.5, 1.5)
            m.bias.uniform_(-0.2, 0.2)
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 2.0)
model.eval()
x = torch.randn(4, 3, size, size)
with torch.no_grad():
    y = model(x)
sd = model.state_dict()
torch.save(sd, os.path.join(out, name + ".pt"))
torch.save({"x": x, "logits": y}, os.path.join(out, name + "-io.pt"))

if name == "resnet18":
    class Evil:
        def __reduce__(self):
            return (os.system, ("touch " + os.path.join(out, "PWNED"),))

    small = {k: v for k, v in list(sd.items())[:3]}
    torch.save({**small, "extra": {1, 2}}, os.path.join(out, "refuse-set.pt"))
    torch.save({**small, "evil": Evil()}, os.path.join(out, "refuse-evil.pt"))
    torch.save({**small, "epoch": 3}, os.path.join(out, "refuse-int.pt"))
    torch.save({"state_dict": small}, os.path.join(out, "refuse-nested.pt"))
print("ok")
