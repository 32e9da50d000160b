"""Load a network exported by `demp export --format torch` as ordinary torch.nn modules.

    import demp_load                                   # python/ on sys.path
    net = demp_load.load("r18.pt")                     # torch.nn.Module, eval mode, pruned widths
    logits = net(demp_load.normalize(images, net))     # images: N×C×H×W uint8, or float in [0, 1]

The export is a plain dict (torch.load(path, weights_only=True) reads it):
  format         "demp-torch-export-1"
  arch           demp's architecture description (JSON string): unit groups, layers, skip maps
                 and the forward program
  state_dict     the weights, named after this module's submodules (load_state_dict-ready)
  normalization  {"mean": [...], "std": [...]}: inputs are (pixel / 255 - mean[c]) / std[c]
  meta           JSON string: training config, step, test accuracy, source checkpoint

Only torch is needed; this file does not import demp.
"""
import json

import torch
import torch.nn as nn
import torch.nn.functional as F

FORMAT = "demp-torch-export-1"


class Layer(nn.Module):
    """A conv or linear layer of the architecture, optionally followed by BatchNorm."""

    def __init__(self, spec, groups):
        super().__init__()
        cin, cout = groups[spec["in_group"]]["width"], groups[spec["out_group"]]["width"]
        self.name = spec["name"]
        if spec["kind"] == "conv":
            self.conv = nn.Conv2d(cin, cout, spec["kernel"], spec["stride"], spec["padding"],
                                  bias=spec["bias"])
            self.bn = nn.BatchNorm2d(cout) if spec["bn"] else None
        else:
            # After a flatten, each input unit owns in_block consecutive features.
            self.linear = nn.Linear(cin * spec["in_block"], cout, bias=spec["bias"])
            self.bn = nn.BatchNorm1d(cout) if spec["bn"] else None
        self.kind = spec["kind"]

    def forward(self, x):
        y = self.conv(x) if self.kind == "conv" else self.linear(x)
        return self.bn(y) if self.bn is not None else y


class DempNet(nn.Module):
    """The network an architecture description defines, run by its forward program.

    Residual skips between groups of different (pruned) channels follow demp's skip maps:
    out[:, dst[m]] += in[:, src[m]].
    """

    def __init__(self, arch):
        super().__init__()
        self.arch = arch
        groups = arch["groups"]
        self.layers = nn.ModuleList(Layer(s, groups) for s in arch["layers"])
        self.identity_skip = []
        for i, s in enumerate(arch["skips"]):
            n_in, n_out = groups[s["in_group"]]["width"], groups[s["out_group"]]["width"]
            ident = (s["src"] == list(range(len(s["src"]))) and s["dst"] == s["src"]
                     and len(s["src"]) == n_in == n_out)
            self.identity_skip.append(ident)
            # Not in the state dict: they come from the architecture description.
            self.register_buffer(f"skip{i}_src", torch.tensor(s["src"], dtype=torch.long),
                                 persistent=False)
            self.register_buffer(f"skip{i}_dst", torch.tensor(s["dst"], dtype=torch.long),
                                 persistent=False)
        self.normalization = {"mean": [], "std": []}
        self.meta = {}

    def forward(self, x):
        v = [None] * self.arch["num_slots"]
        v[0] = x
        for op in self.arch["program"]:
            kind, a, b, c = op["op"], op["a"], op["b"], op["c"]
            if kind == "layer":
                v[c] = self.layers[a](v[b])
            elif kind == "relu":
                v[a] = F.relu(v[a], inplace=True)  # the zoo's programs never alias a ReLU input
            elif kind == "maxpool":
                v[a] = F.max_pool2d(v[a], op["k"], op["s"], op["p"], ceil_mode=bool(b))
            elif kind == "gap":
                v[a] = v[a].mean((2, 3), keepdim=True)
            elif kind == "flatten":
                v[a] = v[a].flatten(1)
            elif kind == "copy":
                v[a] = v[b]
            elif kind == "add":
                if c < 0 or self.identity_skip[c]:
                    v[a] = v[a] + v[b]
                else:
                    src, dst = getattr(self, f"skip{c}_src"), getattr(self, f"skip{c}_dst")
                    v[a] = v[a].index_add(1, dst, v[b].index_select(1, src))
            else:
                raise ValueError(f"unknown op {kind!r} in the architecture")
        return v[0]

    def extra_repr(self):
        g = [x for x in self.arch["groups"] if x["prunable"]]
        live, initial = sum(x["width"] for x in g), sum(x["initial"] for x in g)
        return f"model={self.arch['model']}, units={live}/{initial}"


def load(path, map_location="cpu"):
    """Reads a demp torch export and returns the network (a DempNet in eval mode).

    net.normalization holds the input mean/std, net.meta the training config and results.
    """
    d = torch.load(path, map_location=map_location, weights_only=True)
    if not isinstance(d, dict) or d.get("format") != FORMAT:
        raise ValueError(f"{path} is not a demp torch export (expected format {FORMAT!r})")
    net = DempNet(json.loads(d["arch"]))
    net.load_state_dict(d["state_dict"], strict=True)
    net.normalization = d["normalization"]
    net.meta = json.loads(d["meta"])
    return net.eval()


def normalize(images, net):
    """Images as the network expects them: N×C×H×W, (pixel / 255 - mean[c]) / std[c].

    `images` is uint8 (0..255) or floating point already in [0, 1].
    """
    x = images.to(torch.float32)
    if images.dtype == torch.uint8:
        x = x.div_(255.0)
    mean = torch.tensor(net.normalization["mean"], dtype=torch.float32).view(1, -1, 1, 1)
    std = torch.tensor(net.normalization["std"], dtype=torch.float32).view(1, -1, 1, 1)
    if mean.numel() == 0:
        raise ValueError("this export does not record its normalisation")
    return (x - mean) / std


if __name__ == "__main__":
    import sys

    for p in sys.argv[1:]:
        n = load(p)
        params = sum(t.numel() for t in n.parameters())
        print(f"{p}: {n.arch['model']} | {params} parameters | "
              f"normalisation mean {n.normalization['mean']} std {n.normalization['std']}")
