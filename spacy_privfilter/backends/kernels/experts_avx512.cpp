// Grouped expert matmuls, out = x @ W[e]^T + b[e] for each expert's run of rows, on x86-64 CPUs with
// AVX-512 BF16 (vdpbf16ps). Built by spacy_privfilter/backends/native.py with the system C++ compiler and
// loaded with ctypes: plain C entry points, no Python or torch headers. OpenMP shares torch's runtime.
//
// Weight layout ("pair-packed", in panels): per expert, the 16-column blocks are grouped in panels of NR = 4
// blocks (the last panel may have fewer), and a panel of nr blocks is stored as [K / 2][nr][16 columns][2
// consecutive k]. One 512-bit vector holds a pair of k for 16 output columns, so one vdpbf16ps with a broadcast
// pair of x values adds 32 products into 16 float32 column sums (no horizontal reductions), and a register
// tile reads its panel as one sequential stream. 8-bit codes are stored in the same order, with their
// per-group scales and biases as [N / 16][K / gs][16], and multiplied as the exact affine values
// scale * q + bias (see tile_q8): int16 x times the codes with vpdpwssd, folded per group in float32.
#include <omp.h>

#include <algorithm>
#include <vector>

#include "simd.h"

namespace {

using namespace pf;

// Bytes ahead at which the tiles prefetch the expert weights they stream: the hardware prefetchers alone leave
// a core at ~60% of its bandwidth here (24 vs 37 GB/s for 8-bit codes at one row, measured on the benchmark
// machine, an AMD EPYC of the Zen 5 class). Of 1 to 32 KB ahead, 8 KB (about a memory latency of streaming at
// one row) was best or level with the best: per expert, 8-bit 12-20% and bf16 8-10% faster than 2 KB at 4-16 rows.
constexpr int PREFETCH = 8192;

// Column blocks per panel: the register tiles' width (both weight kinds) and the packed layout's panel.
constexpr int NR = 4;

struct Quantized {
  const uint8_t* codes;  // one expert, in panels (see the layout above)
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

// MR rows of x (row stride K) times a panel of NR pair-packed 16-column blocks of bf16 weights.
template <class Epilogue, int MR, int NR>
void tile_bf16(const bf16* x, int64_t K, const bf16* w, const float* bias, bf16* out, int64_t ldo,
               const float* params) {
  __m512 acc[MR][NR];
  zero<MR, NR>(acc);
  dot_tile<MR, NR, PREFETCH>(acc, x, K, K / 2, w, 32, 32 * NR);
  Epilogue::template store<MR, NR>(acc, bias, out, ldo, params);
}

// 8-bit weights as w = scale * q + bias exactly (not rounded to bf16), factored per group of gs k:
//   x . w = scale * (x . q) + bias * sum(x)
// x . q is an exact integer product: each row's group of x is written as X * 2^E with int16 X (E from the
// group's largest magnitude, so every value within 2^7 of it is exact, smaller ones round at 2^E), and
// vpdpwssd adds the int16 products X * q into int32 sums. Each group then folds into the float32 sums as
// 2^E * scale * sum + bias * 2^E * sum(X). Reading 1 byte per weight with one widening op per 32 codes is
// what makes 8-bit weights cheaper than bf16 ones.
struct XInt {
  const int16_t* x;   // [rows][K]
  const float* exp;   // [rows][groups]: E
  const float* sum;   // [rows][groups]: 2^E * sum(X)
};

// GCC's own vector type for the int32 sums: with __m512i (64-bit lanes) and the intrinsic's casts, GCC 12
// stores every sum to memory on every iteration.
typedef int v16si __attribute__((vector_size(64)));

inline v16si dpwssd(v16si acc, v16si a, v16si b) {
#if defined(__clang__)
  return (v16si)_mm512_dpwssd_epi32((__m512i)acc, (__m512i)a, (__m512i)b);
#else
  return __builtin_ia32_vpdpwssd_v16si(acc, a, b);
#endif
}

// acc[i][j] = int16 x row i (row stride ldx) . codes of block j of a panel of NR blocks, pairs [p0, p1).
template <int MR, int NR>
inline void dot_tile_q8(__m512i (&out)[MR][NR], const int16_t* x, int64_t ldx, int64_t p0, int64_t p1,
                        const uint8_t* codes) {
  v16si acc[MR][NR];
#pragma GCC unroll 8
  for (int i = 0; i < MR; ++i)
#pragma GCC unroll 4
    for (int j = 0; j < NR; ++j) acc[i][j] = (v16si)_mm512_setzero_si512();
  const int32_t* xp[MR];
  for (int i = 0; i < MR; ++i) xp[i] = (const int32_t*)(x + i * ldx);
  const uint8_t* c = codes + p0 * 32 * NR;
  for (int64_t p = p0; p < p1; ++p, c += 32 * NR) {
    v16si wv[NR];
#pragma GCC unroll 2
    for (int o = 0; o < 32 * NR; o += 64) _mm_prefetch((const char*)(c + o + PREFETCH), _MM_HINT_T0);
#pragma GCC unroll 4
    for (int j = 0; j < NR; ++j)
      wv[j] = (v16si)_mm512_cvtepu8_epi16(_mm256_loadu_si256((const __m256i*)(c + j * 32)));
#pragma GCC unroll 8
    for (int i = 0; i < MR; ++i) {
      const v16si xv = (v16si)_mm512_set1_epi32(xp[i][p]);
#pragma GCC unroll 4
      for (int j = 0; j < NR; ++j) acc[i][j] = dpwssd(acc[i][j], xv, wv[j]);
    }
  }
#pragma GCC unroll 8
  for (int i = 0; i < MR; ++i)
#pragma GCC unroll 4
    for (int j = 0; j < NR; ++j) out[i][j] = (__m512i)acc[i][j];
}

// Each group's int32 sums go to `ints` ([groups][MR][NR][16], per thread) as its products finish; the fold into
// float32 runs after the last group, with the float32 sums in registers (the same operations, in the same order,
// as folding each group as soon as it finished, which measured ~5% slower from 4 to 64 rows per expert: the
// conversions waited on the group's last products between two groups' products).
template <class Epilogue, int MR, int NR>
void tile_q8(const XInt& xi, int64_t K, const Quantized& q, int64_t block, const float* bias, bf16* out,
             int64_t ldo, const float* params, int32_t* ints) {
  const int64_t groups = K / q.gs, half = q.gs / 2, pairs = K / 2;
  for (int j = 0; j < NR; ++j)  // the blocks' scales and biases (small, read once per group): ahead of their use
    for (int64_t o = 0; o < groups * 32; o += 64) {
      _mm_prefetch((const char*)(q.scales + (block + j) * groups * 16) + o, _MM_HINT_T0);
      _mm_prefetch((const char*)(q.biases + (block + j) * groups * 16) + o, _MM_HINT_T0);
    }
  for (int64_t g = 0; g < groups; ++g) {
    __m512i acc[MR][NR];
    dot_tile_q8<MR, NR>(acc, xi.x, K, g * half, (g + 1) * half, q.codes + block * pairs * 32);
#pragma GCC unroll 8
    for (int i = 0; i < MR; ++i)
#pragma GCC unroll 4
      for (int j = 0; j < NR; ++j) _mm512_store_si512((void*)(ints + ((g * MR + i) * NR + j) * 16), acc[i][j]);
  }
  __m512 sums[MR][NR];
  zero<MR, NR>(sums);
  for (int64_t g = 0; g < groups; ++g) {
#pragma GCC unroll 4
    for (int j = 0; j < NR; ++j) {
      const __m512 s = widen(q.scales + ((block + j) * groups + g) * 16);
      const __m512 b = widen(q.biases + ((block + j) * groups + g) * 16);
#pragma GCC unroll 8
      for (int i = 0; i < MR; ++i) {
        const __m512 e = _mm512_set1_ps(xi.exp[i * groups + g]), xs = _mm512_set1_ps(xi.sum[i * groups + g]);
        const __m512 v = _mm512_cvtepi32_ps(_mm512_load_si512((const void*)(ints + ((g * MR + i) * NR + j) * 16)));
        sums[i][j] = _mm512_fmadd_ps(b, xs, _mm512_fmadd_ps(_mm512_scalef_ps(v, e), s, sums[i][j]));
      }
    }
  }
  Epilogue::template store<MR, NR>(sums, bias, out, ldo, params);
}

// Rows [first, last) of bf16 x -> XInt form (see tile_q8), gs % 16 == 0.
void to_xint(const bf16* x, int64_t K, int64_t gs, int64_t first, int64_t last, int16_t* xq, float* exps,
             float* sums) {
  const int64_t groups = K / gs;
#pragma omp for schedule(static)
  for (int64_t r = first; r < last; ++r)
    for (int64_t g = 0; g < groups; ++g) {
      const bf16* src = x + r * K + g * gs;
      __m512 top = _mm512_setzero_ps();
      for (int64_t c = 0; c < gs; c += 16) top = _mm512_max_ps(top, _mm512_abs_ps(widen(src + c)));
      const float largest = _mm512_reduce_max_ps(top);
      // E = floor(log2(largest)) - 14, so the largest |X| is in [2^14, 2^15); NaN or inf propagate through E.
      float e = largest > 0.0f ? _mm_cvtss_f32(_mm_getexp_ss(_mm_setzero_ps(), _mm_set_ss(largest))) - 14.0f : 0.0f;
      if (!(largest <= 3.4e38f)) e = largest - largest;  // NaN for inf or NaN
      const __m512 down = _mm512_set1_ps(-e);
      __m512i total = _mm512_setzero_si512();
      for (int64_t c = 0; c < gs; c += 16) {
        const __m512i v = _mm512_cvtps_epi32(_mm512_scalef_ps(widen(src + c), down));
        total = _mm512_add_epi32(total, v);
        _mm256_storeu_si256((__m256i*)(xq + (r - first) * K + g * gs + c), _mm512_cvtepi32_epi16(v));
      }
      exps[(r - first) * groups + g] = e;
      sums[(r - first) * groups + g] = _mm_cvtss_f32(_mm_scalef_ss(_mm_cvtsi32_ss(_mm_setzero_ps(),
                                                                                   _mm512_reduce_add_epi32(total)),
                                                                   _mm_set_ss(e)));
    }
}

// Where pair p of block nb lies in an expert of `blocks` blocks packed in panels: its 32 values start at
// this many times 32 elements.
inline int64_t packed_at(int64_t blocks, int64_t pairs, int64_t nb, int64_t p) {
  const int64_t start = nb / NR * NR, nr = blocks - start < NR ? blocks - start : NR;
  return start * pairs + p * nr + (nb - start);
}

// One expert's `blocks` blocks of 8-bit codes -> bf16 in the same packed layout.
void dequantize_blocks(const Quantized& q, int64_t blocks, bf16* dst) {
  const int64_t groups = q.K / q.gs, half = q.gs / 2, pairs = q.K / 2;
  for (int64_t nb = 0; nb < blocks; ++nb)
    for (int64_t g = 0; g < groups; ++g) {
      __m512 s_lo, s_hi, b_lo, b_hi;
      pair_lanes(q.scales + (nb * groups + g) * 16, &s_lo, &s_hi);
      pair_lanes(q.biases + (nb * groups + g) * 16, &b_lo, &b_hi);
      for (int64_t p = g * half; p < (g + 1) * half; ++p) {
        const int64_t at = packed_at(blocks, pairs, nb, p) * 32;
        _mm512_storeu_si512((void*)(dst + at), (__m512i)dequantize_pair(q.codes + at, s_lo, s_hi, b_lo, b_hi));
      }
    }
}

// Register tiles: up to 6 rows x NR blocks (24 accumulators), for both weight kinds.
constexpr int MR = 6;
// Each thread's share of a call's tasks (expert x panel) is estimated as rows + this many rows per byte of a
// weight: the time to read a panel from memory, in rows of products (~11 rows for 8-bit codes and ~22 for bf16
// at 640 k, measured). Only the split between threads depends on it, never a result.
constexpr int64_t READ_ROWS_PER_BYTE = 11;
constexpr int64_t CHUNK_ROWS = 2048;  // rows of x held in XInt form at once (8-bit), ~2.6 MB at K = 640
typedef void (*Bf16Tile)(const bf16*, int64_t, const bf16*, const float*, bf16*, int64_t, const float*);
typedef void (*Q8Tile)(const XInt&, int64_t, const Quantized&, int64_t, const float*, bf16*, int64_t, const float*,
                       int32_t*);
#define TILE_ROW(T, E, m) {T<E, m, 1>, T<E, m, 2>, T<E, m, 3>, T<E, m, 4>}
#define TILES(T, E) {TILE_ROW(T, E, 1), TILE_ROW(T, E, 2), TILE_ROW(T, E, 3), TILE_ROW(T, E, 4), TILE_ROW(T, E, 5), \
                     TILE_ROW(T, E, 6)}
const Bf16Tile BF16_TILES[2][MR][NR] = {TILES(tile_bf16, Linear), TILES(tile_bf16, SwiGLU)};
const Q8Tile Q8_TILES[2][MR][NR] = {TILES(tile_q8, Linear), TILES(tile_q8, SwiGLU)};

#undef TILE_ROW
#undef TILES

// The grouped product behind both entry points; swiglu != 0 applies the SwiGLU epilogue (out has N / 2 columns).
// 8-bit weights go through chunks of consecutive groups (at most CHUNK_ROWS rows, or one group), whose rows
// are first converted to XInt form, in parallel, then multiplied.
void grouped(const bf16* x, int64_t K, int64_t N, int64_t n_groups, const int64_t* experts, const int64_t* counts,
             const bf16* weight, const uint8_t* codes, const bf16* scales, const bf16* biases, int64_t gs,
             const float* bias, bf16* out, int swiglu, const float* params) {
  std::vector<int64_t> first(n_groups + 1, 0);
  for (int64_t g = 0; g < n_groups; ++g) first[g + 1] = first[g] + (counts[g] > 0 ? counts[g] : 0);
  const int64_t blocks = N / 16, panels = (blocks + NR - 1) / NR;
  const int64_t groups = codes ? K / gs : 0, ldo = swiglu ? N / 2 : N;
  std::vector<int16_t> xq;
  std::vector<float> exps, sums;
  for (int64_t g0 = 0, g1; g0 < n_groups; g0 = g1) {
    g1 = codes ? g0 + 1 : n_groups;
    while (codes && g1 < n_groups && first[g1 + 1] - first[g0] <= CHUNK_ROWS) ++g1;
    if (codes) {
      const int64_t rows = first[g1] - first[g0];
      if ((int64_t)xq.size() < rows * K) xq.resize(rows * K);
      if ((int64_t)exps.size() < rows * groups) exps.resize(rows * groups), sums.resize(rows * groups);
    }
    // Tasks (expert, panel) in memory order, split into one contiguous run per thread of about equal cost:
    // each thread then reads its experts' weights as one sequential stream (with the panel layout, 6-19% faster
    // per expert at 1 to 16 rows than tasks handed out one at a time, whose threads' streams interleave).
    const int64_t tasks = (g1 - g0) * panels;
    std::vector<int64_t> cost(tasks + 1, 0);
    for (int64_t t = 0; t < tasks; ++t) {
      const int64_t rows = first[g0 + t / panels + 1] - first[g0 + t / panels];
      cost[t + 1] = cost[t] + (rows > 0 ? rows + READ_ROWS_PER_BYTE * (codes ? 1 : 2) : 0);
    }
#pragma omp parallel
    {
      std::vector<int32_t> ints_buf(codes ? groups * MR * NR * 16 + 16 : 0);  // tile_q8's int32 sums
      int32_t* ints = (int32_t*)(((uintptr_t)ints_buf.data() + 63) & ~(uintptr_t)63);
      if (codes) to_xint(x, K, gs, first[g0], first[g1], xq.data(), exps.data(), sums.data());
      const int64_t threads = omp_get_num_threads(), me = omp_get_thread_num();
      const auto split = [&](int64_t part) {  // the first task of a thread's run
        if (part == threads) return tasks;
        return (int64_t)(std::lower_bound(cost.begin(), cost.end(), cost[tasks] * part / threads) - cost.begin());
      };
      for (int64_t t = split(me), end = split(me + 1); t < end; ++t) {
        const int64_t g = g0 + t / panels, block = (t % panels) * NR, e = experts[g], rows = first[g + 1] - first[g];
        const int64_t nr = (blocks - block) < NR ? (blocks - block) : NR;
        if (rows <= 0) continue;
        const float* b = bias + e * N + block * 16;
        bf16* og = out + first[g] * ldo + (swiglu ? block * 8 : block * 16);
        if (codes) {
          const Quantized q{codes + e * N * K, scales + e * N * groups, biases + e * N * groups, K, gs};
          const int64_t r0 = first[g] - first[g0];
          for (int64_t m = 0; m < rows; m += MR) {
            const int64_t mr = (rows - m) < MR ? (rows - m) : MR;
            const XInt xi{xq.data() + (r0 + m) * K, exps.data() + (r0 + m) * groups, sums.data() + (r0 + m) * groups};
            Q8_TILES[swiglu][mr - 1][nr - 1](xi, K, q, block, b, og + m * ldo, ldo, params, ints);
          }
          continue;
        }
        const bf16* xg = x + first[g] * K;
        const bf16* w = weight + e * N * K + block * 16 * K;
        for (int64_t m = 0; m < rows; m += MR) {
          const int64_t mr = (rows - m) < MR ? (rows - m) : MR;
          BF16_TILES[swiglu][mr - 1][nr - 1](xg + m * K, K, w, b, og + m * ldo, ldo, params);
        }
      }
    }
  }
}

// One packed row: its pairs (2 codes or 2 bf16 each) to every `stride`-th pair slot of dst.
template <typename Pair>
inline void copy_pairs(const uint8_t* from, uint8_t* to, int64_t pairs, int64_t stride) {
  for (int64_t p = 0; p < pairs; ++p) {
    Pair v;
    memcpy(&v, from + p * sizeof(Pair), sizeof(Pair));
    memcpy(to + p * stride * sizeof(Pair), &v, sizeof(Pair));
  }
}

}  // namespace

