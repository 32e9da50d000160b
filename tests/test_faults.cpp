// The fault battery, library side (issue 14): a full disk, a second writer, foreign checkpoints,
// decompression bombs, values that must be refused up front, resume that works on the directory
// given. Every case ends in a demp::Error (one line with a hint) or a documented warning: no
// abort, no hang, no half-written file. The CLI side is tests/fault_battery.sh.
#include <gtest/gtest.h>
#include <sys/mount.h>
#include <torch/torch.h>
#include <unistd.h>
#include <zlib.h>

#include <chrono>
#include <cstdio>
#include <functional>
#include <nlohmann/json.hpp>
#include <string>

#include "demp/common/error.h"
#include "demp/common/files.h"
#include "demp/export/export.h"
#include "demp/nn/arch.h"
#include "demp/nn/model.h"
#include "demp/report/sweep.h"
#include "demp/train/config.h"
#include "demp/train/optim.h"
#include "demp/train/run_dir.h"
#include "demp/train/schedule.h"
#include "demp/train/trainer.h"
#include "test_util.h"

namespace demp {
namespace {

using nlohmann::json;

// The error text of f(), or "" when it does not throw demp::Error. Anything else fails the test.
std::string error_of(const std::function<void()>& f, std::string* hint = nullptr) {
  try {
    f();
  } catch (const Error& e) {
    if (hint) *hint = e.hint();
    return e.what();
  }
  return "";
}

#define EXPECT_REFUSED(stmt, needle)                                                \
  do {                                                                              \
    std::string hint_;                                                              \
    const std::string msg_ = error_of([&] { stmt; }, &hint_);                       \
    EXPECT_NE(msg_.find(needle), std::string::npos) << "message: '" << msg_ << "'"; \
    EXPECT_FALSE(hint_.empty()) << "no hint for: " << msg_;                         \
    EXPECT_EQ(msg_.find('\n'), std::string::npos) << "not one line: " << msg_;      \
  } while (0)

train::TrainConfig tiny_run(const std::string& data_dir, const std::string& out) {
  train::TrainConfig c;
  c.model = "mlp";
  c.mlp_widths = "16";
  c.width = 1.0;
  c.data = "mnist:" + data_dir;
  c.batch_size = 32;
  c.steps = 20;
  c.seed = 1;
  c.out = out;
  c.progress = "none";
  c.log_every = 5;
  c.threads = 1;
  return c;
}

// A small tmpfs (root only). Skips the test where mounting is not allowed; unmounts in all paths.
struct SmallTmpfs {
  std::string path;
  bool mounted = false;
  explicit SmallTmpfs(const std::string& dir, const char* size) : path(dir) {
    make_directories(path);
    mounted = ::mount("tmpfs", path.c_str(), "tmpfs", 0, (std::string("size=") + size).c_str()) == 0;
  }
  ~SmallTmpfs() {
    if (mounted) ::umount2(path.c_str(), MNT_DETACH);
  }
};

// Fills a file system to within `leave` bytes of full.
void fill_disk(const std::string& dir, size_t leave) {
  FILE* f = std::fopen((dir + "/filler").c_str(), "wb");
  ASSERT_NE(f, nullptr);
  std::string chunk(4096, 'x');
  while (std::fwrite(chunk.data(), 1, chunk.size(), f) == chunk.size()) {
  }
  std::fclose(f);
  // Give back `leave` bytes.
  const auto size = read_file(dir + "/filler").size();
  ASSERT_EQ(::truncate((dir + "/filler").c_str(), static_cast<off_t>(size > leave ? size - leave : 0)), 0);
}

// ---- disk full --------------------------------------------------------------------------------

TEST(FaultDiskFull, CheckpointWriteFailsCleanlyAndKeepsThePreviousOne) {
  test::TempDir tmp;
  SmallTmpfs fs(tmp.path + "/fs", "2m");
  if (!fs.mounted) GTEST_SKIP() << "cannot mount a tmpfs here (needs root): disk-full cases skipped";
  // A network whose checkpoint (~0.3 MB) fits once, beside a 1 MB one that does not fit twice.
  nn::Model small(test::tiny_arch("mlp", 1, 8), 1);
  const std::string ck = fs.path + "/model.ckpt";
  train::save_checkpoint(ck, small, nullptr, json{{"step", 1}});
  const auto before = read_file(ck);
  fill_disk(fs.path, 16 * 1024);
  nn::ModelOptions o;
  o.model = "mlp";
  o.in_channels = 1;
  o.in_height = o.in_width = 16;
  o.mlp_widths = {1024};
  o.width = 1.0;
  nn::Model big(nn::build_arch(o), 2);
  EXPECT_REFUSED(train::save_checkpoint(ck, big, nullptr, json{{"step", 2}}), "cannot write checkpoint");
  EXPECT_FALSE(file_exists(ck + ".tmp")) << "the partial temp file is left behind";
  EXPECT_EQ(read_file(ck), before) << "the previous checkpoint changed";
  EXPECT_NO_THROW(train::load_checkpoint(ck));
}

TEST(FaultDiskFull, MetricsLinesAreNeverHalfWritten) {
  test::TempDir tmp;
  SmallTmpfs fs(tmp.path + "/fs", "1m");
  if (!fs.mounted) GTEST_SKIP() << "cannot mount a tmpfs here (needs root): disk-full cases skipped";
  const std::string m = fs.path + "/metrics.jsonl";
  append_line(m, R"({"step": 1})");
  fill_disk(fs.path, 0);
  // tmpfs allocates whole pages: fill the page the file has too.
  const std::string line(8000, 'y');
  std::string last_error;
  for (int i = 0; i < 8 && last_error.empty(); ++i) {
    last_error = error_of([&] { append_line(m, "{\"step\": 2, \"pad\": \"" + line + "\"}"); });
  }
  EXPECT_NE(last_error.find("cannot append"), std::string::npos) << last_error;
  const std::string text = read_file(m);
  ASSERT_FALSE(text.empty());
  EXPECT_EQ(text.back(), '\n') << "the file ends in half a line";
  size_t start = 0;
  while (start < text.size()) {
    const size_t nl = text.find('\n', start);
    EXPECT_FALSE(json::parse(text.substr(start, nl - start), nullptr, false).is_discarded());
    start = nl + 1;
  }
}

TEST(FaultDiskFull, TrainingRunEndsWithOneErrorAndNoTempFiles) {
  test::TempDir tmp;
  test::write_synthetic_idx(tmp.path, 200, 50);
  SmallTmpfs fs(tmp.path + "/fs", "1m");
  if (!fs.mounted) GTEST_SKIP() << "cannot mount a tmpfs here (needs root): disk-full cases skipped";
  auto c = tiny_run(tmp.path, fs.path + "/run");
  c.mlp_widths = "2048";  // a checkpoint of ~2.4 MB with AdamW's two slots: never fits
  c.steps = 10;
  c.checkpoint_every = 5;
  EXPECT_REFUSED(test::run_training(c), "cannot write checkpoint");
  EXPECT_FALSE(file_exists(fs.path + "/run/model.ckpt.tmp"));
  EXPECT_FALSE(file_exists(fs.path + "/run/model.ckpt"));
}

TEST(FaultFiles, StreamedWriteThatFailsKeepsTheOldFile) {
  test::TempDir tmp;
  const std::string p = tmp.path + "/f";
  write_file_atomic(p, "old");
  EXPECT_REFUSED(write_file_streamed(p, "test file",
                                     [](ByteSink& s) {
                                       s.write("new", 3);
                                       throw std::runtime_error("producer failed");
                                     }),
                 "producer failed");
  EXPECT_EQ(read_file(p), "old");
  EXPECT_FALSE(file_exists(p + ".tmp"));
  write_file_streamed(p, "test file", [](ByteSink& s) { s.write("new", 3); });
  EXPECT_EQ(read_file(p), "new");
}

TEST(FaultFiles, ReadingADirectoryIsAnError) {
  test::TempDir tmp;
  EXPECT_REFUSED(read_file(tmp.path), "is a directory");
}

// ---- run directory ---------------------------------------------------------------------------

TEST(FaultRunDir, ASecondWriterIsRefusedWhileTheLockIsHeld) {
  test::TempDir tmp;
  {
    FileLock first(tmp.path + "/.lock", tmp.path);
    EXPECT_TRUE(first.held());
    EXPECT_REFUSED(FileLock(tmp.path + "/.lock", tmp.path),
                   "in use by another demp process (pid " + std::to_string(::getpid()) + ")");
  }
  FileLock again(tmp.path + "/.lock", tmp.path);  // released with the first
  EXPECT_TRUE(again.held());
}

TEST(FaultRunDir, OverwriteWithBadDataKeepsTheOldRun) {
  test::TempDir tmp;
  test::write_synthetic_idx(tmp.path, 200, 50);
  const std::string out = tmp.path + "/run";
  test::run_training(tiny_run(tmp.path, out));
  const std::string summary = read_file(out + "/summary.json");
  auto c = tiny_run(tmp.path, out);
  c.overwrite = true;
  c.data = "mnist:" + tmp.path + "/nonexistent";
  EXPECT_REFUSED(test::run_training(c), "does not exist");
  EXPECT_EQ(read_file(out + "/summary.json"), summary);
  EXPECT_NO_THROW(train::load_checkpoint(out + "/model.ckpt"));
  c = tiny_run(tmp.path, out);
  c.overwrite = true;
  c.model = "alexnet";
  EXPECT_REFUSED(test::run_training(c), "unknown model");
  EXPECT_EQ(read_file(out + "/summary.json"), summary);
}

TEST(FaultRunDir, KilledBeforeTheFirstCheckpointGivesConsistentHints) {
  test::TempDir tmp;
  test::write_synthetic_idx(tmp.path, 200, 50);
  const std::string out = tmp.path + "/run";
  make_directories(out);
  write_file_atomic(out + "/config.json", train::to_json(tiny_run(tmp.path, out)).dump());
  write_file_atomic(out + "/model.ckpt.tmp", "half a checkpoint");  // killed while writing it
  std::string hint_start, hint_resume;
  const auto start = error_of([&] { test::run_training(tiny_run(tmp.path, out)); }, &hint_start);
  auto r = tiny_run(tmp.path, out);
  r.resume = true;
  const auto resume = error_of([&] { test::run_training(r); }, &hint_resume);
  EXPECT_NE(start.find("before it wrote its first checkpoint"), std::string::npos) << start;
  EXPECT_NE(resume.find("before it wrote its first checkpoint"), std::string::npos) << resume;
  EXPECT_NE(hint_start.find("--overwrite"), std::string::npos) << hint_start;
  EXPECT_NE(hint_resume.find("--overwrite"), std::string::npos) << hint_resume;
  EXPECT_EQ(hint_start.find("--resume"), std::string::npos) << "the start hints --resume: " << hint_start;
  auto o = tiny_run(tmp.path, out);
  o.overwrite = true;
  EXPECT_EQ(test::run_training(o)["status"], "finished");
  EXPECT_FALSE(file_exists(out + "/model.ckpt.tmp"));
}

// ---- resume ----------------------------------------------------------------------------------

TEST(FaultResume, ContinuesTheDirectoryGivenNotTheRecordedOne) {
  test::TempDir tmp;
  test::write_synthetic_idx(tmp.path, 200, 50);
  auto c = tiny_run(tmp.path, tmp.path + "/a");
  c.stop_after = 7;
  EXPECT_EQ(test::run_training(c)["status"], "stopped");
  // A moved run: resuming it must neither fail nor recreate the old path.
  ASSERT_EQ(std::rename((tmp.path + "/a").c_str(), (tmp.path + "/b").c_str()), 0);
  auto r = tiny_run(tmp.path, tmp.path + "/b");
  r.resume = true;
  r.given = {"resume", "out"};
  const auto s = test::run_training(r);
  EXPECT_EQ(s["status"], "finished");
  EXPECT_EQ(s["run_dir"], tmp.path + "/b");
  EXPECT_FALSE(file_exists(tmp.path + "/a")) << "resume recreated the recorded directory";
  EXPECT_TRUE(file_exists(tmp.path + "/b/summary.json"));
}

TEST(FaultResume, ChangedOptionsAreRefusedWithTheListSafeOnesApplied) {
  test::TempDir tmp;
  test::write_synthetic_idx(tmp.path, 200, 50);
  auto c = tiny_run(tmp.path, tmp.path + "/a");
  c.stop_after = 7;
  test::run_training(c);
  auto r = tiny_run(tmp.path, tmp.path + "/a");
  r.resume = true;
  r.lr = 0.5;
  r.steps = 40;
  r.given = {"resume", "out", "lr", "steps"};
  EXPECT_REFUSED(test::run_training(r), "--steps 40 (the run has 20), --lr 0.5 (the run has 0.002)");
  // Given but equal to the run's: not a difference. --threads and --stop-after: applied.
  r = tiny_run(tmp.path, tmp.path + "/a");
  r.resume = true;
  r.threads = 2;
  r.stop_after = 12;
  r.given = {"resume", "out", "lr", "threads", "stop-after"};
  EXPECT_EQ(test::run_training(r)["status"], "stopped");
  EXPECT_EQ(json::parse(read_file(tmp.path + "/a/config.json"))["threads"], 1);
}

// ---- foreign files ---------------------------------------------------------------------------

// A checkpoint as save_checkpoint writes it, with an edited architecture (and optionally other
// tensors): what a hand-edited or damaged file looks like to demp.
void write_edited_checkpoint(const std::string& path, const nn::Model& m, const json& arch,
                             torch::ScalarType dtype = torch::kFloat) {
  torch::serialize::OutputArchive ar;
  ar.write("format", c10::IValue(std::string("demp-checkpoint-1")));
  ar.write("arch", c10::IValue(arch.dump()));
  ar.write("meta", c10::IValue(json{{"step", 1}}.dump()));
  for (size_t i = 0; i < m.layers().size(); ++i) {
    const auto& l = m.layers()[i];
    auto put = [&](const char* k, const torch::Tensor& t) {
      if (t.defined()) ar.write("l" + std::to_string(i) + "." + k, t.detach().to(dtype), true);
    };
    put("weight", l.weight);
    put("bias", l.bias);
    put("gamma", l.gamma);
    put("beta", l.beta);
    put("running_mean", l.running_mean);
    put("running_var", l.running_var);
  }
  ar.save_to(path);
}

class FaultForeign : public ::testing::Test {
 protected:
  void expect_every_loader_refuses(const std::string& needle) {
    EXPECT_REFUSED(train::load_checkpoint(path_), needle);
    EXPECT_REFUSED(export_::load_source(path_), needle);
  }
  test::TempDir tmp_;
  std::string path_ = tmp_.path + "/edited.ckpt";
  nn::Model model_{test::tiny_arch("resnet18", 1), 1};
  json arch_ = json(model_.arch());
};

TEST_F(FaultForeign, IntactFileLoads) {
  write_edited_checkpoint(path_, model_, arch_);
  EXPECT_NO_THROW(export_::load_source(path_));
}

TEST_F(FaultForeign, EmptyForwardProgram) {
  arch_["program"] = json::array();
  write_edited_checkpoint(path_, model_, arch_);
  expect_every_loader_refuses("empty forward program");
}

TEST_F(FaultForeign, UnknownLayerKind) {
  arch_["layers"][0]["kind"] = "attention";
  write_edited_checkpoint(path_, model_, arch_);
  expect_every_loader_refuses("unknown layer kind 'attention'");
}

TEST_F(FaultForeign, HugeInput) {
  arch_["in_height"] = 1000000;
  arch_["in_width"] = 1000000;
  write_edited_checkpoint(path_, model_, arch_);
  expect_every_loader_refuses("input shape");
}

TEST_F(FaultForeign, HugeWidth) {
  arch_["groups"][1]["width"] = int64_t{1000000000000};
  arch_["groups"][1]["initial"] = int64_t{1000000000000};
  write_edited_checkpoint(path_, model_, arch_);
  expect_every_loader_refuses("width");
}

TEST_F(FaultForeign, ProgramThatDoesNotEndInTheLogits) {
  arch_["program"].erase(arch_["program"].size() - 1);  // drop the classifier
  write_edited_checkpoint(path_, model_, arch_);
  expect_every_loader_refuses("forward program");
}

TEST_F(FaultForeign, SlotReadBeforeItIsWritten) {
  for (auto& op : arch_["program"]) {
    if (op["op"] == "layer") {
      op["b"] = 5;  // the first layer reads a slot nothing wrote
      break;
    }
  }
  arch_["num_slots"] = 6;
  write_edited_checkpoint(path_, model_, arch_);
  expect_every_loader_refuses("before it is written");
}

TEST_F(FaultForeign, IntegerWeights) {
  write_edited_checkpoint(path_, model_, arch_, torch::kLong);
  expect_every_loader_refuses("not float32");
}

TEST(FaultForeignArch, EveryZooModelPassesTheCheckAndHugeOnesAreRefusedBeforeAllocating) {
  for (const auto& m : nn::model_names()) EXPECT_NO_THROW(nn::check_arch(test::tiny_arch(m)));
  nn::ModelOptions o;
  o.model = "mlp";
  o.width = 1.0;
  o.mlp_widths = {99999999999999};
  EXPECT_REFUSED(nn::build_arch(o), "out of range");
  o.mlp_widths = {1000000, 1000000};
  const auto t0 = std::chrono::steady_clock::now();
  EXPECT_REFUSED(nn::build_arch(o), "parameters");
  EXPECT_LT(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count(), 1.0);
}

// ---- bad data --------------------------------------------------------------------------------

void write_gzip(const std::string& path, const std::string& data) {
  gzFile f = gzopen(path.c_str(), "wb");
  ASSERT_NE(f, nullptr);
  gzwrite(f, data.data(), static_cast<unsigned>(data.size()));
  gzclose(f);
}

std::string be32(uint32_t v) {
  return {static_cast<char>(v >> 24), static_cast<char>(v >> 16), static_cast<char>(v >> 8),
          static_cast<char>(v)};
}

TEST(FaultData, GzipBombIsRefusedAtTheSizeTheHeaderPromises) {
  test::TempDir tmp;
  // A header for 10 images of 28x28 (7840 bytes), followed by 64 MiB of zeros (~64 KB gzip'd).
  write_gzip(tmp.path + "/img.gz",
             be32(0x803) + be32(10) + be32(28) + be32(28) + std::string(64 << 20, '\0'));
  write_gzip(tmp.path + "/lbl.gz", be32(0x801) + be32(10) + std::string(10, '\1'));
  const auto t0 = std::chrono::steady_clock::now();
  EXPECT_REFUSED(data::read_idx(tmp.path + "/img.gz", tmp.path + "/lbl.gz"),
                 "inflates to more than the 7856 bytes");
  EXPECT_LT(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count(), 2.0);
}

TEST(FaultData, ZeroPixelImagesAreRefused) {
  test::TempDir tmp;
  write_file_atomic(tmp.path + "/img", be32(0x803) + be32(10) + be32(0) + be32(0));
  write_file_atomic(tmp.path + "/lbl", be32(0x801) + be32(10) + std::string(10, '\1'));
  EXPECT_REFUSED(data::read_idx(tmp.path + "/img", tmp.path + "/lbl"), "10 images of 0x0 pixels");
}

// ---- options refused up front ----------------------------------------------------------------

TEST(FaultOptions, BadValuesAreRefusedBeforeAnyWork) {
  auto refuse = [](const std::function<void(train::TrainConfig&)>& edit, const std::string& needle) {
    train::TrainConfig c;
    edit(c);
    EXPECT_REFUSED(train::validate(c), needle);
  };
  refuse([](auto& c) { c.lr = std::numeric_limits<double>::infinity(); }, "--lr must be positive and finite");
  refuse([](auto& c) { c.lr = std::nan(""); }, "--lr");
  refuse([](auto& c) { c.set("lambda", std::nan("")); }, "--lambda");
  refuse([](auto& c) { c.set("lambda", std::numeric_limits<double>::infinity()); }, "--lambda");
  refuse([](auto& c) { c.momentum = -1; }, "--momentum must be in [0, 1)");
  refuse([](auto& c) { c.momentum = 2; }, "--momentum must be in [0, 1)");
  refuse([](auto& c) { c.seed = -1; }, "--seed must be >= 0");
  refuse([](auto& c) { c.threads = 100000; }, "--threads 100000");
  refuse([](auto& c) { c.nproc = 100000; }, "--nproc 100000");
  refuse([](auto& c) { c.given = {"out"}; }, "--out is empty");
  refuse([](auto& c) { c.checkpoint_every = -1; }, "--checkpoint-every");
  refuse([](auto& c) { c.weight_decay = std::numeric_limits<double>::infinity(); }, "--weight-decay");
  refuse([](auto& c) { c.width = std::numeric_limits<double>::infinity(); }, "--width");
}

TEST(FaultOptions, ConfigFileKeysThatUsedToSlipThrough) {
  train::TrainConfig c;
  EXPECT_REFUSED(train::apply_json(c, json{{"config", "other.json"}}, "a.json"), "cannot name another");
  EXPECT_REFUSED(train::apply_json(c, json::parse(R"({"seed": 9223372036854775808})"), "a.json"),
                 "below 2^63");
  EXPECT_REFUSED(train::apply_json(c, json{{"lr", "fast"}}, "a.json"), "must be a number");
}

TEST(FaultOptions, NoOpAndConflictingOptionsAreWarnedAbout) {
  train::TrainConfig c;
  c.method = "dense";
  c.given = {"lambda"};
  auto w = train::config_warnings(c, 100);
  ASSERT_EQ(w.size(), 1u);
  EXPECT_NE(w[0].find("--lambda has no effect with --method dense"), std::string::npos);
  c.method = "demp";
  c.given = {"density", "prune-after"};
  c.set("prune-after", 500);
  c.stop_after = 200;
  w = train::config_warnings(c, 100);
  ASSERT_EQ(w.size(), 3u);
  EXPECT_NE(w[0].find("--density applies to the baselines only"), std::string::npos);
  EXPECT_NE(w[1].find("--prune-after 500 is beyond"), std::string::npos);
  EXPECT_NE(w[2].find("--stop-after 200"), std::string::npos);
  c = train::TrainConfig{};
  c.method = "slimming";
  c.given = {"prune-at"};
  c.set("prune-at", 100);
  EXPECT_EQ(train::config_warnings(c, 100).size(), 1u);
  c.given.clear();  // nothing given explicitly (library use): nothing to warn about
  EXPECT_TRUE(train::config_warnings(c, 1000).empty());
}

TEST(FaultOptions, UnsortedMilestonesAndDuplicateGridValues) {
  EXPECT_REFUSED(train::parse_schedule("step:4,2:0.1", 1.0, 100, 10), "not in increasing order");
  EXPECT_REFUSED(train::parse_schedule("warmup-step:1:3,3:0.1", 1.0, 100, 10), "not in increasing order");
  EXPECT_NO_THROW(train::parse_schedule("step:2,4:0.1", 1.0, 100, 10));
  EXPECT_REFUSED(report::parse_grid_axis("lr=0.1,0.10"), "repeats the value 0.10 (as 0.1)");
  EXPECT_REFUSED(report::parse_grid_axis("lr=1e-1,0.1"), "repeats");
  EXPECT_NO_THROW(report::parse_grid_axis("method=demp,dense"));
}

TEST(FaultOptions, EvaluationWithBatchZeroIsRefusedNotALoop) {
  nn::Model m(test::tiny_arch("mlp", 1, 8), 1);
  data::Dataset d;
  d.images = torch::zeros({4, 1, 8, 8});
  d.labels = torch::zeros({4}, torch::kLong);
  EXPECT_REFUSED(train::evaluate(m, d, 0, torch::kCPU), "must be positive");
}

// ---- messages ------------------------------------------------------------------------------------

TEST(FaultMessages, EventLinesEndAnOpenProgressBarInsteadOfCollidingWithIt) {
  test::TempDir tmp;
  train::RunDir run(tmp.path + "/r");
  train::Progress bar("bar", 10, 0, 32);
  testing::internal::CaptureStderr();
  bar.update(5, "epoch 1/2", /*force_line=*/true);
  EXPECT_TRUE(train::progress_line_open());
  run.log("prune step 5 | units 10 -> 8", /*echo=*/true);
  EXPECT_FALSE(train::progress_line_open());
  bar.finish();
  const std::string err = testing::internal::GetCapturedStderr();
  // Was: "... ETA 04:24 | epoch 1/2prune step 5 | ...".
  EXPECT_NE(err.find("epoch 1/2\x1b[K\r\x1b[Kprune step 5 | units 10 -> 8\n"), std::string::npos) << err;
  EXPECT_EQ(err.back(), '\n');
}

}  // namespace
}  // namespace demp
