// BatchNorm's loops over rows of C channels (an NHWC tensor's N * H * W rows), compiled
// for AVX-512, AVX2 and a baseline, with the common channel counts fixed at compile time.
// f32 tensors are read as float, bf16 ones as their 16 bits (uint16_t); the arithmetic is f32.
//
// The channels of a row go 16 at a time through GCC's vector extensions (one AVX-512
// register, two AVX2 ones, four SSE ones in the baseline clone), the last c % 16 one at a
// time. bf16 is widened and narrowed in the vectors too: a shift up to f32, and round to
// nearest even with integer arithmetic, NaN kept quiet (what vcvtneps2bf16 computes).

#ifndef CNN_CASES_KERNELS_BATCH_NORM_ROWS_H_
#define CNN_CASES_KERNELS_BATCH_NORM_ROWS_H_

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <type_traits>
#include <vector>

namespace cnn_cases {
// Internal linkage, as for the rest of batch_norm.cc, the one file that includes this; it
// also keeps the ifunc resolvers of the clones out of the library's exported symbols.
namespace {

constexpr int64_t kLanes = 16;
typedef float VecF __attribute__((vector_size(64)));
typedef uint32_t VecU __attribute__((vector_size(64)));
typedef uint16_t VecH __attribute__((vector_size(32)));

#define CNN_CASES_INLINE inline __attribute__((always_inline))

CNN_CASES_INLINE float Load(const float* p, int64_t i) { return p[i]; }
CNN_CASES_INLINE float Load(const uint16_t* p, int64_t i) {
  uint32_t bits = static_cast<uint32_t>(p[i]) << 16;
  float f;
  std::memcpy(&f, &bits, sizeof(f));
  return f;
}
CNN_CASES_INLINE void Store(float* p, int64_t i, float v) { p[i] = v; }
CNN_CASES_INLINE void Store(uint16_t* p, int64_t i, float v) {  // round to nearest even
  uint32_t bits;
  std::memcpy(&bits, &v, sizeof(bits));
  if ((bits & 0x7fffffffu) > 0x7f800000u) {
    p[i] = static_cast<uint16_t>((bits >> 16) | 0x40);  // quiet NaN
    return;
  }
  bits += 0x7fffu + ((bits >> 16) & 1u);
  p[i] = static_cast<uint16_t>(bits >> 16);
}

// 16 channels from p + i.
CNN_CASES_INLINE VecF LoadV(const float* p, int64_t i) {
  VecF v;
  std::memcpy(&v, p + i, sizeof(v));
  return v;
}
CNN_CASES_INLINE VecF LoadV(const uint16_t* p, int64_t i) {
  VecH h;
  std::memcpy(&h, p + i, sizeof(h));
  return reinterpret_cast<VecF>(__builtin_convertvector(h, VecU) << 16);
}
CNN_CASES_INLINE void StoreV(float* p, int64_t i, VecF v) { std::memcpy(p + i, &v, sizeof(v)); }
CNN_CASES_INLINE void StoreV(uint16_t* p, int64_t i, VecF v) {
  const VecU bits = reinterpret_cast<VecU>(v);
  const VecU rounded = (bits + 0x7fffu + ((bits >> 16) & 1u)) >> 16;
  const VecU quiet = (bits >> 16) | 0x40u;
  const VecU out = (bits & 0x7fffffffu) > 0x7f800000u ? quiet : rounded;
  const VecH h = __builtin_convertvector(out, VecH);
  std::memcpy(p + i, &h, sizeof(h));
}

// Per-channel sums over `rows` rows of C values: s1 += x, s2 += x^2 (or, with dy, the
// backward sums s1 += dy', s2 += dy' * (x - mean), dy' being dy masked by y > 0 if relu).
// Blocks of rows are summed in f32, the blocks in double.
// C > 0 fixes the channel count at compile time.
template <typename T, int64_t C>
__attribute__((target_clones("avx512f", "avx2", "default"))) void ChannelSums(
    const T* __restrict x, const T* __restrict dy, const T* __restrict y,
    const float* __restrict mean, int64_t rows, int64_t runtime_c, bool relu,
    double* __restrict s1, double* __restrict s2) {
  const int64_t c = C > 0 ? C : runtime_c;
  const int64_t cv = c / kLanes * kLanes;  // the channels summed in vectors
  constexpr int64_t kBlock = 64;
  std::vector<float> b1(c), b2(c);
  float* __restrict f1 = b1.data();
  float* __restrict f2 = b2.data();
  const VecF zero{};
  for (int64_t r0 = 0; r0 < rows; r0 += kBlock) {
    std::fill(b1.begin(), b1.end(), 0.0f);
    std::fill(b2.begin(), b2.end(), 0.0f);
    const int64_t r1 = std::min(rows, r0 + kBlock);
    for (int64_t k = 0; k < cv; k += kLanes) {
      VecF a1 = zero, a2 = zero;
      if (dy == nullptr) {
        for (int64_t r = r0; r < r1; ++r) {
          const VecF v = LoadV(x, r * c + k);
          a1 += v;
          a2 += v * v;
        }
      } else {
        const VecF m = LoadV(mean, k);
        for (int64_t r = r0; r < r1; ++r) {
          const int64_t at = r * c + k;
          VecF g = LoadV(dy, at);
          if (relu) g = LoadV(y, at) > zero ? g : zero;
          a1 += g;
          a2 += g * (LoadV(x, at) - m);
        }
      }
      StoreV(f1, k, a1);
      StoreV(f2, k, a2);
    }
    for (int64_t r = r0; r < r1; ++r) {
      const int64_t base = r * c;
      for (int64_t k = cv; k < c; ++k) {
        if (dy == nullptr) {
          const float v = Load(x, base + k);
          f1[k] += v;
          f2[k] += v * v;
        } else {
          const float dyk = Load(dy, base + k);
          const float g = relu && !(Load(y, base + k) > 0.0f) ? 0.0f : dyk;
          f1[k] += g;
          f2[k] += g * (Load(x, base + k) - mean[k]);
        }
      }
    }
    for (int64_t k = 0; k < c; ++k) {
      s1[k] += f1[k];
      s2[k] += f2[k];
    }
  }
}

// dx = dy' * a[c] + (x - mean[c]) * b[c] + d[c], the training-mode BatchNorm gradient;
// dres = dy' where dres is given.
template <typename T, int64_t C>
__attribute__((target_clones("avx512f", "avx2", "default"))) void BackwardRows(
    const T* __restrict x, const T* __restrict dy, const T* __restrict y, T* __restrict dx,
    const float* __restrict mean, const float* __restrict a, const float* __restrict b,
    const float* __restrict d, T* __restrict dres, int64_t rows, int64_t runtime_c, bool relu) {
  const int64_t c = C > 0 ? C : runtime_c;
  const int64_t cv = c / kLanes * kLanes;
  const VecF zero{};
  for (int64_t r = 0; r < rows; ++r) {
    const int64_t base = r * c;
    for (int64_t k = 0; k < cv; k += kLanes) {
      const int64_t at = base + k;
      VecF g = LoadV(dy, at);
      if (relu) g = LoadV(y, at) > zero ? g : zero;
      StoreV(dx, at, g * LoadV(a, k) + (LoadV(x, at) - LoadV(mean, k)) * LoadV(b, k) +
                         LoadV(d, k));
      if (dres != nullptr) StoreV(dres, at, g);
    }
    for (int64_t k = cv; k < c; ++k) {
      const float dyk = Load(dy, base + k);
      const float g = relu && !(Load(y, base + k) > 0.0f) ? 0.0f : dyk;
      Store(dx, base + k, g * a[k] + (Load(x, base + k) - mean[k]) * b[k] + d[k]);
      if (dres != nullptr) Store(dres, base + k, g);
    }
  }
}

// y = (x - mean[c]) * a[c] + shift[c] [+ r], then max(0, .) if relu: BatchNorm with given
// statistics (a = scale / sqrt(var + eps)), the residual (where r is given) and the ReLU.
// x - mean comes first, as in the backward pass: folding mean into the shift would cancel
// digits wherever |mean| is large against the spread.
template <typename T, int64_t C>
__attribute__((target_clones("avx512f", "avx2", "default"))) void NormalizeRows(
    const T* __restrict x, const T* __restrict r, T* __restrict y, const float* __restrict mean,
    const float* __restrict a, const float* __restrict shift, int64_t rows, int64_t runtime_c,
    bool relu) {
  const int64_t c = C > 0 ? C : runtime_c;
  const int64_t cv = c / kLanes * kLanes;
  const VecF zero{};
  for (int64_t row = 0; row < rows; ++row) {
    const int64_t base = row * c;
    for (int64_t k = 0; k < cv; k += kLanes) {
      const int64_t at = base + k;
      VecF v = (LoadV(x, at) - LoadV(mean, k)) * LoadV(a, k) + LoadV(shift, k);
      if (r != nullptr) v += LoadV(r, at);
      StoreV(y, at, relu ? (v > zero ? v : zero) : v);
    }
    for (int64_t k = cv; k < c; ++k) {
      float v = (Load(x, base + k) - mean[k]) * a[k] + shift[k];
      if (r != nullptr) v += Load(r, base + k);
      Store(y, base + k, relu && !(v > 0.0f) ? 0.0f : v);
    }
  }
}

#undef CNN_CASES_INLINE

// Returns fn(width), width a std::integral_constant holding `c` where the loops have a
// compile-time twin for it, else 0.
template <typename Fn>
void WithChannels(int64_t c, Fn&& fn) {
  switch (c) {
    case 16: return fn(std::integral_constant<int64_t, 16>{});
    case 32: return fn(std::integral_constant<int64_t, 32>{});
    case 64: return fn(std::integral_constant<int64_t, 64>{});
    case 128: return fn(std::integral_constant<int64_t, 128>{});
    default: return fn(std::integral_constant<int64_t, 0>{});
  }
}

}  // namespace
}  // namespace cnn_cases

#endif  // CNN_CASES_KERNELS_BATCH_NORM_ROWS_H_
