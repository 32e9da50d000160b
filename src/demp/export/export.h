#pragma once
// The pruned network leaves demp: reading a network from any file demp writes (run directory,
// checkpoint, torch export, ONNX), and writing it for Python (`torch.load` + python/demp_load.py)
// and for ONNX runtimes.
#include <nlohmann/json.hpp>

#include <cstdint>
#include <string>
#include <vector>

#include "demp/export/onnx_proto.h"
#include "demp/nn/arch.h"
#include "demp/nn/model.h"
#include "demp/train/config.h"

namespace demp::export_ {

/// The input normalisation a network was trained with: x = (pixel / 255 - mean[c]) / std[c].
struct Normalization {
  std::vector<double> mean, std;
  bool known() const { return !mean.empty() && mean.size() == std.size(); }
};

enum class SourceKind { Checkpoint, TorchExport, Onnx };
std::string kind_name(SourceKind k);

/// A trained network, from wherever demp wrote it.
struct ModelSource {
  SourceKind kind = SourceKind::Checkpoint;
  std::string path;  ///< the file read (RUN/model.ckpt for a run directory)
  nn::Arch arch;
  std::vector<nn::LayerTensors> layers;            ///< empty for ONNX: its weights stay in the file
  nlohmann::json meta = nlohmann::json::object();  ///< config, step, accuracies... when known
  Normalization norm;                              ///< when recorded in the file
};

/// Reads a run directory (its model.ckpt), a checkpoint, a torch export or an ONNX model written
/// by demp, telling them apart by content. Throws demp::Error naming the file when it is missing,
/// truncated, corrupt or not one of these.
ModelSource load_source(const std::string& path);

/// The training configuration recorded with a source (defaults when there is none).
train::TrainConfig source_config(const ModelSource& src);

/// The normalisation of the data the network was trained on: the recorded one, else recomputed
/// from the training data set exactly as training computed it (same split options). A non-empty
/// `data_spec` replaces the recorded data set. Throws demp::Error when the data cannot be read.
Normalization training_normalization(const ModelSource& src, const std::string& data_spec = {});

/// The dense counterpart of a (pruned) architecture: the same model family and options with
/// every group at its initial width, rebuilt with nn::build_arch (`config` supplies the MLP
/// widths when present). Throws demp::Error if the rebuilt groups do not match the initial ones.
nn::Arch dense_arch(const nn::Arch& pruned, const nlohmann::json& config = {});

/// What an export records besides the network.
struct ExportInfo {
  Normalization norm;
  nlohmann::json meta = nlohmann::json::object();  ///< config, step, accuracy, source...
};

/// ExportInfo for a loaded source: its normalisation (see training_normalization) and meta.
ExportInfo export_info(const ModelSource& src, const std::string& data_spec = {});

/// Writes the network as a file that Python's torch.load reads (weights_only=True is enough): a
/// dict {"format", "arch" (JSON string), "state_dict" (names of python/demp_load.py's modules),
/// "normalization" {"mean", "std"}, "meta" (JSON string)}. Atomic (temp file + rename).
void write_torch_export(const std::string& path, const nn::Model& model, const ExportInfo& info);

/// The network as an ONNX graph in inference mode: BatchNorm folded into the preceding conv or
/// linear layer, input "input" (N×C×H×W float32, already normalised, N dynamic), output "logits"
/// (N×classes), residual skip maps as exact channel gathers, the normalisation and architecture
/// in the doc string and metadata.
///
/// `channel_multiple` > 1 pads every hidden group with zero units up to a multiple of it (zero
/// weights in and out, zero bias): the same function, but widths that runtimes' blocked kernels
/// take (ONNX Runtime's NCHWc convolutions need channel counts that are multiples of 8 or 16 and
/// otherwise fall back to slower ones, which pruning's odd widths would hit).
OnnxModel build_onnx(const nn::Model& model, const ExportInfo& info, int64_t opset = 17,
                     int64_t channel_multiple = 1);
/// build_onnx + serialize_onnx (checked by ONNX's checker), written atomically.
void write_onnx(const std::string& path, const nn::Model& model, const ExportInfo& info, int64_t opset = 17,
                int64_t channel_multiple = 1);

/// Opsets the exporter emits valid graphs for (Pad with a pads input needs 13).
constexpr int64_t kMinOpset = 13, kMaxOpset = 17;

}  // namespace demp::export_
