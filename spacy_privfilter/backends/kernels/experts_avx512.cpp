// Grouped expert matmuls, out = x @ W[e]^T + b[e] for each expert's run of rows, on x86-64 CPUs with
// AVX-512 BF16 (vdpbf16ps). Built by spacy_privfilter/backends/native.py with the system C++ compiler and
// loaded with ctypes: plain C entry points, no Python or torch headers. OpenMP shares torch's runtime.
//
// Weight layout ("pair-packed"): per expert [N / 16][K / 2][16 columns][2 consecutive k]. One 512-bit vector
// holds a pair of k for 16 output columns, so one vdpbf16ps with a broadcast pair of x values adds 32
// products into 16 float32 column sums: no horizontal reductions. 8-bit codes are stored in the same order,
// with their per-group scales and biases as [N / 16][K / gs][16]; they are dequantized in registers (few
// rows) or into a per-thread bf16 panel (more rows), always to exactly bf16(scale * q + bias), the value the
// reference dequantization computes (q * scale is exact in float32, so the fused multiply-add rounds once,
// like multiply-then-add).
#include <vector>

#include "simd.h"

namespace {

using namespace pf;

struct Quantized {
  const uint8_t* codes;  // one expert: [N / 16][K / 2][32]
  const bf16* scales;    // one expert: [N / 16][K / gs][16]
  const bf16* biases;
  int64_t K, gs;
};

// 16 per-column values -> the per-lane vectors of a k-pair's 32 codes (each column's value twice).
inline void pair_lanes(const bf16* p, __m512* lo, __m512* hi) {
  const __m512 v = widen(p);
  *lo = _mm512_permutexvar_ps(_mm512_set_epi32(7, 7, 6, 6, 5, 5, 4, 4, 3, 3, 2, 2, 1, 1, 0, 0), v);
  *hi = _mm512_permutexvar_ps(_mm512_set_epi32(15, 15, 14, 14, 13, 13, 12, 12, 11, 11, 10, 10, 9, 9, 8, 8), v);
}

inline __m512bh dequantize_pair(const uint8_t* c, __m512 s_lo, __m512 s_hi, __m512 b_lo, __m512 b_hi) {
  const __m512 lo = _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i*)c)));
  const __m512 hi = _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i*)(c + 16))));
  return _mm512_cvtne2ps_pbh(_mm512_fmadd_ps(hi, s_hi, b_hi), _mm512_fmadd_ps(lo, s_lo, b_lo));
}

// What a tile does with its float32 sums. Linear: + bias, rounded to bf16 (round to nearest even, like
// torch's float32 -> bfloat16 cast). SwiGLU: the tile's blocks alternate gate and up columns (the packed
// gate_up matrix interleaves its halves block by block); each pair is rounded to bf16 as the gate_up matmul
// output would be, then clamp(gate, max=limit) * sigmoid(alpha * gate) * (clamp(up, -limit, limit) + 1) in
// float32, rounded once to bf16: the reference's ops in its order, only exp may differ in the last bit.
struct Linear {
  template <int MR, int NR>
  static inline void store(__m512 (&acc)[MR][NR], const float* bias, bf16* out, int64_t ldo, const float*) {
#pragma GCC unroll 4
    for (int j = 0; j < NR; ++j) {
      const __m512 b = _mm512_loadu_ps(bias + 16 * j);
#pragma GCC unroll 8
      for (int i = 0; i < MR; ++i)
        _mm256_storeu_si256((__m256i*)(out + i * ldo + 16 * j), (__m256i)_mm512_cvtneps_pbh(_mm512_add_ps(acc[i][j], b)));
    }
  }
};

