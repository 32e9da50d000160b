#include "demp/common/seeds.h"

#include <ATen/CPUGeneratorImpl.h>

namespace demp {
namespace {

uint64_t splitmix64(uint64_t x) {
  x += 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

}  // namespace

uint64_t stream_seed(uint64_t seed, uint64_t stream, uint64_t index) {
  // The CPU generator's mt19937 only uses the low 32 bits of its seed, so fold the high half in.
  uint64_t h = splitmix64(seed);
  h = splitmix64(h ^ splitmix64(stream + 0x632be59bd9b4e019ULL));
  h = splitmix64(h ^ splitmix64(index + 0x85157af5ULL));
  h ^= h >> 32;
  return h;
}

at::Generator make_generator(uint64_t seed, uint64_t stream, uint64_t index) {
  return at::make_generator<at::CPUGeneratorImpl>(stream_seed(seed, stream, index));
}

}  // namespace demp
