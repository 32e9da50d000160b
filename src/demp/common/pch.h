// Precompiled header: LibTorch is the heavy include of every translation unit.
#pragma once
#include <torch/torch.h>
#include <nlohmann/json.hpp>
#include <fmt/format.h>
