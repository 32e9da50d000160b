// Precompiled header: LibTorch is the heavy include of every translation unit.
#pragma once
#include <fmt/format.h>
#include <torch/torch.h>
#include <nlohmann/json.hpp>
