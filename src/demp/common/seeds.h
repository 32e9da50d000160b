#pragma once
// Seed streams: every random draw of a run comes from a generator derived from (run seed, stream,
// index), so that any step can be replayed, and a resumed run draws exactly what an
// uninterrupted one would. Data (shuffling, augmentation), models (initialisation), methods
// (noise) and benchmarks all draw from here, which is why it sits in common/.
#include <ATen/core/Generator.h>

#include <cstdint>

namespace demp {

/// Stream ids: independent streams for shuffling, augmentation, check sets, noise...
enum Stream : uint64_t { kShuffle = 1, kAugment = 2, kCheckSet = 3, kNoise = 4, kInit = 5, kMisc = 6 };

/// The seed of (seed, stream, index): chained splitmix64, so that nearby triples land far apart.
/// make_generator seeds from it; device generators are reseeded with it per step.
uint64_t stream_seed(uint64_t seed, uint64_t stream, uint64_t index);

/// A CPU generator seeded with stream_seed(seed, stream, index).
at::Generator make_generator(uint64_t seed, uint64_t stream, uint64_t index);

}  // namespace demp
