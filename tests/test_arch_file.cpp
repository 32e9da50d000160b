// Architecture files (docs/architecture.md):
//  - every zoo model, fresh or pruned (non-identity skip maps), written as a file and read back is
//    the same Arch (the internal description, field for field);
//  - the shipped examples compile, run, and their layers, groups and skips are what the file says;
//  - every mistake is one demp::Error naming the layer (name and index) or op and the field;
//  - checkpoints keep reading the internal form.
#include <fmt/format.h>
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <functional>
#include <nlohmann/json.hpp>

#include "demp/common/error.h"
#include "demp/common/files.h"
#include "demp/export/export.h"
#include "demp/nn/arch.h"
#include "demp/nn/model.h"
#include "demp/prune/surgery.h"
#include "test_util.h"

using namespace demp;
using nlohmann::json;

namespace {

std::string examples_dir() {
  const char* d = std::getenv("DEMP_SOURCE_DIR");
#ifdef DEMP_SOURCE_DIR
  return std::string(d && *d ? d : DEMP_SOURCE_DIR) + "/examples/arch";
#else
  return std::string(d ? d : ".") + "/examples/arch";
#endif
}

// The internal form, without the width multiplier: a record of the options a zoo model was built
// with (for `demp bench`'s dense reference), which an architecture file does not carry.
json internal(nn::Arch a) {
  a.width_mult = 1.0;
  return json(a);
}

// The file form through text (as a user reads and writes it) and back.
nn::Arch through_file(const nn::Arch& a) {
  return nn::arch_from_file_json(json::parse(nn::arch_file_text(a)));
}

using demp::test::error_of;

const char* kVgg = R"({
  "format": "demp-arch", "version": 1, "name": "t",
  "input": {"channels": 1, "height": 8, "width": 8}, "classes": 3,
  "groups": [{"name": "c1", "width": 4}, {"name": "c2", "width": 6}],
  "layers": [
    {"name": "conv1", "kind": "conv", "out": "c1", "kernel": 3, "padding": 1, "bn": true},
    {"name": "conv2", "kind": "conv", "out": "c2", "kernel": 3, "padding": 1, "bn": true},
    {"name": "classifier", "kind": "linear", "out": "logits"}
  ],
  "program": ["conv1", "relu", "conv2", "relu", "maxpool", "flatten", "classifier"]
})";

}  // namespace

TEST(ArchFile, EveryZooModelRoundTripsThroughItsFile) {
  for (const char* m : {"mlp", "vgg16", "resnet18", "resnet50"}) {
    const nn::Arch a = test::tiny_arch(m, 3, 32);
    EXPECT_EQ(internal(through_file(a)).dump(), internal(a).dump()) << m;
  }
  nn::ModelOptions o;
  o.model = "resnet18";
  o.stem = "imagenet";
  o.in_channels = 3;
  o.in_height = o.in_width = 64;
  o.width = 0.25;
  const nn::Arch r = nn::build_arch(o);
  EXPECT_EQ(internal(through_file(r)).dump(), internal(r).dump());
}

TEST(ArchFile, APrunedResNetRoundTripsWithItsSkipMaps) {
  nn::Model m(test::tiny_arch("resnet18", 3, 16), 0);
  prune::KeepSets keep(m.arch().groups.size());
  for (int g : m.arch().prunable_groups()) {
    for (int64_t u = 0; u < m.arch().groups[g].width; u += (g % 3) + 1) keep[g].push_back(u);
  }
  prune::remove_units(m, nullptr, keep);
  bool partial = false;
  for (const auto& k : m.arch().skips) partial = partial || !k.identity() || k.src.size() != k.dst.size();
  for (const auto& k : m.arch().skips)
    partial = partial || static_cast<int64_t>(k.src.size()) != m.arch().groups[k.out_group].width;
  ASSERT_TRUE(partial) << "the pruning did not make a non-identity skip map";
  EXPECT_EQ(internal(through_file(m.arch())).dump(), internal(m.arch()).dump());
  // and the network it describes computes the same
  nn::Model back(through_file(m.arch()), m.layers());
  torch::NoGradGuard ng;
  const auto x = torch::randn({2, 3, 16, 16});
  EXPECT_TRUE(torch::equal(back.forward(x, false), m.forward(x, false)));
}

