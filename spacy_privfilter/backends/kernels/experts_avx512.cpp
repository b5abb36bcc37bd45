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
#include <immintrin.h>
#include <stdint.h>
#include <string.h>

#include <vector>

typedef uint16_t bf16;

namespace {

struct Quantized {
  const uint8_t* codes;  // one expert: [N / 16][K / 2][32]
  const bf16* scales;    // one expert: [N / 16][K / gs][16]
  const bf16* biases;
  int64_t K, gs;
};

inline __m512 widen(const bf16* p) {  // 16 bf16 -> 16 float32
  return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i*)p)), 16));
}

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

inline __m512bh broadcast_pair(const bf16* x) {
  int32_t pair;
  memcpy(&pair, x, 4);
  return (__m512bh)_mm512_set1_epi32(pair);
}

// acc + bias, rounded to bf16 (round to nearest even, as torch's float32 -> bfloat16 cast).
template <int MR, int NR>
inline void store(__m512 (&acc)[MR][NR], const float* bias, bf16* out, int64_t ldo) {
#pragma GCC unroll 4
  for (int j = 0; j < NR; ++j) {
    const __m512 b = _mm512_loadu_ps(bias + 16 * j);
#pragma GCC unroll 8
    for (int i = 0; i < MR; ++i)
      _mm256_storeu_si256((__m256i*)(out + i * ldo + 16 * j), (__m256i)_mm512_cvtneps_pbh(_mm512_add_ps(acc[i][j], b)));
  }
}

template <int MR, int NR>
inline void zero(__m512 (&acc)[MR][NR]) {
#pragma GCC unroll 8
  for (int i = 0; i < MR; ++i)
#pragma GCC unroll 4
    for (int j = 0; j < NR; ++j) acc[i][j] = _mm512_setzero_ps();
}

// MR rows of x (row stride K) times NR pair-packed 16-column blocks of bf16 weights (block stride 16 * K).
template <int MR, int NR>
void tile_bf16(const bf16* x, int64_t K, const bf16* w, const float* bias, bf16* out, int64_t ldo) {
  __m512 acc[MR][NR];
  zero<MR, NR>(acc);
  for (int64_t p = 0; p < K / 2; ++p) {
    __m512bh wv[NR];
#pragma GCC unroll 4
    for (int j = 0; j < NR; ++j) wv[j] = (__m512bh)_mm512_loadu_si512((const void*)(w + j * 16 * K + p * 32));
#pragma GCC unroll 8
    for (int i = 0; i < MR; ++i) {
      const __m512bh xv = broadcast_pair(x + i * K + 2 * p);
#pragma GCC unroll 4
      for (int j = 0; j < NR; ++j) acc[i][j] = _mm512_dpbf16_ps(acc[i][j], xv, wv[j]);
    }
  }
  store<MR, NR>(acc, bias, out, ldo);
}

// The same with 8-bit weights dequantized in registers: for a few rows, where reading the codes is the cost.
template <int MR, int NR>
void tile_q8(const bf16* x, int64_t K, const Quantized& q, int64_t block, const float* bias, bf16* out,
             int64_t ldo) {
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
  store<MR, NR>(acc, bias, out, ldo);
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
typedef void (*Bf16Tile)(const bf16*, int64_t, const bf16*, const float*, bf16*, int64_t);
typedef void (*Q8Tile)(const bf16*, int64_t, const Quantized&, int64_t, const float*, bf16*, int64_t);
#define TILE_ROW(T, m) {T<m, 1>, T<m, 2>, T<m, 3>, T<m, 4>}
const Bf16Tile BF16_TILES[MR][NR] = {TILE_ROW(tile_bf16, 1), TILE_ROW(tile_bf16, 2), TILE_ROW(tile_bf16, 3),
                                     TILE_ROW(tile_bf16, 4), TILE_ROW(tile_bf16, 5), TILE_ROW(tile_bf16, 6)};
const Q8Tile Q8_TILES[FUSED_ROWS][NR] = {TILE_ROW(tile_q8, 1), TILE_ROW(tile_q8, 2), TILE_ROW(tile_q8, 3),
                                         TILE_ROW(tile_q8, 4)};
#undef TILE_ROW

}  // namespace

extern "C" {

// Bumped whenever an entry point's signature or a layout changes; native.py checks it.
int pf_abi_version(void) { return 1; }

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
  std::vector<int64_t> first(n_groups + 1, 0);
  for (int64_t g = 0; g < n_groups; ++g) first[g + 1] = first[g] + counts[g];
  const int64_t blocks = N / 16, panels = (blocks + NR - 1) / NR, tasks = n_groups * panels;
  const int64_t groups = codes ? K / gs : 0;
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
      bf16* og = out + first[g] * N + block * 16;
      const Quantized q{codes ? codes + e * N * K : nullptr, scales + e * N * groups, biases + e * N * groups, K, gs};
      if (codes && rows <= FUSED_ROWS) {
        Q8_TILES[rows - 1][nr - 1](xg, K, q, block, b, og, N);
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
        BF16_TILES[mr - 1][nr - 1](xg + m * K, K, w, b, og + m * N, N);
      }
    }
  }
}

}  // extern "C"
