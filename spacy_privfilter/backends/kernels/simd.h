// Helpers shared by the native kernels (experts_avx512.cpp, attention_avx512.cpp): bf16 <-> float32,
// broadcast pairs for vdpbf16ps, float32 exp. Included into both, everything inline.
#pragma once
#include <immintrin.h>
#include <stdint.h>
#include <string.h>

typedef uint16_t bf16;

namespace pf {

inline __m512 widen(const bf16* p) {  // 16 bf16 -> 16 float32
  return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i*)p)), 16));
}

inline __m512bh broadcast_pair(const bf16* x) {
  int32_t pair;
  memcpy(&pair, x, 4);
  return (__m512bh)_mm512_set1_epi32(pair);
}

inline __m512 round_bf16(__m512 v) {  // float32 -> nearest bf16 -> float32
  return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32((__m256i)_mm512_cvtneps_pbh(v)), 16));
}

inline __m512 exp_ps(__m512 x) {  // Cephes expf: range reduction by ln 2, degree-6 polynomial, scale by 2^n
  x = _mm512_min_ps(_mm512_max_ps(x, _mm512_set1_ps(-88.3762626647949f)), _mm512_set1_ps(88.3762626647950f));
  const __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                                        _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), x);
  r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.12194440e-4f), r);
  __m512 p = _mm512_set1_ps(1.9875691500e-4f);
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.3981999507e-3f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(8.3334519073e-3f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(4.1665795894e-2f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.6666665459e-1f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(5.0000001201e-1f));
  p = _mm512_fmadd_ps(p, _mm512_mul_ps(r, r), _mm512_add_ps(r, _mm512_set1_ps(1.0f)));
  return _mm512_scalef_ps(p, n);
}

template <int MR, int NR>
inline void zero(__m512 (&acc)[MR][NR]) {
#pragma GCC unroll 8
  for (int i = 0; i < MR; ++i)
#pragma GCC unroll 4
    for (int j = 0; j < NR; ++j) acc[i][j] = _mm512_setzero_ps();
}

// acc[i][j] += x row i (row stride ldx, npairs pairs) . pair-packed 16-column block j (block stride bstride,
// pair stride pstride elements). PREFETCH > 0: the weights are prefetched that many bytes ahead (streamed).
template <int MR, int NR, int PREFETCH = 0>
inline void dot_tile(__m512 (&acc)[MR][NR], const bf16* x, int64_t ldx, int64_t npairs, const bf16* w,
                     int64_t bstride, int64_t pstride = 32) {
  for (int64_t p = 0; p < npairs; ++p) {
    if (PREFETCH > 0)
#pragma GCC unroll 4
      for (int j = 0; j < NR; ++j) _mm_prefetch((const char*)(w + j * bstride + p * pstride) + PREFETCH, _MM_HINT_T0);
    __m512bh wv[NR];
#pragma GCC unroll 4
    for (int j = 0; j < NR; ++j) wv[j] = (__m512bh)_mm512_loadu_si512((const void*)(w + j * bstride + p * pstride));
#pragma GCC unroll 8
    for (int i = 0; i < MR; ++i) {
      const __m512bh xv = broadcast_pair(x + i * ldx + 2 * p);
#pragma GCC unroll 4
      for (int j = 0; j < NR; ++j) acc[i][j] = _mm512_dpbf16_ps(acc[i][j], xv, wv[j]);
    }
  }
}

}  // namespace pf
