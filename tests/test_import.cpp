// Weights in (demp import): a state_dict written by the .venv's torch.save from torchvision's own
// ResNets (random init, random BN statistics) gives, after import into demp's resnet18/resnet50
// (ImageNet stem) and a checkpoint round trip, the same eval-mode logits within 1e-5 (max abs;
// ResNet-50 in demp's channels-last layout: within 2e-6 of the logits' scale, see below).
// The reader has torch.load(weights_only=True)'s safety: globals other than a tensor's, objects
// whose unpickling would run code, non-tensor values are refused naming the key or the global, and
// nothing from the file runs. Shape mismatches name the key and both shapes; missing and
// unexpected keys are listed.
// The Python side runs ${DEMP_SOURCE_DIR}/.venv/bin/python (torch, torchvision): scripts/setup
// installs it, so its absence is a failure, not a skip.
#include <fmt/format.h>
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cstdio>
#include <map>

#include "demp/common/error.h"
#include "demp/common/files.h"
#include "demp/nn/arch.h"
#include "demp/nn/model.h"
#include "demp/nn/state_dict.h"
#include "demp/train/trainer.h"
#include "test_util.h"

using namespace demp;

namespace {

using demp::test::source_dir;

// Runs tests/torchvision_state_dict.py once per model into a directory shared by the tests.
const std::string& written(const std::string& model) {
  static test::TempDir dir;
  static std::map<std::string, std::string> done;
  if (!done.count(model)) {
    const std::string python = source_dir() + "/.venv/bin/python";
    const std::string cmd = fmt::format("'{}' '{}/tests/torchvision_state_dict.py' '{}' {} 64 2>&1", python,
                                        source_dir(), dir.path, model);
    FILE* p = ::popen(cmd.c_str(), "r");
    std::string out;
    char buf[4096];
    while (p && std::fgets(buf, sizeof buf, p)) out += buf;
    const int rc = p ? ::pclose(p) : -1;
    EXPECT_EQ(rc, 0) << cmd << "\n" << out;
    done[model] = dir.path;
  }
  return done[model];
}

nn::Arch torchvision_arch(const std::string& model) {
  nn::ModelOptions o;
  o.model = model;
  o.stem = "imagenet";
  o.width = 1.0;
  o.in_channels = 3;
  o.in_height = o.in_width = 64;
  o.classes = 1000;
  return nn::build_arch(o);
}

torch::Tensor entry(const nn::StateDict& sd, const std::string& key) {
  for (const auto& [k, t] : sd) {
    if (k == key) return t;
  }
  ADD_FAILURE() << "no " << key;
  return {};
}

using demp::test::error_of;

// Import -> checkpoint -> load -> eval-mode logits, against torchvision's: the largest
// difference in demp's default channels-last layout, in the NCHW layout torchvision ran in, and
// the largest logit.
struct Diffs {
  double channels_last = 0, nchw = 0, scale = 0;
};
Diffs logit_diffs(const std::string& model) {
  const std::string dir = written(model);
  const nn::Arch arch = torchvision_arch(model);
  const nn::StateDict sd = nn::read_state_dict(dir + "/" + model + ".pt");
  nn::Model imported(arch, nn::layers_from_state_dict(arch, sd, nn::Naming::Torchvision));
  train::save_checkpoint(dir + "/" + model + ".ckpt", imported, nullptr, {{"step", 0}});
  const train::Checkpoint ck = train::load_checkpoint(dir + "/" + model + ".ckpt");
  nn::Model m(ck.arch, ck.layers);
  const nn::StateDict io = nn::read_state_dict(dir + "/" + model + "-io.pt");
  torch::NoGradGuard ng;
  const auto ref = entry(io, "logits");
  const auto y = m.forward(entry(io, "x"), false);
  EXPECT_EQ(y.sizes(), ref.sizes());
  m.set_channels_last(false);
  const auto y_nchw = m.forward(entry(io, "x"), false);
  Diffs d{(y - ref).abs().max().item<double>(), (y_nchw - ref).abs().max().item<double>(),
          ref.abs().max().item<double>()};
  std::printf("%s: max |demp - torchvision| = %.3g (channels-last), %.3g (NCHW); max |logit| %.3g\n",
              model.c_str(), d.channels_last, d.nchw, d.scale);
  EXPECT_GT(d.scale, 0.1);  // logits of substance, not all near zero
  return d;
}

}  // namespace

