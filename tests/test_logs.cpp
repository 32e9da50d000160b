// The logs people look at: metrics.csv beside metrics.jsonl, and TensorBoard events files
// (CRC32C, TFRecord framing, the Event encoding). tests/tensorboard_smoke.sh reads the events
// back with the tensorboard Python package.
#include <gtest/gtest.h>

#include <dirent.h>

#include <algorithm>
#include <map>

#include <cmath>
#include <cstring>
#include <nlohmann/json.hpp>
#include <sstream>

#include "demp/common/files.h"
#include "demp/train/run_dir.h"
#include "demp/train/tensorboard.h"
#include "demp/train/trainer.h"
#include "test_util.h"

using namespace demp;
using nlohmann::json;

namespace {

std::vector<std::string> lines_of(const std::string& text) {
  std::vector<std::string> out;
  std::istringstream in(text);
  std::string l;
  while (std::getline(in, l)) {
    if (!l.empty()) out.push_back(l);
  }
  return out;
}

std::vector<std::string> split_csv(const std::string& line) {  // no quoted commas in these rows
  std::vector<std::string> out;
  std::string f;
  std::istringstream in(line);
  while (std::getline(in, f, ',')) out.push_back(f);
  if (!line.empty() && line.back() == ',') out.push_back("");
  return out;
}

std::vector<std::string> event_files(const std::string& dir) {
  std::vector<std::string> out;
  DIR* d = ::opendir(dir.c_str());
  if (!d) return out;
  while (const dirent* e = ::readdir(d)) {
    if (std::string(e->d_name).rfind("events.out.tfevents.", 0) == 0) out.push_back(dir + "/" + e->d_name);
  }
  ::closedir(d);
  std::sort(out.begin(), out.end());
  return out;
}

// Reads a TFRecord file back, checking both CRCs of every record.
std::vector<std::string> read_records(const std::string& path) {
  const std::string s = read_file(path);
  std::vector<std::string> out;
  size_t p = 0;
  while (p < s.size()) {
    EXPECT_LE(p + 12, s.size());
    uint64_t len;
    uint32_t c1, c2;
    std::memcpy(&len, s.data() + p, 8);
    std::memcpy(&c1, s.data() + p + 8, 4);
    EXPECT_EQ(c1, train::masked_crc32c(s.data() + p, 8));
    EXPECT_LE(p + 16 + len, s.size());
    const std::string data = s.substr(p + 12, len);
    std::memcpy(&c2, s.data() + p + 12 + len, 4);
    EXPECT_EQ(c2, train::masked_crc32c(data.data(), data.size()));
    out.push_back(data);
    p += 16 + len;
  }
  return out;
}

train::TrainConfig tiny_run(const std::string& data_dir, const std::string& out) {
  train::TrainConfig c;
  c.model = "mlp";
  c.mlp_widths = "32,16";
  c.width = 1.0;
  c.data = "mnist:" + data_dir;
  c.batch_size = 32;
  c.steps = 40;
  c.lr = 0.01;
  c.seed = 3;
  c.out = out;
  c.progress = "none";
  c.log_every = 5;
  c.threads = 1;
  return c;
}

}  // namespace

TEST(Crc32c, MatchesTheKnownVectors) {
  // RFC 3720 (iSCSI) appendix B.4 and the classic check value.
  EXPECT_EQ(train::crc32c("123456789", 9), 0xE3069283u);
  std::string zeros(32, '\0'), ones(32, '\xff'), inc(32, 0), dec(32, 0);
  for (int i = 0; i < 32; ++i) {
    inc[i] = static_cast<char>(i);
    dec[i] = static_cast<char>(31 - i);
  }
  EXPECT_EQ(train::crc32c(zeros.data(), 32), 0x8A9136AAu);
  EXPECT_EQ(train::crc32c(ones.data(), 32), 0x62A8AB43u);
  EXPECT_EQ(train::crc32c(inc.data(), 32), 0x46DD794Eu);
  EXPECT_EQ(train::crc32c(dec.data(), 32), 0x113FDB5Cu);
  EXPECT_EQ(train::crc32c("", 0), 0u);
  // continuing a CRC over a split buffer gives the CRC of the whole
  EXPECT_EQ(train::crc32c("6789", 4, train::crc32c("12345", 5)), 0xE3069283u);
}

