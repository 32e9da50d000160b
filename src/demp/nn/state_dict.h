#pragma once
// PyTorch state_dicts in: a file written by torch.save(model.state_dict(), path) (the zip format),
// read with the safety of torch.load(weights_only=True) and mapped onto a demp network.
#include <torch/types.h>

#include <string>
#include <utility>
#include <vector>

#include "demp/nn/model.h"

namespace demp::nn {

/// Name -> tensor, in the file's order.
using StateDict = std::vector<std::pair<std::string, torch::Tensor>>;

/// Reads a torch.save zip file holding a dict (or OrderedDict) of tensors. A restricted unpickler:
/// the only globals it accepts are collections.OrderedDict, torch._utils._rebuild_tensor_v2,
/// torch._utils._rebuild_parameter and the torch.*Storage types; no code from the file runs, and
/// anything else (another global, a value that is not a tensor, a tensor outside its storage) is a
/// demp::Error naming the global or the key. Tensors are CPU tensors of the stored dtype.
StateDict read_state_dict(const std::string& path);

/// How parameter names map onto layers.
enum class Naming {
  Demp,         ///< "<layer>.weight", "<layer>.bias", "<layer>.bn.{weight,bias,running_mean,running_var}"
  Torchvision,  ///< torchvision's ResNet names (conv1/bn1, layerX.Y.convK/bnK, downsample.0/1, fc)
};

/// The state_dict names of layer `l`: its conv/linear prefix and its BatchNorm prefix.
std::pair<std::string, std::string> param_prefixes(const Layer& l, Naming naming);

/// The tensors of every layer of `arch` (its current widths) from `sd`: float32, shapes checked.
/// Missing or unexpected keys are an error that lists them; a shape mismatch names the key and
/// both shapes; "num_batches_tracked" entries are accepted and ignored.
std::vector<LayerTensors> layers_from_state_dict(const Arch& arch, const StateDict& sd, Naming naming);

}  // namespace demp::nn
