// demp as a library: build a small MLP, train it a few steps with Demon Pruning while a callback
// prints progress and prune events, prune it further by keep sets, save it, load it back, export
// it. Built against the installed package (CMakeLists.txt beside this file).
//
//   demp_consumer [DATA] [OUT_DIR]     DATA: a demp --data spec (default fashion-mnist)
#include <demp/demp.h>
#include <torch/torch.h>

#include <cstdio>
#include <string>

int main(int argc, char** argv) try {
  const std::string data = argc > 1 ? argv[1] : "fashion-mnist";
  const std::string out = argc > 2 ? argv[2] : "consumer-out";
  std::printf("demp %s\n", demp::version().c_str());

  // 1. The architecture: demp's MLP for 28×28 grey images, 10 classes.
  demp::nn::ModelOptions mo;
  mo.model = "mlp";
  mo.mlp_widths = {64, 32};
  mo.width = 1.0;
  const demp::nn::Arch arch = demp::builtin_arch(mo);
  std::printf("architecture: %lld units, %lld params\n", static_cast<long long>(arch.units()),
              static_cast<long long>(arch.params()));

  // 2. Train it with DemP: the same options as `demp train`, and callbacks.
  demp::train::TrainConfig cfg;
  cfg.model = "mlp";
  cfg.mlp_widths = "64,32";
  cfg.width = 1.0;
  cfg.data = data;
  cfg.train_limit = 1024;
  cfg.test_limit = 500;
  cfg.steps = 60;
  cfg.batch_size = 64;
  cfg.method = "demp";
  cfg.lr = 0.01;
  cfg.set("lambda", 0.05);  // strong, so that units die within these few steps
  cfg.set("prune-after", 10);
  cfg.set("prune-every", 10);
  cfg.log_every = 20;
  cfg.progress = "none";  // the callbacks report instead
  cfg.threads = 1;
  cfg.out = out + "/run";
  cfg.overwrite = true;
  int steps_seen = 0, prune_events = 0;
  demp::train::TrainHooks hooks;
  hooks.on_step = [&](const demp::train::TrainHooks::Step& s) {
    ++steps_seen;
    if (s.step % 20 == 0) {
      std::printf("step %lld/%lld | lr %.5f | loss %.4f\n", static_cast<long long>(s.step),
                  static_cast<long long>(s.total_steps), s.lr, s.loss);
    }
  };
  hooks.on_prune = [&](const nlohmann::json& e) {
    ++prune_events;
    std::printf("prune at step %s: units %s -> %s\n", e["step"].dump().c_str(),
                e["units_before"].dump().c_str(), e["units_after"].dump().c_str());
  };
  const nlohmann::json summary = demp::train_network(cfg, hooks);
  std::printf("trained: test accuracy %.4f, units %s -> %s, %d steps and %d prune events seen\n",
              summary["test_accuracy"].get<double>(), summary["units_initial"].dump().c_str(),
              summary["units_final"].dump().c_str(), steps_seen, prune_events);
  if (steps_seen != cfg.steps) return 1;

  // 3. Load the trained network and prune it by keep sets: first the units dead on a batch of
  //    inputs (DemP's test; removing them leaves the logits on that batch unchanged), then the
  //    first half of every hidden group's units.
  demp::nn::Model model = demp::load(cfg.out + "/model.ckpt");
  torch::manual_seed(0);
  const auto x = torch::randn({256, 1, 28, 28});
  const torch::Tensor dense_logits = model.forward(x, false);
  const auto dead = demp::remove_units(model, demp::live_units(model, x));
  const bool unchanged = torch::allclose(model.forward(x, false), dense_logits, 1e-4, 1e-5);
  std::printf("removed the units dead on the batch (%zu groups changed): logits %s\n", dead.size(),
              unchanged ? "unchanged" : "CHANGED");
  demp::prune::KeepSets keep(model.arch().groups.size());
  for (const int g : model.arch().prunable_groups()) {
    const int64_t w = model.arch().groups[g].width;
    for (int64_t j = 0; j < (w + 1) / 2; ++j) keep[g].push_back(j);
  }
  const auto changes = demp::remove_units(model, keep);
  for (const auto& c : changes) {
    std::printf("group %s: %lld -> %lld\n", c.group.c_str(), static_cast<long long>(c.before),
                static_cast<long long>(c.after));
  }
  const torch::Tensor logits = model.forward(x, /*train=*/false);

  // 4. Save, load back: the same logits.
  demp::save(out + "/half.ckpt", model);
  const demp::nn::Model back = demp::load(out + "/half.ckpt");
  const bool same = torch::equal(back.forward(x, false), logits);
  std::printf("saved and loaded back: %s logits\n", same ? "the same" : "DIFFERENT");

  // 5. Export for ONNX runtimes and for Python.
  demp::export_onnx(out + "/half.onnx", model);
  demp::export_torch(out + "/half.pt", model);
  std::printf("exported %s/half.onnx and %s/half.pt (%lld params)\n", out.c_str(), out.c_str(),
              static_cast<long long>(model.arch().params()));
  return same && unchanged ? 0 : 1;
} catch (const demp::Error& e) {
  std::fprintf(stderr, "error: %s (hint: %s)\n", e.what(), e.hint().c_str());
  return 1;
}
