// BatchNorm over N, H, W of an NHWC tensor, as XLA FFI handlers for the CPU: training
// (batch statistics), inference (given statistics) and the training-mode backward pass.
//
// Scale, shift, mean and variance are f32 vectors of C. `relu` applies a ReLU to the
// output (forward) and masks the gradient with y > 0 (backward). `add` (with `relu`)
// adds a residual tensor before the ReLU, the end of a residual block:
// y = relu(bn(x) + r); its gradient is the masked dy, which the backward pass writes out.
//
// The statistics and the backward pass need sums over the whole batch, which oneDNN's
// primitive only computes inside one call, and oneDNN has bf16 BatchNorm only on AVX-512;
// so the handlers run the vectorised loops of batch_norm_rows.h on XLA's thread pool, a
// chunk of the batch per thread: each chunk sums its part (in double), then normalises it
// with the batch's statistics, the residual and the ReLU in the same pass.

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <utility>
#include <vector>

#include "batch_norm_rows.h"
#include "onednn_common.h"

namespace cnn_cases {

// The handlers' attributes: epsilon, the fused ReLU, the fused residual addition.
struct BnAttrs {
  float eps;
  bool relu;
  bool add;
};

}  // namespace cnn_cases

XLA_FFI_REGISTER_STRUCT_ATTR_DECODING(cnn_cases::BnAttrs,
                                      ::xla::ffi::StructMember<float>("eps"),
                                      ::xla::ffi::StructMember<bool>("relu"),
                                      ::xla::ffi::StructMember<bool>("add"));