struct SwiGLU {  // params: {alpha, limit}
  template <int MR, int NR>
  static inline void store(__m512 (&acc)[MR][NR], const float* bias, bf16* out, int64_t ldo, const float* params) {
    const __m512 alpha = _mm512_set1_ps(params[0]), limit = _mm512_set1_ps(params[1]);
    const __m512 low = _mm512_set1_ps(-params[1]), one = _mm512_set1_ps(1.0f);
#pragma GCC unroll 2
    for (int j = 0; j + 1 < NR; j += 2) {
      const __m512 bg = _mm512_loadu_ps(bias + 16 * j), bu = _mm512_loadu_ps(bias + 16 * (j + 1));
#pragma GCC unroll 8
      for (int i = 0; i < MR; ++i) {
        const __m512 gate = _mm512_min_ps(round_bf16(_mm512_add_ps(acc[i][j], bg)), limit);
        const __m512 up = _mm512_add_ps(_mm512_min_ps(_mm512_max_ps(round_bf16(_mm512_add_ps(acc[i][j + 1], bu)), low),
                                                      limit), one);
        const __m512 sig = _mm512_div_ps(one, _mm512_add_ps(one, exp_ps(_mm512_sub_ps(_mm512_setzero_ps(),
                                                                                       _mm512_mul_ps(gate, alpha)))));
        const __m512 h = _mm512_mul_ps(_mm512_mul_ps(gate, sig), up);
        _mm256_storeu_si256((__m256i*)(out + i * ldo + 8 * j), (__m256i)_mm512_cvtneps_pbh(h));
      }
    }
  }
};

// MR rows of x (row stride K) times NR pair-packed 16-column blocks of bf16 weights (block stride 16 * K).
template <class Epilogue, int MR, int NR>
void tile_bf16(const bf16* x, int64_t K, const bf16* w, const float* bias, bf16* out, int64_t ldo,
               const float* params) {
  __m512 acc[MR][NR];
  zero<MR, NR>(acc);
  dot_tile<MR, NR>(acc, x, K, K / 2, w, 16 * K);
  Epilogue::template store<MR, NR>(acc, bias, out, ldo, params);
}

// The same with 8-bit weights dequantized in registers: for a few rows, where reading the codes is the cost.
template <class Epilogue, int MR, int NR>
void tile_q8(const bf16* x, int64_t K, const Quantized& q, int64_t block, const float* bias, bf16* out,
             int64_t ldo, const float* params) {
  const int64_t groups = K / q.gs, half = q.gs / 2;
  __m512 acc[MR][NR];
  zero<MR, NR>(acc);
  for (int64_t g = 0; g < groups; ++g) {
    __m512 s_lo[NR], s_hi[NR], b_lo[NR], b_hi[NR];
#pragma GCC unroll 4
    for (int j = 0; j < NR; ++j) {
      pair_lanes(q.scales + ((block + j) * groups + g) * 16, &s_lo[j], &s_hi[j]);
      pair_lanes(q.biases + ((block + j) * groups + g) * 16, &b_lo[j], &b_hi[j]);
    }
    for (int64_t p = g * half; p < (g + 1) * half; ++p) {
      __m512bh wv[NR];
#pragma GCC unroll 4
      for (int j = 0; j < NR; ++j)
        wv[j] = dequantize_pair(q.codes + ((block + j) * (K / 2) + p) * 32, s_lo[j], s_hi[j], b_lo[j], b_hi[j]);
#pragma GCC unroll 8
      for (int i = 0; i < MR; ++i) {
        const __m512bh xv = broadcast_pair(x + i * K + 2 * p);
#pragma GCC unroll 4
        for (int j = 0; j < NR; ++j) acc[i][j] = _mm512_dpbf16_ps(acc[i][j], xv, wv[j]);
      }
    }
  }
  Epilogue::template store<MR, NR>(acc, bias, out, ldo, params);
}

// `count` 16-column blocks from `block` on -> pair-packed bf16 [count][K / 2][32] in dst.
void dequantize_blocks(const Quantized& q, int64_t block, int64_t count, bf16* dst) {
  const int64_t groups = q.K / q.gs, half = q.gs / 2, pairs = q.K / 2;
  for (int64_t j = 0; j < count; ++j)
    for (int64_t g = 0; g < groups; ++g) {
      __m512 s_lo, s_hi, b_lo, b_hi;
      pair_lanes(q.scales + ((block + j) * groups + g) * 16, &s_lo, &s_hi);
      pair_lanes(q.biases + ((block + j) * groups + g) * 16, &b_lo, &b_hi);
      for (int64_t p = g * half; p < (g + 1) * half; ++p)
        _mm512_storeu_si512((void*)(dst + (j * pairs + p) * 32),
                            (__m512i)dequantize_pair(q.codes + ((block + j) * pairs + p) * 32, s_lo, s_hi, b_lo, b_hi));
    }
}