TEST(TensorBoard, EventIsTheHandEncodedProtobuf) {
  // Event{wall_time: 1.5, step: 300, summary{value{tag: "a", simple_value: 2}}}, by hand.
  const std::string e = train::event_scalars(1.5, 300, {{"a", 2.0}});
  const std::string expect = std::string("\x09\x00\x00\x00\x00\x00\x00\xf8\x3f", 9) +  // 1: double 1.5
                             std::string("\x10\xac\x02", 3) +                          // 2: varint 300
                             std::string("\x2a\x0a\x0a\x08", 4) +                      // 5 { 1 {
                             std::string(
                                 "\x0a\x01"
                                 "a",
                                 3) +                                 //   tag "a"
                             std::string("\x15\x00\x00\x00\x40", 5);  //   2: float 2
  EXPECT_EQ(e, expect);
  const std::string v = train::event_file_version(0);
  EXPECT_NE(v.find("brain.Event:2"), std::string::npos);
  const std::string r = train::tfrecord(e);
  ASSERT_EQ(r.size(), e.size() + 16);
  uint64_t len;
  std::memcpy(&len, r.data(), 8);
  EXPECT_EQ(len, e.size());
}

TEST(TensorBoard, RowsBecomeReadableTags) {
  const json row{{"step", 50},
                 {"lr", 0.001},
                 {"train_loss", 0.5},
                 {"test_accuracy", 0.8},
                 {"live_units_per_group", {{"fc1", 30}}},
                 {"reg_lambda", 0.01},
                 {"noise_std", 1e-5},
                 {"last_scan", {{"dead_units", 4}, {"step", 40}}},
                 {"allreduce_buckets", 3}};
  const auto s = train::tensorboard_scalars(row, 0.25);
  std::map<std::string, double> m(s.begin(), s.end());
  EXPECT_EQ(m.count("step"), 0u);
  EXPECT_DOUBLE_EQ(m.at("train/lr"), 0.001);
  EXPECT_DOUBLE_EQ(m.at("train/loss"), 0.5);
  EXPECT_DOUBLE_EQ(m.at("eval/test_acc"), 0.8);
  EXPECT_DOUBLE_EQ(m.at("units/fc1"), 30);
  EXPECT_DOUBLE_EQ(m.at("prune/lambda"), 0.01);
  EXPECT_DOUBLE_EQ(m.at("prune/sigma"), 1e-5);
  EXPECT_DOUBLE_EQ(m.at("prune/dead_units"), 4);
  EXPECT_DOUBLE_EQ(m.at("other/allreduce_buckets"), 3);
  EXPECT_DOUBLE_EQ(m.at("time/step_seconds"), 0.25);
  EXPECT_EQ(m.count("other/last_scan/step"), 0u);
}

TEST(MetricsCsv, OneHeaderAndOneRowPerMetricsRow) {
  test::TempDir tmp;
  train::RunDir run(tmp.path + "/r");
  run.metrics(
      {{"step", 10}, {"lr", 0.5}, {"elapsed_seconds", 2.0}, {"live_units_per_group", {{"a", 3}, {"b", 4}}}});
  run.metrics({{"step", 20}, {"lr", 0.25}, {"elapsed_seconds", 3.0}, {"test_accuracy", 0.75}});
  const auto rows = lines_of(read_file(tmp.path + "/r/metrics.csv"));
  ASSERT_EQ(rows.size(), 3u);
  const auto& cols = train::metrics_csv_columns();
  const auto head = split_csv(rows[0]);
  EXPECT_EQ(head, cols);
  const auto col = [&](const std::string& name) {
    return static_cast<size_t>(std::find(cols.begin(), cols.end(), name) - cols.begin());
  };
  const auto r1 = split_csv(rows[1]), r2 = split_csv(rows[2]);
  ASSERT_EQ(r1.size(), cols.size());
  ASSERT_EQ(r2.size(), cols.size());
  EXPECT_EQ(r1[col("step")], "10");
  EXPECT_EQ(r1[col("lr")], "0.5");
  EXPECT_EQ(r1[col("live_units_per_group")], "a=3;b=4");
  EXPECT_EQ(r1[col("step_seconds")], "0.2");  // 2 s over steps 0..10
  EXPECT_EQ(r1[col("test_accuracy")], "");
  EXPECT_EQ(r2[col("test_accuracy")], "0.75");
  EXPECT_EQ(r2[col("step_seconds")], "0.1");  // 1 s over steps 10..20
}