namespace cnn_cases {
namespace {

// f32 vectors of C (with the call's leading vmapped dimensions): scale, shift, statistics.
using F32Buffer = ffi::Buffer<ffi::F32>;
using F32Result = ffi::ResultBuffer<ffi::F32>;

struct BnShape {
  int64_t n, h, w, c;
  int64_t copies;  // the product of the leading (vmapped) dimensions
  ffi::DataType type;
};

// The shape from x's last 4 dimensions and its leading (vmapped) ones, which every other
// buffer of the call must have too.
template <typename... Buffers>
ffi::Error ReadBnShape(ffi::AnyBuffer x, BnShape* s, const Buffers&... others) {
  s->copies = Leading(x, 4);
  s->type = x.element_type();
  if (s->copies < 1 || (s->type != ffi::DataType::F32 && s->type != ffi::DataType::BF16)) {
    return Fail("batch norm expects an NHWC f32 or bf16 tensor");
  }
  if (!SplitsInto(s->copies, others...)) {
    return Fail("batch norm buffers with different leading (vmapped) dimensions");
  }
  auto d = Trailing(x, 4);
  s->n = d[0]; s->h = d[1]; s->w = d[2]; s->c = d[3];
  return ffi::Error::Success();
}

// y = relu?((x - mean) / sqrt(var + eps) * scale + shift [+ residual]), chunk by chunk on
// the loops of batch_norm_rows.h; `residual` is null unless `add`.
template <typename T>
void Normalize(ffi::ThreadPool& pool, const BnShape& s, const T* x, T* y, const float* scale,
               const float* shift, const float* mean, const float* var, float eps, bool relu,
               const T* residual) {
  auto chunks = Chunks(s.n, Parts(pool));
  std::vector<float> a(s.c);
  for (int64_t k = 0; k < s.c; ++k) a[k] = scale[k] / std::sqrt(var[k] + eps);
  const int64_t per_image = s.h * s.w;
  ParallelFor(pool, chunks.size(), [&](int64_t i) {
    const int64_t off = chunks[i].first * per_image * s.c;
    const int64_t rows = chunks[i].second * per_image;
    WithChannels(s.c, [&](auto width) {
      constexpr int64_t C = decltype(width)::value;
      NormalizeRows<T, C>(x + off, residual ? residual + off : nullptr, y + off, mean,
                          a.data(), shift, rows, s.c, relu);
    });
  });
}

// Per-channel sums over the batch, chunk by chunk: returns (s1, s2) each of C doubles.
template <typename T>
std::pair<std::vector<double>, std::vector<double>> BatchSums(ffi::ThreadPool& pool,
                                                              const BnShape& s, const T* x,
                                                              const T* dy, const T* y,
                                                              const float* mean, bool relu) {
  auto chunks = Chunks(s.n, Parts(pool));
  const int64_t rows_per_image = s.h * s.w;
  std::vector<std::vector<double>> p1(chunks.size(), std::vector<double>(s.c)),
      p2(chunks.size(), std::vector<double>(s.c));
  ParallelFor(pool, chunks.size(), [&](int64_t i) {
    const int64_t off = chunks[i].first * rows_per_image * s.c;
    WithChannels(s.c, [&](auto width) {
      constexpr int64_t C = decltype(width)::value;
      ChannelSums<T, C>(x + off, dy ? dy + off : nullptr, y ? y + off : nullptr, mean,
                        chunks[i].second * rows_per_image, s.c, relu, p1[i].data(),
                        p2[i].data());
    });
  });
  std::vector<double> s1(s.c), s2(s.c);
  for (size_t i = 0; i < chunks.size(); ++i) {
    for (int64_t k = 0; k < s.c; ++k) {
      s1[k] += p1[i][k];
      s2[k] += p2[i][k];
    }
  }
  return {s1, s2};
}

template <typename T>
void BnStats(ffi::ThreadPool& pool, const BnShape& s, const T* x, float* mean, float* var) {
  auto [s1, s2] = BatchSums<T>(pool, s, x, nullptr, nullptr, nullptr, false);
  const double count = static_cast<double>(s.n) * s.h * s.w;
  for (int64_t k = 0; k < s.c; ++k) {
    const double m = s1[k] / count;
    mean[k] = static_cast<float>(m);
    var[k] = static_cast<float>(std::max(0.0, s2[k] / count - m * m));
  }
}

template <typename T>
void BnBackwardT(ffi::ThreadPool& pool, const BnShape& s, const T* x, const T* dy, const T* y,
                 const float* scale, const float* mean, const float* var, T* dx, float* dscale,
                 float* dshift, T* dres, float eps, bool relu) {
  auto [s1, s2] = BatchSums<T>(pool, s, x, dy, y, mean, relu);
  const double count = static_cast<double>(s.n) * s.h * s.w;
  std::vector<float> a(s.c), b(s.c), d(s.c);
  for (int64_t k = 0; k < s.c; ++k) {
    const double rstd = 1.0 / std::sqrt(static_cast<double>(var[k]) + eps);
    dshift[k] = static_cast<float>(s1[k]);
    dscale[k] = static_cast<float>(s2[k] * rstd);
    // dx = scale * rstd * (dy' - mean(dy') - xhat * mean(dy' * xhat))
    a[k] = static_cast<float>(scale[k] * rstd);
    b[k] = static_cast<float>(-scale[k] * rstd * rstd * rstd * s2[k] / count);
    d[k] = static_cast<float>(-scale[k] * rstd * s1[k] / count);
  }
  auto chunks = Chunks(s.n, Parts(pool));
  const int64_t rows_per_image = s.h * s.w;
  ParallelFor(pool, chunks.size(), [&](int64_t i) {
    const int64_t off = chunks[i].first * rows_per_image * s.c;
    WithChannels(s.c, [&](auto width) {
      constexpr int64_t C = decltype(width)::value;
      BackwardRows<T, C>(x + off, dy + off, y ? y + off : nullptr, dx + off, mean, a.data(),
                         b.data(), d.data(), dres ? dres + off : nullptr,
                         chunks[i].second * rows_per_image, s.c, relu);
    });
  });
}

// Runs fn(T{}, i) for every vmapped index i of a call, T being the tensors' element type
// (float or Bf16Bits).
template <typename Fn>
ffi::Error ForEachCopy(const BnShape& s, Fn&& fn) {
  return WithElementType(s.type, "batch norm", [&](auto t) {
    for (int64_t i = 0; i < s.copies; ++i) fn(t, i);
    return ffi::Error::Success();
  });
}

// Training mode: y and the batch's mean and (biased) variance. `residual` is read only
// when `add`.
ffi::Error BnTrain(ffi::ThreadPool pool, ffi::AnyBuffer x, F32Buffer scale, F32Buffer shift,
                   ffi::AnyBuffer residual, ffi::Result<ffi::AnyBuffer> y, F32Result mean,
                   F32Result var, BnAttrs a) {
  HandlerTimer timer(kTimedBnTrain);
  BnShape s;
  auto err = ReadBnShape(x, &s, scale, shift, residual, *y, *mean, *var);
  if (err.failure()) return err;
  const int64_t n = s.copies;
  return ForEachCopy(s, [&](auto t, int64_t i) {
    using T = decltype(t);
    float* m = At<float>(*mean, n, i);
    float* v = At<float>(*var, n, i);
    BnStats<T>(pool, s, At<T>(x, n, i), m, v);
    Normalize<T>(pool, s, At<T>(x, n, i), At<T>(*y, n, i), At<float>(scale, n, i),
                 At<float>(shift, n, i), m, v, a.eps, a.relu,
                 a.add ? At<T>(residual, n, i) : nullptr);
  });
}

// Given statistics (the running averages): y. `residual` is read only when `add`.
ffi::Error BnInference(ffi::ThreadPool pool, ffi::AnyBuffer x, F32Buffer scale,
                       F32Buffer shift, F32Buffer mean, F32Buffer var, ffi::AnyBuffer residual,
                       ffi::Result<ffi::AnyBuffer> y, BnAttrs a) {
  HandlerTimer timer(kTimedBnInference);
  BnShape s;
  if (auto err = ReadBnShape(x, &s, scale, shift, mean, var, residual, *y); err.failure()) {
    return err;
  }
  return ForEachCopy(s, [&, n = s.copies](auto t, int64_t i) {
    using T = decltype(t);
    Normalize<T>(pool, s, At<T>(x, n, i), At<T>(*y, n, i), At<float>(scale, n, i),
                 At<float>(shift, n, i), At<float>(mean, n, i), At<float>(var, n, i), a.eps,
                 a.relu, a.add ? At<T>(residual, n, i) : nullptr);
  });
}

// The training-mode gradients of x, scale and shift, and the residual's (dres, the masked
// dy, written only when `add`). `y` is the forward output, read only when `relu` (for its
// mask); `mean` and `var` are the batch's.
ffi::Error BnBackward(ffi::ThreadPool pool, ffi::AnyBuffer x, ffi::AnyBuffer dy,
                      ffi::AnyBuffer y, F32Buffer scale, F32Buffer mean, F32Buffer var,
                      ffi::Result<ffi::AnyBuffer> dx, F32Result dscale, F32Result dshift,
                      ffi::Result<ffi::AnyBuffer> dres, BnAttrs a) {
  HandlerTimer timer(kTimedBnBackward);
  BnShape s;
  auto err = ReadBnShape(x, &s, dy, y, scale, mean, var, *dx, *dscale, *dshift, *dres);
  if (err.failure()) return err;
  if (a.add && !a.relu) return Fail("a fused residual addition needs the fused ReLU");
  const int64_t n = s.copies;
  return ForEachCopy(s, [&](auto t, int64_t i) {
    using T = decltype(t);
    BnBackwardT<T>(pool, s, At<T>(x, n, i), At<T>(dy, n, i), a.relu ? At<T>(y, n, i) : nullptr,
                   At<float>(scale, n, i), At<float>(mean, n, i), At<float>(var, n, i),
                   At<T>(*dx, n, i), At<float>(*dscale, n, i), At<float>(*dshift, n, i),
                   a.add ? At<T>(*dres, n, i) : nullptr, a.eps, a.relu);
  });
}

}  // namespace
}  // namespace cnn_cases

// The bindings follow the handlers' signatures: operands in order, then the attributes.
XLA_FFI_DEFINE_HANDLER_SYMBOL(cnn_cases_bn_train, cnn_cases::BnTrain);
XLA_FFI_DEFINE_HANDLER_SYMBOL(cnn_cases_bn_inference, cnn_cases::BnInference);
XLA_FFI_DEFINE_HANDLER_SYMBOL(cnn_cases_bn_backward, cnn_cases::BnBackward);