TEST(ArchFile, ShippedExamplesCompileAndRunOnTheDataShape) {
  const nn::ArchShape data{1, 28, 28, 10};
  const nn::Arch vgg = nn::load_arch_file(examples_dir() + "/small_vgg.json", data);
  EXPECT_EQ(vgg.model, "small-vgg");
  EXPECT_EQ(vgg.layers.size(), 6u);
  EXPECT_EQ(vgg.layers[4].in_block, 7 * 7);  // two 2x2 pools: 28 -> 7
  const nn::Arch res = nn::load_arch_file(examples_dir() + "/resnet_block.json", data);
  ASSERT_EQ(res.skips.size(), 1u);  // block 2's identity map; block 1 adds a projection
  EXPECT_EQ(res.groups[res.skips[0].in_group].name, "block1.out");
  EXPECT_EQ(res.groups[res.skips[0].out_group].name, "block2.out");
  EXPECT_EQ(res.layers[3].name, "block1.shortcut");
  EXPECT_EQ(res.layers[3].out_hw, 14 * 14);
  for (const nn::Arch* a : {&vgg, &res}) {
    nn::Model m(*a, 0);
    torch::NoGradGuard ng;
    EXPECT_EQ(m.forward(torch::randn({3, 1, 28, 28}), false).sizes(), (std::vector<int64_t>{3, 10}));
    EXPECT_EQ(internal(through_file(*a)).dump(), internal(*a).dump());
  }
  // The file's shape against the data's: taken when left out, checked when given.
  EXPECT_NE(error_of([&] {
              nn::arch_from_file_json(json::parse(kVgg), {3, 8, 8, 3});
            }).find("input channels is 1 but the data's is 3"),
            std::string::npos);
  EXPECT_NE(
      error_of([&] { nn::load_arch_file(examples_dir() + "/small_vgg.json"); }).find("no input channels"),
      std::string::npos);
}