// Register tiles: up to 6 rows x 4 blocks (24 accumulators) for bf16 weights; up to 4 x 4 when dequantizing
// in registers (the scales and biases need registers too).
constexpr int MR = 6, NR = 4, FUSED_ROWS = 4;
typedef void (*Bf16Tile)(const bf16*, int64_t, const bf16*, const float*, bf16*, int64_t, const float*);
typedef void (*Q8Tile)(const bf16*, int64_t, const Quantized&, int64_t, const float*, bf16*, int64_t, const float*);
#define TILE_ROW(T, E, m) {T<E, m, 1>, T<E, m, 2>, T<E, m, 3>, T<E, m, 4>}
#define TILES(T, E) {TILE_ROW(T, E, 1), TILE_ROW(T, E, 2), TILE_ROW(T, E, 3), TILE_ROW(T, E, 4), TILE_ROW(T, E, 5), \
                     TILE_ROW(T, E, 6)}
#define FUSED_TILES(T, E) {TILE_ROW(T, E, 1), TILE_ROW(T, E, 2), TILE_ROW(T, E, 3), TILE_ROW(T, E, 4)}
const Bf16Tile BF16_TILES[2][MR][NR] = {TILES(tile_bf16, Linear), TILES(tile_bf16, SwiGLU)};
const Q8Tile Q8_TILES[2][FUSED_ROWS][NR] = {FUSED_TILES(tile_q8, Linear), FUSED_TILES(tile_q8, SwiGLU)};
#undef TILE_ROW
#undef TILES
#undef FUSED_TILES

// The grouped product behind both entry points; swiglu != 0 applies the SwiGLU epilogue (out has N / 2 columns).
void grouped(const bf16* x, int64_t K, int64_t N, int64_t n_groups, const int64_t* experts, const int64_t* counts,
             const bf16* weight, const uint8_t* codes, const bf16* scales, const bf16* biases, int64_t gs,
             const float* bias, bf16* out, int swiglu, const float* params) {
  std::vector<int64_t> first(n_groups + 1, 0);
  for (int64_t g = 0; g < n_groups; ++g) first[g + 1] = first[g] + counts[g];
  const int64_t blocks = N / 16, panels = (blocks + NR - 1) / NR, tasks = n_groups * panels;
  const int64_t groups = codes ? K / gs : 0, ldo = swiglu ? N / 2 : N;
#pragma omp parallel
  {
    std::vector<bf16> panel;  // dequantized weights, reused by this thread
#pragma omp for schedule(dynamic, 1)
    for (int64_t t = 0; t < tasks; ++t) {
      const int64_t g = t / panels, block = (t % panels) * NR, e = experts[g], rows = counts[g];
      const int64_t nr = (blocks - block) < NR ? (blocks - block) : NR;
      if (rows <= 0) continue;
      const float* b = bias + e * N + block * 16;
      const bf16* xg = x + first[g] * K;
      bf16* og = out + first[g] * ldo + (swiglu ? block * 8 : block * 16);
      const Quantized q{codes ? codes + e * N * K : nullptr, scales + e * N * groups, biases + e * N * groups, K, gs};
      if (codes && rows <= FUSED_ROWS) {
        Q8_TILES[swiglu][rows - 1][nr - 1](xg, K, q, block, b, og, ldo, params);
        continue;
      }
      const bf16* w = weight ? weight + e * N * K + block * 16 * K : nullptr;
      if (codes) {
        panel.resize(nr * 16 * K);
        dequantize_blocks(q, block, nr, panel.data());
        w = panel.data();
      }
      for (int64_t m = 0; m < rows; m += MR) {
        const int64_t mr = (rows - m) < MR ? (rows - m) : MR;
        BF16_TILES[swiglu][mr - 1][nr - 1](xg + m * K, K, w, b, og + m * ldo, ldo, params);
      }
    }
  }
}

}  // namespace