TEST(MetricsCsv, ResumeAfterACrashKeepsEachRowOnceInOrder) {
  test::TempDir tmp;
  test::write_synthetic_idx(tmp.path, 400, 100);
  auto part = tiny_run(tmp.path, tmp.path + "/run");
  part.stop_after = 17;
  part.tensorboard = tmp.path + "/tb";
  ASSERT_EQ(test::run_training(part)["status"], "stopped");
  // What a crash after the checkpoint leaves: rows past it, and a torn last line.
  append_line(tmp.path + "/run/metrics.jsonl", R"({"step":25,"lr":0.1,"elapsed_seconds":9})");
  append_line(tmp.path + "/run/metrics.csv", "25,0.7,0.1,");
  auto resume = tiny_run(tmp.path, tmp.path + "/run");
  resume.resume = true;
  ASSERT_EQ(test::run_training(resume)["status"], "finished");

  const auto jl = lines_of(read_file(tmp.path + "/run/metrics.jsonl"));
  const auto csv = lines_of(read_file(tmp.path + "/run/metrics.csv"));
  ASSERT_EQ(csv.size(), jl.size() + 1);  // + the header
  const size_t ncol = train::metrics_csv_columns().size();
  int64_t prev = -1;
  for (size_t i = 0; i < jl.size(); ++i) {
    const auto j = json::parse(jl[i]);
    const auto f = split_csv(csv[i + 1]);
    ASSERT_EQ(f.size(), ncol) << csv[i + 1];
    EXPECT_EQ(std::stoll(f[0]), j["step"].get<int64_t>());
    EXPECT_EQ(std::stod(f[3]), j["train_loss"].get<double>());  // shortest round-trip text
    EXPECT_GT(j["step"].get<int64_t>(), prev);
    prev = j["step"].get<int64_t>();
  }
  EXPECT_EQ(prev, 40);

  // TensorBoard: one file per process, CRCs intact, the first record is the file version and
  // the resumed file starts with a SessionLog START at the resume step.
  const auto files = event_files(tmp.path + "/tb");
  ASSERT_EQ(files.size(), 2u);
  const auto first = read_records(files[0]), second = read_records(files[1]);
  ASSERT_GE(first.size(), 2u);
  ASSERT_GE(second.size(), 3u);
  EXPECT_NE(first[0].find("brain.Event:2"), std::string::npos);
  // (the same bytes but for the wall time, the first 9)
  EXPECT_EQ(second[1].substr(9), train::event_session_start(0, 18).substr(9));
  EXPECT_NE(second[2].find("train/loss"), std::string::npos);
  // every metrics row once: those up to the stop in the first file, the others in the second
  size_t before = 0;
  for (const auto& l : jl) before += json::parse(l)["step"].get<int64_t>() <= 17 ? 1 : 0;
  EXPECT_EQ(first.size(), 1 + before);
  EXPECT_EQ(second.size(), 2 + (jl.size() - before));
}

TEST(TrainHooks, EveryStepRowAndPruneEventIsReportedOnceInOrder) {
  test::TempDir tmp;
  test::write_synthetic_idx(tmp.path, 400, 100);
  auto c = tiny_run(tmp.path, tmp.path + "/run");
  c.method = "demp";
  c.set("lambda", 0.5);
  c.set("prune-after", 10);
  c.set("prune-every", 10);
  std::vector<int64_t> steps;
  std::vector<json> rows, prunes;
  train::TrainHooks h;
  h.on_step = [&](const train::TrainHooks::Step& s) {
    steps.push_back(s.step);
    EXPECT_EQ(s.total_steps, 40);
    EXPECT_TRUE(std::isfinite(s.loss) && s.loss > 0);
  };
  h.on_metrics = [&](const json& r) { rows.push_back(r); };
  h.on_prune = [&](const json& e) { prunes.push_back(e); };
  const auto s = train::run_training(c, methods::make_method, h);
  ASSERT_EQ(steps.size(), 40u);
  for (size_t i = 0; i < steps.size(); ++i) EXPECT_EQ(steps[i], static_cast<int64_t>(i) + 1);
  const auto jl = lines_of(read_file(tmp.path + "/run/metrics.jsonl"));
  ASSERT_EQ(rows.size(), jl.size());
  for (size_t i = 0; i < jl.size(); ++i) EXPECT_EQ(rows[i], json::parse(jl[i]));
  ASSERT_FALSE(s["prune_events"].empty());  // λ = 0.5 kills units in 40 steps
  EXPECT_EQ(json(prunes), s["prune_events"]);
}