TEST(Import, TorchvisionResnet18GivesTheSameLogits) {
  const Diffs d = logit_diffs("resnet18");
  EXPECT_LE(d.nchw, 1e-5);
  EXPECT_LE(d.channels_last, 1e-5);
}

// ResNet-50's logits are larger (about 40 with these BN statistics): in channels-last, oneDNN's
// other convolution kernels differ from torchvision's NCHW ones by about 1e-6 of the logits'
// scale; in NCHW the import is exact to 1e-5.
TEST(Import, TorchvisionResnet50GivesTheSameLogits) {
  const Diffs d = logit_diffs("resnet50");
  EXPECT_LE(d.nchw, 1e-5);
  EXPECT_LE(d.channels_last, 2e-6 * d.scale);
}

TEST(Import, NamesMapOntoEveryTorchvisionKeyExactlyOnce) {
  const nn::StateDict sd = nn::read_state_dict(written("resnet18") + "/resnet18.pt");
  EXPECT_EQ(sd.size(), 122u);  // torchvision resnet18: 62 params + 60 BN buffers
  EXPECT_EQ(entry(sd, "bn1.num_batches_tracked").scalar_type(), torch::kLong);
  const nn::Arch arch = torchvision_arch("resnet18");
  const auto [w, b] = nn::param_prefixes(arch.layers[7], nn::Naming::Torchvision);
  EXPECT_EQ(arch.layers[7].name, "layer2.0.shortcut");
  EXPECT_EQ(w, "layer2.0.downsample.0");
  EXPECT_EQ(b, "layer2.0.downsample.1");
}

TEST(Import, TheReaderRefusesWhatWeightsOnlyLoadingRefuses) {
  const std::string dir = written("resnet18");
  const std::string set = error_of([&] { nn::read_state_dict(dir + "/refuse-set.pt"); });
  // (pickle protocol 2, torch.save's, spells Python 3's builtins.set as __builtin__.set)
  EXPECT_NE(set.find("key 'extra' holds an object of the global __builtin__.set"), std::string::npos) << set;
  const std::string evil = error_of([&] { nn::read_state_dict(dir + "/refuse-evil.pt"); });
  EXPECT_NE(evil.find("key 'evil' holds an object of the global posix.system"), std::string::npos) << evil;
  EXPECT_FALSE(file_exists(dir + "/PWNED"));  // nothing from the file ran
  const std::string n = error_of([&] { nn::read_state_dict(dir + "/refuse-int.pt"); });
  EXPECT_NE(n.find("key 'epoch' holds an int, not a tensor"), std::string::npos) << n;
  const std::string nested = error_of([&] { nn::read_state_dict(dir + "/refuse-nested.pt"); });
  EXPECT_NE(nested.find("key 'state_dict' holds a dict"), std::string::npos) << nested;
  // Not a torch.save file at all.
  write_file_atomic(dir + "/junk.pt", "not a zip");
  EXPECT_NE(error_of([&] { nn::read_state_dict(dir + "/junk.pt"); }).find("is not a torch.save zip file"),
            std::string::npos);
}

TEST(Import, ShapeMismatchesAndKeySetsAreErrorsNamingTheKeys) {
  const nn::StateDict sd = nn::read_state_dict(written("resnet18") + "/resnet18.pt");
  const nn::Arch arch = torchvision_arch("resnet18");
  nn::StateDict bad = sd;
  for (auto& [k, t] : bad) {
    if (k == "layer1.0.conv1.weight") t = torch::zeros({64, 64, 5, 5});
  }
  const std::string shape = error_of([&] { nn::layers_from_state_dict(arch, bad, nn::Naming::Torchvision); });
  EXPECT_NE(
      shape.find(
          "key 'layer1.0.conv1.weight' has shape [64, 64, 5, 5] in the file but layer 'layer1.0.conv1' (#1) "
          "needs [64, 64, 3, 3]"),
      std::string::npos)
      << shape;
  nn::StateDict keys;
  for (const auto& [k, t] : sd) {
    if (k != "layer2.0.downsample.0.weight") keys.emplace_back(k, t);
  }
  keys.emplace_back("head.weight", torch::zeros({3}));
  const std::string ks = error_of([&] { nn::layers_from_state_dict(arch, keys, nn::Naming::Torchvision); });
  EXPECT_NE(ks.find("missing keys: layer2.0.downsample.0.weight; unexpected keys: head.weight"),
            std::string::npos)
      << ks;
  // The CIFAR stem is another network: the stem's shape says so.
  nn::Arch cifar = arch;
  {
    nn::ModelOptions o;
    o.model = "resnet18";
    o.stem = "cifar";
    o.in_channels = 3;
    o.in_height = o.in_width = 64;
    o.classes = 1000;
    cifar = nn::build_arch(o);
  }
  EXPECT_NE(error_of([&] { nn::layers_from_state_dict(cifar, sd, nn::Naming::Torchvision); })
                .find("key 'conv1.weight' has shape [64, 3, 7, 7] in the file but layer 'stem' (#0) needs "
                      "[64, 3, 3, 3]"),
            std::string::npos);
}