extern "C" {

// Bumped whenever an entry point's signature or a layout changes; native.py checks it.
int pf_abi_version(void) { return 4; }

// src[e, order[n], k] (strides in elements; order NULL: n) -> pair-packed dst [E][N / 16][K / 2][16][2], for
// 1-byte codes or 2-byte bf16 (elem). One pass, in parallel: the load-time repacking of the expert weights.
void pf_pack(const void* src, int64_t E, int64_t N, int64_t K, int64_t se, int64_t sn, int64_t sk, int64_t elem,
             const int64_t* order, void* dst) {
  const int64_t blocks = N / 16, pairs = K / 2;
#pragma omp parallel for schedule(static)
  for (int64_t t = 0; t < E * blocks; ++t) {
    const int64_t e = t / blocks, nb = t % blocks;
    for (int64_t c = 0; c < 16; ++c) {
      const int64_t n = order ? order[nb * 16 + c] : nb * 16 + c;
      const int64_t base = e * se + n * sn, out = (t * pairs) * 32 + c * 2;
      if (elem == 1) {
        const uint8_t* from = (const uint8_t*)src + base;
        uint8_t* to = (uint8_t*)dst + out;
        for (int64_t k = 0; k < K; ++k) to[(k >> 1) * 32 + (k & 1)] = from[k * sk];
      } else {
        const bf16* from = (const bf16*)src + base;
        bf16* to = (bf16*)dst + out;
        for (int64_t k = 0; k < K; ++k) to[(k >> 1) * 32 + (k & 1)] = from[k * sk];
      }
    }
  }
}

// Pair-packed 8-bit codes of `blocks` 16-column blocks -> pair-packed bf16 weights (what the tiles multiply).
void pf_dequantize(const uint8_t* codes, const bf16* scales, const bf16* biases, int64_t blocks, int64_t K,
                   int64_t gs, bf16* out) {
  const Quantized q{codes, scales, biases, K, gs};
  dequantize_blocks(q, 0, blocks, out);
}

// For each group g of consecutive rows of x (counts[g] rows, expert experts[g]):
//   out[rows] = x[rows] @ W[experts[g]]^T + bias[experts[g]]
// x [rows, K] and out [rows, N] are row-major bf16; bias is float32 [E, N]. W is pair-packed bf16 (`weight`,
// codes == NULL) or pair-packed 8-bit codes with their scales and biases (group size gs). K % gs == 0,
// gs % 32 == 0 (K % 2 == 0 for bf16) and N % 16 == 0 are checked by the caller.
void pf_grouped_linear(const bf16* x, int64_t K, int64_t N, int64_t n_groups, const int64_t* experts,
                       const int64_t* counts, const bf16* weight, const uint8_t* codes, const bf16* scales,
                       const bf16* biases, int64_t gs, const float* bias, bf16* out) {
  grouped(x, K, N, n_groups, experts, counts, weight, codes, scales, biases, gs, bias, out, 0, nullptr);
}

// The same for a gate_up matrix whose N rows interleave gate and up blocks of 16 (gate block b, up block b,
// ...; bias likewise), followed by the clamped SwiGLU: out [rows, N / 2] bf16. params = {alpha, limit}.
// N % 32 == 0.
void pf_grouped_swiglu(const bf16* x, int64_t K, int64_t N, int64_t n_groups, const int64_t* experts,
                       const int64_t* counts, const bf16* weight, const uint8_t* codes, const bf16* scales,
                       const bf16* biases, int64_t gs, const float* bias, const float* params, bf16* out) {
  grouped(x, K, N, n_groups, experts, counts, weight, codes, scales, biases, gs, bias, out, 1, params);
}

}  // extern "C"