TEST(ArchFile, EveryMistakeNamesTheLayerOrOpAndTheField) {
  ASSERT_EQ(error_of([] { nn::arch_from_file_json(json::parse(kVgg)); }), "");
  struct Case {
    const char* what;
    std::function<void(json&)> edit;
    std::string expect;
  };
  const std::vector<Case> cases = {
      {"unknown group", [](json& j) { j["layers"][1]["out"] = "c9"; },
       "layer 'conv2' (#1): field \"out\": no group named 'c9'"},
      {"unknown kind", [](json& j) { j["layers"][1]["kind"] = "lstm"; },
       "layer 'conv2' (#1): field \"kind\": unknown kind 'lstm'"},
      {"JSON type", [](json& j) { j["layers"][0]["kernel"] = "3"; },
       "layer 'conv1' (#0): field \"kernel\": expected an integer, got a string \"3\""},
      {"range", [](json& j) { j["layers"][0]["stride"] = 0; },
       "layer 'conv1' (#0): field \"stride\": 0 is out of range"},
      {"unknown field", [](json& j) { j["layers"][0]["padd"] = 1; },
       "layer 'conv1' (#0): unknown field \"padd\""},
      {"declared input", [](json& j) { j["layers"][1]["in"] = "c2"; },
       "layer 'conv2' (#1): field \"in\": says group 'c2' but the program feeds it group 'c1'"},
      {"no producer",
       [](json& j) {
         j["groups"].push_back({{"name", "c3"}, {"width", 5}});
       },
       "group 'c3' (#2): no layer produces it"},
      {"read before written",
       [](json& j) {
         j["program"][2] = {{"op", "layer"}, {"layer", "conv2"}, {"from", "skip"}};
       },
       "program op #2 (layer 'conv2'): field \"from\": value 'skip' is read before it is written"},
      {"a layer twice (a cycle)", [](json& j) { j["program"].insert(j["program"].begin() + 2, "conv1"); },
       "program op #2 (layer 'conv1'): layer 'conv1' (#0) already runs at op #0"},
      {"unknown op",
       [](json& j) {
         j["program"][1] = {{"op", "gelu"}};
       },
       "program op #1 (gelu): field \"op\": unknown op 'gelu'"},
      {"unknown layer", [](json& j) { j["program"][2] = "conv7"; },
       "program op #2 (layer 'conv7'): field \"layer\": no layer named 'conv7'"},
      {"width mismatch in an add",
       [](json& j) {
         j["program"] = json::array({"conv1", "relu", json{{"op", "copy"}, {"from", "x"}, {"to", "skip"}},
                                     "conv2", json{{"op", "add"}, {"from", "skip"}, {"to", "x"}}, "relu",
                                     "flatten", "classifier"});
       },
       "program op #4 (add): adds group 'c1' (4 units) to group 'c2' (6 units): the widths differ"},
      {"linear on a feature map", [](json& j) { j["program"].erase(5); },
       "layer 'classifier' (#2): a linear layer on a 4x4 feature map (program op #5"},
      {"never runs",
       [](json& j) {
         j["layers"].push_back({{"name", "extra"}, {"kind", "linear"}, {"out", "c2"}});
       },
       "layer 'extra' (#3): never runs"},
      {"no relu", [](json& j) { j["program"].erase(3); }, "group 'c2' (#1): no relu follows it"},
      {"does not end in the logits",
       [](json& j) {
         j["program"][6] = {{"op", "layer"}, {"layer", "classifier"}, {"to", "y"}};
       },
       "program: value 'x' ends as group 'c2'"},
      {"version", [](json& j) { j["version"] = 2; }, "version 2 is not one this demp reads"},
      {"group width type", [](json& j) { j["groups"][0]["width"] = 4.5; },
       "group 'c1' (#0): field \"width\": expected an integer, got a number 4.5"},
      {"duplicate layer", [](json& j) { j["layers"][1]["name"] = "conv1"; },
       "layer 'conv1' (#1): field \"name\": a second layer named 'conv1'"},
  };
  for (const auto& c : cases) {
    json j = json::parse(kVgg);
    c.edit(j);
    const std::string e = error_of([&] { nn::arch_from_file_json(j); });
    EXPECT_NE(e.find(c.expect), std::string::npos) << c.what << ": got '" << e << "'";
  }
}

TEST(ArchFile, CheckpointsKeepTheInternalFormAndReadBoth) {
  const nn::Arch a = test::tiny_arch("resnet18", 3, 16);
  const json j = a;
  EXPECT_FALSE(j.contains("format"));                   // what save_checkpoint stores is unchanged
  EXPECT_EQ(json(j.get<nn::Arch>()).dump(), j.dump());  // the internal form, exactly
  EXPECT_EQ(internal(nn::arch_to_file_json(a).get<nn::Arch>()).dump(), internal(a).dump());
}

TEST(ArchFile, InternalFormErrorsNameTheLayerAndField) {
  json j = test::tiny_arch("vgg16", 3, 16);
  j["layers"][2]["out_group"] = 99;
  const std::string e = error_of([&] { nn::check_arch(j.get<nn::Arch>()); });
  EXPECT_NE(e.find("layer 'conv3' (#2): field \"out_group\": 99 is not a group"), std::string::npos) << e;
}

TEST(ArchFile, TheDenseNetworkOfAPrunedFileIsTheFileAgain) {
  const nn::Arch a = nn::load_arch_file(examples_dir() + "/resnet_block.json", {1, 28, 28, 10});
  nn::Model m(a, 0);
  prune::KeepSets keep(a.groups.size());
  for (int g : a.prunable_groups()) {
    for (int64_t u = 1; u < a.groups[g].width; u += 2) keep[g].push_back(u);
  }
  prune::remove_units(m, nullptr, keep);
  ASSERT_LT(m.arch().units(), a.units());
  EXPECT_EQ(internal(export_::dense_arch(m.arch())).dump(), internal(a).dump());
}