TEST(Import, ArchitectureFilesUseTheirLayerNames) {
  // demp's naming, written by hand in C++ the way a user's script would name them.
  const nn::Arch a = test::tiny_arch("vgg16", 3, 16);
  nn::Model src(a, 3);
  nn::StateDict sd;
  for (size_t i = 0; i < a.layers.size(); ++i) {
    const auto& l = a.layers[i];
    const auto& t = src.layers()[i];
    sd.emplace_back(l.name + ".weight", t.weight.detach().contiguous());
    if (l.bias) sd.emplace_back(l.name + ".bias", t.bias.detach());
    if (l.bn) {
      sd.emplace_back(l.name + ".bn.weight", t.gamma.detach() * 0.5);
      sd.emplace_back(l.name + ".bn.bias", t.beta.detach() + 0.1);
      sd.emplace_back(l.name + ".bn.running_mean", t.running_mean + 0.2);
      sd.emplace_back(l.name + ".bn.running_var", t.running_var * 2);
    }
  }
  const auto layers = nn::layers_from_state_dict(a, sd, nn::Naming::Demp);
  EXPECT_TRUE(torch::equal(layers[1].gamma, src.layers()[1].gamma.detach() * 0.5));
  EXPECT_TRUE(torch::equal(layers[12].running_var, src.layers()[12].running_var * 2));
  EXPECT_TRUE(torch::equal(layers.back().bias, src.layers().back().bias.detach()));
}

// --init starts from the checkpoint's weights, not from a fresh initialisation: at lr 1e-30 (AdamW,
// decoupled decay scaled by lr) one step leaves every weight as it was imported; and the run
// trains the checkpoint's architecture, whatever --model's default says.
TEST(Import, TrainInitStartsFromTheCheckpointsWeights) {
  test::TempDir tmp;
  test::write_synthetic_idx(tmp.path, 128, 32);
  const nn::Arch a = nn::load_arch_file(source_dir() + "/examples/arch/small_vgg.json", {1, 12, 12, 10});
  nn::Model init(a, 11);
  train::save_checkpoint(tmp.path + "/init.ckpt", init, nullptr, {{"step", 0}});
  train::TrainConfig c;
  c.init = tmp.path + "/init.ckpt";
  c.data = "mnist:" + tmp.path;
  c.steps = 1;
  c.batch_size = 32;
  c.lr = 1e-30;
  c.optimizer = "adamw";
  c.out = tmp.path + "/run";
  c.progress = "none";
  c.threads = 1;
  const auto s = test::run_training(c);
  EXPECT_EQ(s["model"], "small-vgg");
  const auto ck = train::load_checkpoint(tmp.path + "/run/model.ckpt");
  ASSERT_EQ(ck.layers.size(), init.layers().size());
  for (size_t i = 0; i < ck.layers.size(); ++i) {
    EXPECT_TRUE(torch::allclose(ck.layers[i].weight, init.layers()[i].weight.detach(), 1e-6, 1e-20))
        << a.layers[i].name;
  }
  // A fresh network of the same architecture (another seed) is not what the run trained.
  nn::Model other(a, 12);
  EXPECT_FALSE(torch::allclose(ck.layers[0].weight, other.layers()[0].weight.detach(), 1e-2, 1e-3));
}
