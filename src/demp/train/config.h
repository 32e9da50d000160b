#pragma once
// The run configuration. One list of fields (name, help, pointer) drives the CLI flags, the JSON
// config file, the saved config.json and the README's option table, so they cannot drift apart.
#include <nlohmann/json_fwd.hpp>

#include <cstdint>
#include <string>
#include <variant>
#include <vector>

namespace demp::data {
struct ImageOptions;
}
namespace demp::nn {
struct ArchShape;
struct ModelOptions;
}  // namespace demp::nn

namespace demp::train {

struct TrainConfig {
  // model
  std::string model = "resnet18";
  double width = 0.25;
  std::string mlp_widths = "512,256";
  std::string stem = "auto";
  std::string arch;  ///< architecture file (instead of --model)
  std::string init;  ///< checkpoint whose network (architecture and weights) training starts from
  // data
  std::string data = "fashion-mnist";
  std::string augment = "auto";
  int64_t val_size = 0;
  int64_t train_limit = 0;
  int64_t test_limit = 0;
  // image folders (imagefolder:DIR, imagenet:DIR)
  int64_t image_size = 224;
  std::string crop_scale = "0.08,1";
  double eval_crop = 0.875;
  std::string bad_images = "error";
  int64_t decode_threads = 0;
  int64_t prefetch = 4;
  // method
  std::string method = "dense";
  // DemP (and the scan every method shares)
  double lambda = 0.01;
  std::string l1_step = "prox";
  std::string constant_units = "shrink";
  double target_params = 0.0;
  double target_flops = 0.0;
  double target_units = 0.0;
  double target_by = 0.3;
  int64_t lambda_span = 0;
  std::string lambda_schedule = "onecycle";
  std::string regularizer = "l1-gamma";
  double noise = 5e-5;
  std::string noise_mask = "live";
  std::string noise_rng = "torch";
  int64_t prune_every = 0;
  int64_t prune_after = 50;
  int64_t check_size = 1536;
  int64_t check_batch = 512;
  double dead_eps = 0.0;
  int64_t width_multiple = 1;
  // structured baselines
  double density = 0.5;
  int64_t prune_at = -1;
  int64_t score_batches = 1;
  int64_t crop_steps = 5;
  std::string gradual_score = "gamma";
  // schedule of the run
  int64_t epochs = 5;
  int64_t steps = 0;
  int64_t batch_size = 128;
  std::string optimizer = "adamw";
  double lr = 2e-3;
  std::string lr_schedule = "onecycle";
  double weight_decay = 5e-4;
  double momentum = 0.9;
  double label_smoothing = 0.0;
  // run
  int64_t seed = 0;
  std::string device = "cpu";
  std::string precision = "auto";
  std::string graph = "auto";
  int64_t threads = 0;
  std::string out;
  bool resume = false;
  bool overwrite = false;
  int64_t stop_after = 0;
  int64_t checkpoint_every = 0;
  int64_t log_every = 50;
  int64_t eval_batch_size = 1000;
  std::string progress = "auto";
  std::string tensorboard;  ///< directory of TensorBoard events files ("": none)
  /// Not an option: the names of the fields set explicitly (on the command line or in a config
  /// file). --resume refuses changes to those it cannot apply; warnings name no-op options.
  std::vector<std::string> given;
  // data-parallel
  int64_t nproc = 0;
  int64_t dist_timeout = 300;
  bool sync_bn = false;
};

struct Field {
  std::string name;  ///< flag name without dashes, and the JSON key
  std::string help;
  std::variant<std::string*, double*, int64_t*, bool*> ptr;
  std::string group;  ///< heading in --help and the README
};

/// The fields of `c`, in display order.
std::vector<Field> fields(TrainConfig& c);

/// Applies a JSON object to `c`; throws demp::Error naming an unknown key or a wrong type.
void apply_json(TrainConfig& c, const nlohmann::json& j, const std::string& source);
nlohmann::json to_json(const TrainConfig& c);
/// The value of a field as text (for --help defaults).
std::string value_string(const Field& f);

/// Checks ranges and combinations; throws demp::Error with a hint.
void validate(const TrainConfig& c);

/// Options that are given but do nothing in this configuration, or that contradict each other
/// mildly (e.g. --lambda with --method dense): one line each, for a warning. `total_steps` is the
/// run's length (0: unknown yet).
std::vector<std::string> config_warnings(const TrainConfig& c, int64_t total_steps);

/// The image-folder options of `c` (--image-size, --crop-scale, --eval-crop, --bad-images,
/// --decode-threads: 0 gives the cores `training_threads` leaves free, at least 1; --prefetch;
/// --augment: auto/crop-flip, crop, flip, none). Throws demp::Error on a malformed value.
void image_options(const TrainConfig& c, int64_t training_threads, data::ImageOptions* out);

/// The zoo network `c` describes (--model, --width, --mlp-widths, --stem) for inputs and classes
/// of `shape` (nn/arch.h). Throws demp::Error on a malformed --mlp-widths.
nn::ModelOptions model_options(const TrainConfig& c, const nn::ArchShape& shape);

/// The options --resume may change (how the run is run, not what it computes).
const std::vector<std::string>& resume_changeable();

}  // namespace demp::train
