#include "core/int8_dot.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include <immintrin.h>

namespace cohort {
namespace {

// Rounds a non-negative bound up, so float rounding never makes it smaller than the
// double it came from.
float RoundUp(double value) { return static_cast<float>(value * (1.0 + 0x1p-20)); }

}  // namespace

Int8RowInfo QuantizeRowInt8(const float* x, int64_t d, int64_t padded_d, int8_t* q) {
  Int8RowInfo info;
  const __m256 sign = _mm256_set1_ps(-0.0f);
  __m256 max8 = _mm256_setzero_ps();
  __m256d norm4 = _mm256_setzero_pd();
  int64_t j = 0;
  for (; j + 8 <= d; j += 8) {
    const __m256 v = _mm256_loadu_ps(x + j);
    max8 = _mm256_max_ps(max8, _mm256_andnot_ps(sign, v));
    const __m256d low = _mm256_cvtps_pd(_mm256_castps256_ps128(v));
    const __m256d high = _mm256_cvtps_pd(_mm256_extractf128_ps(v, 1));
    norm4 = _mm256_fmadd_pd(low, low, norm4);
    norm4 = _mm256_fmadd_pd(high, high, norm4);
  }
  alignas(32) float max_lanes[8];
  alignas(32) double norm_lanes[4];
  _mm256_store_ps(max_lanes, max8);
  _mm256_store_pd(norm_lanes, norm4);
  float max_abs = *std::max_element(max_lanes, max_lanes + 8);
  double norm_sq = (norm_lanes[0] + norm_lanes[1]) + (norm_lanes[2] + norm_lanes[3]);
  for (int64_t tail = j; tail < d; ++tail) {
    max_abs = std::max(max_abs, std::abs(x[tail]));
    norm_sq += static_cast<double>(x[tail]) * x[tail];
  }
  std::fill(q, q + padded_d, int8_t{0});
  info.norm = RoundUp(std::sqrt(norm_sq));
  if (!(max_abs > 0)) return info;

  // Any integer q_i in [−127, 127] keeps the bounds valid, since the norms below are those
  // of the q actually written; rounding x_i · 127 / max|x| to nearest makes them small.
  info.scale = max_abs / 127.0f;
  const float inverse = 127.0f / max_abs;
  const __m256 inverse8 = _mm256_set1_ps(inverse);
  const __m256 limit = _mm256_set1_ps(127.0f);
  const __m256d scale4 = _mm256_set1_pd(info.scale);
  __m256d quantized4 = _mm256_setzero_pd();
  __m256d error4 = _mm256_setzero_pd();
  __m256i sum8 = _mm256_setzero_si256();
  // x̂_i = q_i · scale and x_i − x̂_i are exact in double (at most 31 significant bits).
  auto accumulate = [&](__m128 x4, __m128 q4) {
    const __m256d xd = _mm256_cvtps_pd(x4);
    const __m256d quantized = _mm256_mul_pd(_mm256_cvtps_pd(q4), scale4);
    const __m256d error = _mm256_sub_pd(xd, quantized);
    quantized4 = _mm256_fmadd_pd(quantized, quantized, quantized4);
    error4 = _mm256_fmadd_pd(error, error, error4);
  };
  for (j = 0; j + 8 <= d; j += 8) {
    const __m256 v = _mm256_loadu_ps(x + j);
    __m256 rounded = _mm256_round_ps(_mm256_mul_ps(v, inverse8),
                                     _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    rounded = _mm256_min_ps(limit, _mm256_max_ps(_mm256_sub_ps(_mm256_setzero_ps(), limit), rounded));
    accumulate(_mm256_castps256_ps128(v), _mm256_castps256_ps128(rounded));
    accumulate(_mm256_extractf128_ps(v, 1), _mm256_extractf128_ps(rounded, 1));
    const __m256i values = _mm256_cvtps_epi32(rounded);
    sum8 = _mm256_add_epi32(sum8, values);
    // Pack the eight int32 values to int8 (in range, so no saturation).
    const __m128i words = _mm_packs_epi32(_mm256_castsi256_si128(values),
                                          _mm256_extracti128_si256(values, 1));
    const __m128i bytes = _mm_packs_epi16(words, words);
    _mm_storel_epi64(reinterpret_cast<__m128i*>(q + j), bytes);
  }
  alignas(32) double quantized_lanes[4];
  alignas(32) double error_lanes[4];
  alignas(32) int32_t sum_lanes[8];
  _mm256_store_pd(quantized_lanes, quantized4);
  _mm256_store_pd(error_lanes, error4);
  _mm256_store_si256(reinterpret_cast<__m256i*>(sum_lanes), sum8);
  double quantized_sq = (quantized_lanes[0] + quantized_lanes[1]) + (quantized_lanes[2] + quantized_lanes[3]);
  double error_sq = (error_lanes[0] + error_lanes[1]) + (error_lanes[2] + error_lanes[3]);
  int32_t sum = 0;
  for (int32_t lane : sum_lanes) sum += lane;
  const double scale = info.scale;
  for (; j < d; ++j) {
    const float rounded = std::clamp(std::nearbyint(x[j] * inverse), -127.0f, 127.0f);
    q[j] = static_cast<int8_t>(rounded);
    sum += q[j];
    const double quantized = rounded * scale;
    quantized_sq += quantized * quantized;
    error_sq += (x[j] - quantized) * (x[j] - quantized);
  }
  info.quantized_norm = RoundUp(std::sqrt(quantized_sq));
  info.error_norm = RoundUp(std::sqrt(error_sq));
  info.sum = sum;
  return info;
}

void PackInt8Group(const int8_t* q, int64_t padded_d, uint8_t* group) {
  // Adding 128 to each byte of a word is flipping its top bit.
  for (int64_t r = 0; r < kInt8GroupRows; ++r) {
    for (int64_t t = 0; t < padded_d / 4; ++t) {
      uint32_t word;
      std::memcpy(&word, q + r * padded_d + 4 * t, sizeof(word));
      word ^= 0x80808080u;
      std::memcpy(group + (t * kInt8GroupRows + r) * 4, &word, sizeof(word));
    }
  }
}

bool Int8DotVnniSupported() {
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
         __builtin_cpu_supports("avx512vnni");
}

}  // namespace cohort
