#include "demp/train/checkpoint.h"

#include <fmt/format.h>
#include <torch/torch.h>

#include "demp/common/error.h"
#include "demp/common/files.h"

namespace demp::train {

using nlohmann::json;

void save_checkpoint(const std::string& path, const nn::Model& model, const Optimizer* opt,
                     const json& meta) {
  torch::serialize::OutputArchive ar;
  ar.write("format", c10::IValue(std::string("demp-checkpoint-1")));
  ar.write("arch", c10::IValue(json(model.arch()).dump()));
  ar.write("meta", c10::IValue(meta.dump()));
  auto put = [&](const std::string& key, const torch::Tensor& t) {
    if (t.defined()) ar.write(key, t.detach().cpu(), /*is_buffer=*/true);
  };
  for (size_t i = 0; i < model.layers().size(); ++i) {
    const auto& l = model.layers()[i];
    put(fmt::format("l{}.weight", i), l.weight);
    put(fmt::format("l{}.bias", i), l.bias);
    put(fmt::format("l{}.gamma", i), l.gamma);
    put(fmt::format("l{}.beta", i), l.beta);
    put(fmt::format("l{}.running_mean", i), l.running_mean);
    put(fmt::format("l{}.running_var", i), l.running_var);
  }
  if (opt) {
    ar.write("optimizer", c10::IValue(opt->options().name));
    ar.write("optimizer_steps", c10::IValue(opt->steps()));
    auto& st = const_cast<Optimizer*>(opt)->state();
    ar.write("optimizer_slots", c10::IValue(static_cast<int64_t>(st.empty() ? 0 : st[0].size())));
    for (size_t i = 0; i < st.size(); ++i) {
      for (size_t k = 0; k < st[i].size(); ++k) put(fmt::format("opt.{}.{}", i, k), st[i][k]);
    }
  }
  // Through our own sink, not save_to(filename): LibTorch's zip writer reports a short write
  // (a full disk) by throwing from its destructor, which terminates the process. The sink never
  // fails; write_file_streamed checks it afterwards, removes the temp file and keeps the previous
  // checkpoint.
  write_file_streamed(path, "checkpoint", [&](ByteSink& sink) {
    ar.save_to([&](const void* data, size_t n) -> size_t { return sink.write(data, n); });
  });
}

Checkpoint load_checkpoint(const std::string& path) {
  if (!file_exists(path)) throw Error("no checkpoint at " + path, "give the model.ckpt of a run");
  Checkpoint c;
  try {
    torch::serialize::InputArchive ar;
    ar.load_from(path);
    c10::IValue v;
    if (!ar.try_read("format", v) || v.toStringRef() != "demp-checkpoint-1") {
      throw Error(path + " is not a demp checkpoint", "give the model.ckpt of a run");
    }
    ar.read("arch", v);
    try {
      c.arch = json::parse(v.toStringRef()).get<nn::Arch>();
      nn::check_arch(c.arch);
    } catch (const Error& e) {
      throw Error(
          path + " has an unusable architecture: " + e.what(),
          e.hint().empty() ? "the file is damaged or was edited; use the model.ckpt a run wrote" : e.hint());
    }
    ar.read("meta", v);
    c.meta = json::parse(v.toStringRef());
    for (size_t i = 0; i < c.arch.layers.size(); ++i) {
      nn::LayerTensors t;
      auto get = [&](const char* f, torch::Tensor& out) {
        ar.try_read(fmt::format("l{}.{}", i, f), out, /*is_buffer=*/true);
      };
      get("weight", t.weight);
      get("bias", t.bias);
      get("gamma", t.gamma);
      get("beta", t.beta);
      get("running_mean", t.running_mean);
      get("running_var", t.running_var);
      for (const torch::Tensor* x :
           {&t.weight, &t.bias, &t.gamma, &t.beta, &t.running_mean, &t.running_var}) {
        if (x->defined() && x->scalar_type() != torch::kFloat) {
          throw Error(fmt::format("{}: layer {} holds {} tensors, not float32", path, c.arch.layers[i].name,
                                  c10::toString(x->scalar_type())),
                      "the file is damaged or was edited; demp writes float32 weights");
        }
      }
      c.layers.push_back(t);
    }
    if (ar.try_read("optimizer", v)) {
      c.optimizer = v.toStringRef();
      ar.read("optimizer_steps", v);
      c.optimizer_steps = v.toInt();
      ar.read("optimizer_slots", v);
      const int64_t slots = v.toInt();
      for (size_t i = 0; slots > 0; ++i) {
        std::vector<torch::Tensor> s(slots);
        if (!ar.try_read(fmt::format("opt.{}.0", i), s[0], true)) break;
        for (int64_t k = 1; k < slots; ++k) ar.read(fmt::format("opt.{}.{}", i, k), s[k], true);
        c.optimizer_state.push_back(s);
      }
    }
  } catch (const Error&) {
    throw;
  } catch (const std::exception& e) {
    throw Error("cannot read checkpoint " + path + " (truncated or corrupt)",
                "use an intact model.ckpt; a run writes it atomically at each epoch end");
  }
  return c;
}

}  // namespace demp::train
