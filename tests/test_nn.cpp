// Model zoo: exact parameter/FLOP counts against published figures, forward shapes, group
// outputs, and the architecture's JSON round trip.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <nlohmann/json.hpp>

#include "demp/common/error.h"
#include "demp/nn/arch.h"
#include "demp/nn/model.h"
#include "test_util.h"

using namespace demp;

namespace {
nn::Arch full(const std::string& model, int64_t c, int64_t size, int64_t classes) {
  nn::ModelOptions o;
  o.model = model;
  o.in_channels = c;
  o.in_height = o.in_width = size;
  o.classes = classes;
  return nn::build_arch(o);
}
}  // namespace

TEST(Arch, ParamCountsMatchTorchvisionAndTheCifarLiterature) {
  // torchvision.models.resnet50(): 25,557,032 parameters; 4.09 GMACs at 224x224.
  const auto r50 = full("resnet50", 3, 224, 1000);
  EXPECT_EQ(r50.params(), 25557032);
  EXPECT_NEAR(static_cast<double>(r50.flops()) / 2e9, 4.09, 0.05);
  // The CIFAR ResNet-18 (3x3 stem, no max-pool), 10 classes: 11,173,962 parameters, 0.56 GMACs.
  const auto r18 = full("resnet18", 3, 32, 10);
  EXPECT_EQ(r18.params(), 11173962);
  EXPECT_NEAR(static_cast<double>(r18.flops()) / 2e9, 0.556, 0.01);
  // MLP 784-512-256-10 with BN on the hidden layers: computed by hand.
  const auto mlp = full("mlp", 1, 28, 10);
  EXPECT_EQ(mlp.params(), 784 * 512 + 2 * 512 + 512 * 256 + 2 * 256 + 256 * 10 + 10);
  EXPECT_EQ(mlp.flops(), 2 * (784 * 512 + 512 * 256 + 256 * 10));
}

TEST(Arch, Vgg16HasThirteenConvsTwoHiddenFcAndUnitGroups) {
  const auto v = full("vgg16", 3, 32, 10);
  int convs = 0, linears = 0;
  for (const auto& l : v.layers) (l.kind == nn::LayerKind::Conv ? convs : linears)++;
  EXPECT_EQ(convs, 13);
  EXPECT_EQ(linears, 3);
  EXPECT_EQ(v.prunable_groups().size(), 15u);
  // 13 3x3 convs without bias: 9 * sum(c_in * c_out) = 14,710,464 weights, plus BN γ, β on
  // 4,224 channels.
  int64_t conv = 0;
  for (const auto& l : v.layers) {
    if (l.kind == nn::LayerKind::Conv) conv += nn::layer_params(v, l);
  }
  EXPECT_EQ(conv, 14710464 + 2 * 4224);
}

TEST(Arch, UnknownModelAndBadWidthAreClearErrors) {
  nn::ModelOptions o;
  o.model = "alexnet";
  EXPECT_THROW(nn::build_arch(o), Error);
  o.model = "mlp";
  o.width = 0;
  EXPECT_THROW(nn::build_arch(o), Error);
}

TEST(Arch, JsonRoundTrip) {
  for (const std::string m : {"mlp", "vgg16", "resnet18", "resnet50"}) {
    const auto a = test::tiny_arch(m);
    const nlohmann::json j = a;
    const auto b = j.get<nn::Arch>();
    EXPECT_EQ(nlohmann::json(b).dump(), j.dump()) << m;
    EXPECT_EQ(b.params(), a.params());
    EXPECT_EQ(b.flops(), a.flops());
  }
}

class Zoo : public ::testing::TestWithParam<std::string> {};

TEST_P(Zoo, ForwardShapesParamsAndGroupOutputs) {
  const auto a = test::tiny_arch(GetParam());
  nn::Model m(a, 1);
  int64_t n = 0;
  for (const auto& p : m.parameters()) n += p.numel();
  EXPECT_EQ(n, a.params());
  std::vector<torch::Tensor> groups;
  const auto x = torch::randn({4, 3, 16, 16});
  const auto y = m.forward(x, true, &groups);
  EXPECT_EQ(y.sizes(), (std::vector<int64_t>{4, 5}));
  for (int g : a.prunable_groups()) {
    ASSERT_TRUE(groups[g].defined()) << a.groups[g].name;
    EXPECT_EQ(groups[g].size(1), a.groups[g].width) << a.groups[g].name;
    EXPECT_GE(groups[g].min().item<float>(), 0.0f);  // post-ReLU
  }
  y.sum().backward();
  for (const auto& p : m.parameters()) EXPECT_TRUE(p.grad().defined());
  EXPECT_THROW(m.forward(torch::randn({2, 1, 16, 16}), false), Error);
  EXPECT_FALSE(a.table().empty());
}

TEST_P(Zoo, SameSeedSameWeights) {
  const auto a = test::tiny_arch(GetParam());
  nn::Model m1(a, 7), m2(a, 7), m3(a, 8);
  EXPECT_TRUE(torch::equal(m1.parameters()[0], m2.parameters()[0]));
  EXPECT_FALSE(torch::equal(m1.parameters()[0], m3.parameters()[0]));
}

INSTANTIATE_TEST_SUITE_P(Models, Zoo, ::testing::Values("mlp", "vgg16", "resnet18", "resnet50"));

TEST(ResNet50, LastBnOfEachBottleneckStartsAtZero) {
  const auto a = test::tiny_arch("resnet50");
  nn::Model m(a, 0);
  int zero = 0;
  for (size_t i = 0; i < a.layers.size(); ++i) {
    if (a.layers[i].name.find(".conv3") != std::string::npos) {
      EXPECT_EQ(m.layers()[i].gamma.abs().sum().item<float>(), 0.0f);
      ++zero;
    }
  }
  EXPECT_EQ(zero, 16);
}
