#include "demp/cli/train_cmd.h"

#include <fmt/format.h>
#include <CLI/CLI.hpp>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <iostream>
#include <nlohmann/json.hpp>

#include "demp/cli/common.h"
#include "demp/common/error.h"
#include "demp/common/files.h"
#include "demp/dist/launch.h"
#include "demp/methods/method.h"
#include "demp/train/trainer.h"

namespace demp::cli {
namespace {

using nlohmann::json;

// Finds "--config X" / "--config=X" before CLI11 runs, so that the file gives the defaults and
// the flags override them.
std::string find_config(int argc, char** argv) {
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--config") == 0 && i + 1 < argc) return argv[i + 1];
    if (std::strncmp(argv[i], "--config=", 9) == 0) return argv[i] + 9;
  }
  return {};
}

// The config file as JSON, refusing what nlohmann accepts silently (a repeated key: the last one
// wins) and saying in one line what it refuses (an overflowing number, a syntax error).
json parse_config_file(const std::string& path) {
  if (is_directory(path)) {
    throw Error("--config " + path + " is a directory", "give a JSON file, e.g. recipes/<name>.json");
  }
  const std::string text = read_file(path);
  std::vector<std::vector<std::string>> keys;  // the keys of each open object
  std::string duplicate;
  const json::parser_callback_t cb = [&](int, json::parse_event_t ev, json& parsed) {
    if (ev == json::parse_event_t::object_start) keys.emplace_back();
    if (ev == json::parse_event_t::object_end && !keys.empty()) keys.pop_back();
    if (ev == json::parse_event_t::key && !keys.empty()) {
      const std::string k = parsed.get<std::string>();
      if (std::find(keys.back().begin(), keys.back().end(), k) != keys.back().end() && duplicate.empty()) {
        duplicate = k;
      }
      keys.back().push_back(k);
    }
    return true;
  };
  json j;
  try {
    j = json::parse(text, cb);
  } catch (const json::exception& e) {
    // "[json.exception.parse_error.101] parse error at line 1, column 14: syntax error while
    // parsing value - unexpected '}'; last read: ..." or "[json.exception.out_of_range.406]
    // number overflow parsing '1e999'" -> their substance, without the library's prefix.
    std::string detail = e.what();
    const auto close = detail.find("] ");
    if (detail.rfind("[json.exception", 0) == 0 && close != std::string::npos)
      detail = detail.substr(close + 2);
    const auto dash = detail.find(" - ");
    if (dash != std::string::npos) detail = detail.substr(dash + 3);
    const auto semi = detail.find("; last read");
    if (semi != std::string::npos) detail.resize(semi);
    const bool overflow = detail.find("number overflow") != std::string::npos;
    std::string where;
    if (const auto* pe = dynamic_cast<const json::parse_error*>(&e))
      where = fmt::format(" (byte {})", pe->byte);
    throw Error(
        fmt::format("config file {} is not valid JSON{}: {}", path, where, detail),
        overflow ? "the number is too large for a double; give a finite value" : "see recipes/ for examples");
  }
  if (!duplicate.empty()) {
    throw Error("config file " + path + " gives the key '" + duplicate + "' twice", "give each option once");
  }
  return j;
}

// One flag per Field (name, help, group), showing the built-in default, bound to `cfg`.
void bind_fields(CLI::App* app, train::TrainConfig& cfg) {
  train::TrainConfig defaults;
  auto dfs = train::fields(defaults);
  auto fs = train::fields(cfg);
  for (size_t i = 0; i < fs.size(); ++i) {
    const auto& f = fs[i];
    const std::string flag = "--" + f.name;
    std::visit(
        [&](auto* p) {
          using T = std::remove_pointer_t<decltype(p)>;
          if constexpr (std::is_same_v<T, bool>) {
            app->add_flag(flag, *p, f.help)->group(f.group);
          } else {
            auto* o =
                app->add_option(flag, *p, f.help)->default_str(train::value_string(dfs[i]))->group(f.group);
            if constexpr (std::is_same_v<T, int64_t>) o->transform(CLI::Validator(check_integer, ""));
          }
        },
        f.ptr);
  }
}

// The options set explicitly (flags and config-file keys): --resume compares them with the
// run's, and options that do nothing in this configuration are warned about.
void record_given(TrainCommand& t) {
  t.cfg.given = t.config_keys;
  for (const auto& f : train::fields(t.cfg)) {
    const CLI::Option* o = t.cmd->get_option_no_throw("--" + f.name);
    if (o && o->count() > 0) t.cfg.given.push_back(f.name);
  }
}

// --nproc N: the same command once per local rank (exit code of the launch), or -1 when this
// process trains itself (one rank, or a rank that was launched).
int launch_ranks(const train::TrainConfig& cfg, int argc, char** argv) {
  if (cfg.nproc > 1 && std::getenv("RANK") != nullptr && std::getenv("DEMP_LOCAL_LAUNCH") == nullptr) {
    throw Error(fmt::format("--nproc {} and torchrun's RANK/WORLD_SIZE both start ranks", cfg.nproc),
                "use one: --nproc N alone, or torchrun (or RANK, WORLD_SIZE...) without --nproc");
  }
  if (cfg.nproc <= 1 || std::getenv("RANK") != nullptr) return -1;
  train::validate(cfg);  // refused once here, not once per rank
  // The convenience launcher: the same command, once per local rank, with torchrun's
  // environment; each child sees RANK and trains (it does not launch again).
  std::vector<std::string> args{"/proc/self/exe"};  // this very binary, as the sweep runs it
  for (int i = 1; i < argc; ++i) args.emplace_back(argv[i]);
  return dist::launch_local(args, cfg.nproc);
}

// The closing table of a finished run (rank 0); 4 when the replicas differ.
int print_finished(const json& s) {
  std::cout << fmt::format(
      "\n{:<24}{}\n{:<24}{:.2f}% (best {:.2f}%)\n{:<24}{} / {} ({:.1f}%)\n{:<24}{} / {} ({:.1f}%)\n"
      "{:<24}{} / {} ({:.1f}%)\n{:<24}{:.1f}\n{:<24}{}\n",
      "run", s["run_dir"].get<std::string>(), "test accuracy", 100 * s["test_accuracy"].get<double>(),
      100 * s["best_test_accuracy"].get<double>(), "live units", s["units_final"].get<int64_t>(),
      s["units_initial"].get<int64_t>(),
      100.0 * s["units_final"].get<double>() / s["units_initial"].get<double>(), "parameters",
      s["params_final"].get<int64_t>(), s["params_initial"].get<int64_t>(),
      100.0 * s["params_final"].get<double>() / s["params_initial"].get<double>(), "FLOPs/image",
      s["flops_final"].get<int64_t>(), s["flops_initial"].get<int64_t>(),
      100.0 * s["flops_final"].get<double>() / s["flops_initial"].get<double>(), "train seconds",
      s["train_seconds"].get<double>(), "steps", s["steps"].get<int64_t>());
  if (s.contains("replicas_identical")) {
    const bool same = s["replicas_identical"].get<bool>();
    std::cout << fmt::format("{:<24}{} ({}), replicas identical: {}\n", "ranks",
                             s["world_size"].get<int64_t>(), s["dist_backend"].get<std::string>(),
                             same ? "yes" : "NO");
    if (!same) return 4;
  }
  return 0;
}

// What the run's summary says to the user, and the exit code it gives.
int report_outcome(const json& s) {
  if (s.value("status", "") == "interrupted") {
    if (s.contains("run_dir")) {
      std::cout << fmt::format(
          "interrupted at step {}; checkpoint and summary written. Continue with:\n"
          "  demp train --resume --out {}\n",
          s.value("interrupted_at_step", int64_t{0}), s["run_dir"].get<std::string>());
    }
    return 130;
  }
  if (s.value("status", "") == "replica") {  // a data-parallel rank other than 0
    std::cout << fmt::format(
        "rank {} | finished | units {} | params {} | prune steps {} | replicas "
        "identical {}\n",
        s["rank"].get<int64_t>(), s["units_final"].get<int64_t>(), s["params_final"].get<int64_t>(),
        s["prune_steps"].dump(), s["replicas_identical"].get<bool>() ? "yes" : "NO");
    return s["replicas_identical"].get<bool>() ? 0 : 4;
  }
  if (s.value("status", "") == "finished") return print_finished(s);
  return 0;
}

}  // namespace

void add_train_command(CLI::App& app, TrainCommand& t, int argc, char** argv) {
  const std::string config_path = find_config(argc, argv);
  if (!config_path.empty()) {
    const json j = parse_config_file(config_path);
    train::apply_json(t.cfg, j, config_path);
    for (auto it = j.begin(); it != j.end(); ++it) t.config_keys.push_back(it.key());
  }
  t.cmd = app.add_subcommand("train", "train a network (dense or with a pruning method)");
  bind_fields(t.cmd, t.cfg);
  // The methods' list comes from their registry (config.cpp's Field table sits below methods/).
  t.cmd->get_option("--method")->description("training/pruning method:" + methods::method_help());
  t.cmd
      ->add_option("--config", t.config_unused,
                   "JSON file whose keys are these flags' names; flags override it")
      ->group("run");
}

int run_train_command(TrainCommand& t, int argc, char** argv) {
  if (!*t.cmd) return -1;
  record_given(t);
  if (const int code = launch_ranks(t.cfg, argc, argv); code >= 0) return code;
  return report_outcome(train::run_training(t.cfg, methods::make_method));
}

}  // namespace demp::cli
