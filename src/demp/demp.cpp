#include "demp/demp.h"

#include "demp/export/export.h"
#include "demp/methods/method.h"

#ifndef DEMP_VERSION
#define DEMP_VERSION "unknown"
#endif

namespace demp {

std::string version() { return DEMP_VERSION; }

nn::Arch builtin_arch(const nn::ModelOptions& o) { return nn::build_arch(o); }

nn::Model build_model(const nn::Arch& arch, uint64_t seed) { return nn::Model(arch, seed); }

nlohmann::json train_network(const train::TrainConfig& cfg, const train::TrainHooks& hooks) {
  return train::run_training(cfg, methods::make_method, hooks);
}

prune::KeepSets live_units(const nn::Model& model, const torch::Tensor& images, double eps, int64_t batch,
                           int64_t multiple) {
  return prune::keep_live(model, prune::scan_dead(model, images, batch, eps), multiple);
}

std::vector<prune::GroupChange> remove_units(nn::Model& model, const prune::KeepSets& keep,
                                             train::Optimizer* optimizer) {
  return prune::remove_units(model, optimizer ? &optimizer->state() : nullptr, keep);
}

void save(const std::string& path, const nn::Model& model, const nlohmann::json& meta) {
  train::save_checkpoint(path, model, nullptr, meta.is_object() ? meta : nlohmann::json::object());
}

nn::Model load(const std::string& path) {
  auto src = export_::load_source(path);
  if (src.layers.empty()) {
    throw Error(path + " holds no weights demp can train or prune (an ONNX file)",
                "load the checkpoint or run directory it was exported from");
  }
  return nn::Model(src.arch, src.layers);
}

namespace {
export_::ExportInfo info_of(const std::vector<double>& mean, const std::vector<double>& std) {
  export_::ExportInfo info;
  info.norm.mean = mean;
  info.norm.std = std;
  info.meta = {{"source", "demp library"}};
  return info;
}
}  // namespace

void export_onnx(const std::string& path, const nn::Model& model, const std::vector<double>& mean,
                 const std::vector<double>& std) {
  export_::write_onnx(path, model, info_of(mean, std));
}

void export_torch(const std::string& path, const nn::Model& model, const std::vector<double>& mean,
                  const std::vector<double>& std) {
  export_::write_torch_export(path, model, info_of(mean, std));
}

}  // namespace demp