extern "C" {

// Bumped whenever an entry point's signature or a layout changes; native.py checks it.
int pf_abi_version(void) { return 9; }

// src[e, order[n], k] (strides in elements; order NULL: n) -> pair-packed dst, [E][N / 16 blocks][K / 2][16][2]
// with each expert's blocks in panels (see the layout at the top), for 1-byte codes or 2-byte bf16 (elem). One
// pass, in parallel: the load-time repacking of the expert weights.
void pf_pack(const void* src, int64_t E, int64_t N, int64_t K, int64_t se, int64_t sn, int64_t sk, int64_t elem,
             const int64_t* order, void* dst) {
  const int64_t blocks = N / 16, pairs = K / 2;
#pragma omp parallel for schedule(static)
  for (int64_t t = 0; t < E * blocks; ++t) {
    const int64_t e = t / blocks, nb = t % blocks;
    const int64_t step = (packed_at(blocks, pairs, nb, 1) - packed_at(blocks, pairs, nb, 0)) * 16;  // pairs
    for (int64_t c = 0; c < 16; ++c) {
      const int64_t n = order ? order[nb * 16 + c] : nb * 16 + c;
      const int64_t base = e * se + n * sn, out = (e * blocks * pairs + packed_at(blocks, pairs, nb, 0)) * 32 + c * 2;
      if (sk == 1) {  // contiguous rows: move whole pairs (2 or 4 bytes), `step` pairs apart in dst
        if (elem == 1) copy_pairs<uint16_t>((const uint8_t*)src + base, (uint8_t*)dst + out, pairs, step);
        else copy_pairs<uint32_t>((const uint8_t*)src + 2 * base, (uint8_t*)dst + 2 * out, pairs, step);
      } else if (elem == 1) {
        const uint8_t* from = (const uint8_t*)src + base;
        uint8_t* to = (uint8_t*)dst + out;
        for (int64_t k = 0; k < K; ++k) to[(k >> 1) * step * 2 + (k & 1)] = from[k * sk];
      } else {
        const bf16* from = (const bf16*)src + base;
        bf16* to = (bf16*)dst + out;
        for (int64_t k = 0; k < K; ++k) to[(k >> 1) * step * 2 + (k & 1)] = from[k * sk];
      }
    }
  }
}

// out[tokens[p]] += float(y[p]) * weights[p] for p = 0, 1, ... in order: the routed outputs summed per token with
// the float32 roundings of torch's y.float().mul_(w) then index_add_ (same order of additions), bitwise.
// out float32 [*, D], y bf16 [pairs, D], D % 16 == 0. In parallel over columns.
void pf_combine(float* out, const bf16* y, const int64_t* tokens, const float* weights, int64_t pairs, int64_t D) {
#pragma omp parallel for schedule(static)
  for (int64_t c = 0; c < D; c += 16)
    for (int64_t p = 0; p < pairs; ++p) {
      float* o = out + tokens[p] * D + c;
      const __m512 term = _mm512_mul_ps(widen(y + p * D + c), _mm512_set1_ps(weights[p]));
      _mm512_storeu_ps(o, _mm512_add_ps(_mm512_loadu_ps(o), term));
    }
}

// The router's top k of each row of float32 logits [rows][n] (1 <= k <= 16, k <= n), as torch.topk(largest=True,
// sorted=True) gives it: the k largest values in descending order and their indices. torch leaves the order of
// equal values unspecified, so a row with a NaN or with equal values among its k + 1 largest is not written; the
// return value counts such rows (the caller then asks torch.topk). Each 16 values are compared at once with the
// smallest of the k + 1 kept; the few that beat it are inserted in index order.
int64_t pf_topk(const float* logits, int64_t rows, int64_t n, int64_t k, float* values, int64_t* indices) {
  constexpr int64_t MAX_K = 16;
  if (k < 1 || k > MAX_K || k > n) return rows;
  const int64_t keep = std::min(k + 1, n);
  int64_t undecided = 0;
#pragma omp parallel for schedule(static) reduction(+ : undecided) if (rows * n >= (1 << 18))
  for (int64_t r = 0; r < rows; ++r) {
    const float* row = logits + r * n;
    float best[MAX_K + 1];
    int64_t at[MAX_K + 1], kept = 0;
    bool unordered = false;
    for (int64_t i0 = 0; i0 < n && !unordered; i0 += 16) {
      const __mmask16 valid = (__mmask16)(n - i0 >= 16 ? 0xFFFF : (1u << (n - i0)) - 1);
      const __m512 v = _mm512_maskz_loadu_ps(valid, row + i0);
      unordered = _mm512_mask_cmp_ps_mask(valid, v, v, _CMP_UNORD_Q) != 0;  // a NaN
      for (__mmask16 over = kept < keep ? valid : _mm512_mask_cmp_ps_mask(valid, v, _mm512_set1_ps(best[keep - 1]),
                                                                         _CMP_GT_OQ);
           over && !unordered; over &= over - 1) {
        const int64_t i = i0 + __builtin_ctz(over);
        const float x = row[i];
        if (kept == keep && !(x > best[keep - 1])) continue;  // an equal one here ranks below the k + 1 kept
        int64_t j = kept < keep ? kept++ : keep - 1;
        for (; j > 0 && x > best[j - 1]; --j) best[j] = best[j - 1], at[j] = at[j - 1];
        best[j] = x, at[j] = i;
      }
    }
    for (int64_t j = 1; j < kept; ++j) unordered = unordered || !(best[j - 1] > best[j]);
    if (unordered) {
      ++undecided;
      continue;
    }
    for (int64_t j = 0; j < k; ++j) values[r * k + j] = best[j], indices[r * k + j] = at[j];
  }
  return undecided;
}

// One expert's pair-packed 8-bit codes (`blocks` 16-column blocks) -> pair-packed bf16(scale * q + bias) in the
// same layout, the reference dequantization (q * scale is exact in float32, so the fused multiply-add rounds
// once, like multiply-then-add): for inspection; the tiles multiply the unrounded values.
void pf_dequantize(const uint8_t* codes, const bf16* scales, const bf16* biases, int64_t blocks, int64_t K,
                   int64_t gs, bf16* out) {
  const Quantized q{codes, scales, biases, K, gs};
  dequantize_blocks(q, blocks, out);
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
