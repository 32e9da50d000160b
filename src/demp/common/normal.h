#pragma once
// A fast exact N(0, 1) generator for DemP's CPU noise: Marsaglia & Tsang's ziggurat (2000; 128
// layers) on splitmix64. LibTorch's CPU randn draws from one serial mt19937 at ~8 ns a number,
// which on a small network costs more than the training step itself; this one takes one 64-bit
// draw, a table look-up and a compare in 99% of cases. The layer index and the value come from
// disjoint bits of the draw (Doornik's remedy for the original's correlation between them).
// LibTorch-free.
#include <cmath>
#include <cstdint>

namespace demp {

class FastNormal {
 public:
  explicit FastNormal(uint64_t seed) : state_(seed) {}

  /// The next N(0, 1) number.
  float operator()() {
    const Tables& t = tables();
    for (;;) {
      const uint64_t u = next();
      const int i = static_cast<int>(u & 127);
      const int32_t hz = static_cast<int32_t>(static_cast<uint32_t>(u >> 32));
      const float x = static_cast<float>(hz) * t.w[i];
      const uint32_t mag =
          hz < 0 ? static_cast<uint32_t>(-static_cast<int64_t>(hz)) : static_cast<uint32_t>(hz);
      if (mag < t.k[i]) return x;  // inside the layer's rectangle: accepted at once
      if (i == 0) {                // the base layer's tail beyond r
        constexpr double r = 3.442619855899;
        double a, b;
        do {
          a = -std::log(uniform()) / r;
          b = -std::log(uniform());
        } while (b + b < a * a);
        return static_cast<float>(hz > 0 ? r + a : -r - a);
      }
      // the wedge between two layers: accept under the density
      if (t.f[i] + static_cast<float>(uniform()) * (t.f[i - 1] - t.f[i]) < std::exp(-0.5f * x * x)) return x;
    }
  }

 private:
  struct Tables {
    uint32_t k[128];
    float w[128], f[128];
    Tables() {
      const double m1 = 2147483648.0, vn = 9.91256303526217e-3;
      double dn = 3.442619855899, tn = dn;
      const double q = vn / std::exp(-0.5 * dn * dn);
      k[0] = static_cast<uint32_t>((dn / q) * m1);
      k[1] = 0;
      w[0] = static_cast<float>(q / m1);
      w[127] = static_cast<float>(dn / m1);
      f[0] = 1.0f;
      f[127] = static_cast<float>(std::exp(-0.5 * dn * dn));
      for (int i = 126; i >= 1; --i) {
        dn = std::sqrt(-2.0 * std::log(vn / dn + std::exp(-0.5 * dn * dn)));
        k[i + 1] = static_cast<uint32_t>((dn / tn) * m1);
        tn = dn;
        f[i] = static_cast<float>(std::exp(-0.5 * dn * dn));
        w[i] = static_cast<float>(dn / m1);
      }
    }
  };
  static const Tables& tables() {
    static const Tables t;
    return t;
  }
  uint64_t next() {  // splitmix64
    uint64_t z = (state_ += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
  }
  double uniform() {  // in (0, 1]
    return (static_cast<double>(next() >> 11) + 1.0) * (1.0 / 9007199254740992.0);
  }
  uint64_t state_;
};

}  // namespace demp
