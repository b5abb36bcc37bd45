// Banded bidirectional GQA attention with one sink logit per query head, bf16, AVX-512 BF16.
//
// For query t of head h (kv head h / G): the keys j with |t - j| <= window and valid[b, j]. The steps and
// roundings are those of the torch path (torch_model.Attention._banded) on bf16 tensors:
//   score_j = bf16(q_t . k_j)               (float32 sums, rounded as a bf16 matmul output is)
//   p = softmax([score_j..., sink_h])        (float32)
//   out_t = bf16(sum_j bf16(p_j) * v_j)      (float32 sums)
// Only the order of the float32 additions and exp's last bit differ. One task = one batch row, one kv head
// and QB consecutive queries (all G heads of the group): its keys and values are packed once into
// per-thread scratch, the G * QB query rows then run as rows of the same register tiles as the experts.
#include <math.h>

#include <vector>

#include "simd.h"

namespace {

using namespace pf;

constexpr int QB = 16;  // queries per task: 16 + 2 * window keys, 94% of them in the band at window 128
constexpr int MR = 4;   // query rows per register tile

// rows [n] x d bf16 (row stride ld) -> pair-packed [ceil(n / 16)][d / 2][16][2], missing rows zero.
void pack_rows(const bf16* src, int64_t ld, int64_t n, int64_t d, bf16* dst) {
  const int64_t blocks = (n + 15) / 16;
  for (int64_t b = 0; b < blocks; ++b)
    for (int64_t c = 0; c < 16; ++c) {
      const int64_t row = b * 16 + c;
      bf16* to = dst + b * d * 16 + c * 2;
      if (row >= n) {
        for (int64_t k = 0; k < d; ++k) to[(k >> 1) * 32 + (k & 1)] = 0;
        continue;
      }
      const bf16* from = src + row * ld;
      for (int64_t k = 0; k < d; ++k) to[(k >> 1) * 32 + (k & 1)] = from[k];
    }
}

// V^T packed for P.V: dims [d / 16][npairs][16][2] with pair p = keys (2p, 2p + 1); missing keys zero.
void pack_columns(const bf16* src, int64_t ld, int64_t n, int64_t d, int64_t npairs, bf16* dst) {
  for (int64_t b = 0; b < d / 16; ++b)
    for (int64_t p = 0; p < npairs; ++p)
      for (int64_t c = 0; c < 16; ++c)
        for (int64_t t = 0; t < 2; ++t) {
          const int64_t key = 2 * p + t;
          dst[((b * npairs + p) * 16 + c) * 2 + t] = key < n ? src[key * ld + b * 16 + c] : 0;
        }
}

// R query rows times NR packed blocks of 16 keys -> scores rounded to bf16 (kept as float32).
template <int R, int NR>
void score_blocks(const bf16* q, int64_t d, const bf16* keys, float* s, int64_t lds) {
  __m512 acc[R][NR];
  zero<R, NR>(acc);
  dot_tile<R, NR>(acc, q, d, d / 2, keys, d * 16);
  for (int i = 0; i < R; ++i)
    for (int j = 0; j < NR; ++j) _mm512_storeu_ps(s + i * lds + j * 16, round_bf16(acc[i][j]));
}

template <int R>
void scores_tile(const bf16* q, int64_t d, const bf16* kp, int64_t key_blocks, float* s, int64_t lds) {
  for (int64_t j0 = 0; j0 < key_blocks; j0 += 4) {
    const bf16* keys = kp + j0 * d * 16;
    switch (key_blocks - j0 < 4 ? key_blocks - j0 : 4) {
      case 4: score_blocks<R, 4>(q, d, keys, s + j0 * 16, lds); break;
      case 3: score_blocks<R, 3>(q, d, keys, s + j0 * 16, lds); break;
      case 2: score_blocks<R, 2>(q, d, keys, s + j0 * 16, lds); break;
      default: score_blocks<R, 1>(q, d, keys, s + j0 * 16, lds); break;
    }
  }
}

// R probability rows (npairs pairs of keys) times NR blocks of V^T packed -> bf16 outputs (16 dims a block).
template <int R, int NR>
void value_blocks(const bf16* p, int64_t ldp, int64_t npairs, const bf16* vp, bf16* out, int64_t ldo) {
  __m512 acc[R][NR];
  zero<R, NR>(acc);
  dot_tile<R, NR>(acc, p, ldp, npairs, vp, npairs * 32);
  for (int i = 0; i < R; ++i)
    for (int j = 0; j < NR; ++j)
      _mm256_storeu_si256((__m256i*)(out + i * ldo + j * 16), (__m256i)_mm512_cvtneps_pbh(acc[i][j]));
}

template <int R>
void values_tile(const bf16* p, int64_t ldp, int64_t npairs, const bf16* vp, int64_t d, bf16* out, int64_t ldo) {
  int64_t j = 0;
  for (; j + 4 <= d / 16; j += 4) value_blocks<R, 4>(p, ldp, npairs, vp + j * npairs * 32, out + j * 16, ldo);
  for (; j < d / 16; ++j) value_blocks<R, 1>(p, ldp, npairs, vp + j * npairs * 32, out + j * 16, ldo);
}

}  // namespace

extern "C" {

// q [B, T, H, d], k and v [B, T, KV, d] bf16 (q and k already rotated and scaled); valid [B, T] uint8 (0:
// padding); sinks [H] float32; out [B, T, H, d] bf16. d % 32 == 0.
void pf_banded_attention(const bf16* q, const bf16* k, const bf16* v, const uint8_t* valid, const float* sinks,
                         int64_t B, int64_t T, int64_t H, int64_t KV, int64_t d, int64_t window, bf16* out) {
  const int64_t G = H / KV, qblocks = (T + QB - 1) / QB, tasks = B * KV * qblocks;
  const int64_t max_keys = QB + 2 * window, max_key_blocks = (max_keys + 15) / 16;
  const int64_t max_pairs = (max_keys + 1) / 2, lds = max_key_blocks * 16;
  const int64_t ldp = (2 * max_pairs + 15) / 16 * 16;  // probability rows: whole blocks of 16
#pragma omp parallel
  {
    std::vector<bf16> kp(max_key_blocks * 16 * d), vp(d * max_pairs * 2), qrows(G * QB * d), probs(G * QB * ldp);
    std::vector<float> scores(G * QB * lds);
    std::vector<__mmask16> live(max_key_blocks), band_masks(max_key_blocks);
#pragma omp for schedule(dynamic, 1)
    for (int64_t task = 0; task < tasks; ++task) {
      const int64_t b = task / (KV * qblocks), h = (task / qblocks) % KV, t0 = (task % qblocks) * QB;
      const int64_t nq = T - t0 < QB ? T - t0 : QB;
      const int64_t k0 = t0 - window > 0 ? t0 - window : 0;
      const int64_t k1 = t0 + nq + window < T ? t0 + nq + window : T;  // keys [k0, k1)
      const int64_t nk = k1 - k0, key_blocks = (nk + 15) / 16, npairs = (nk + 1) / 2;
      pack_rows(k + ((b * T + k0) * KV + h) * d, KV * d, nk, d, kp.data());
      pack_columns(v + ((b * T + k0) * KV + h) * d, KV * d, nk, d, npairs, vp.data());
      // query rows ordered (head g, query t): contiguous copies of q[b, t, h * G + g, :]
      const int64_t rows = G * nq;
      for (int64_t g = 0; g < G; ++g)
        for (int64_t t = 0; t < nq; ++t)
          memcpy(&qrows[(g * nq + t) * d], q + ((b * T + t0 + t) * H + h * G + g) * d, d * sizeof(bf16));
      for (int64_t r = 0; r < rows; r += MR) {
        const int64_t mr = rows - r < MR ? rows - r : MR;
        float* s = &scores[r * lds];
        const bf16* qr = &qrows[r * d];
        if (mr == 4) scores_tile<4>(qr, d, kp.data(), key_blocks, s, lds);
        else if (mr == 3) scores_tile<3>(qr, d, kp.data(), key_blocks, s, lds);
        else if (mr == 2) scores_tile<2>(qr, d, kp.data(), key_blocks, s, lds);
        else scores_tile<1>(qr, d, kp.data(), key_blocks, s, lds);
      }
      // valid keys of this window as one 16-bit lane mask per block of 16 keys
      const uint8_t* ok = valid + b * T + k0;
      for (int64_t j0 = 0; j0 < nk; j0 += 16) {
        __mmask16 m = 0;
        for (int64_t c = 0; c < 16 && j0 + c < nk; ++c) m |= (__mmask16)((ok[j0 + c] != 0) << c);
        live[j0 / 16] = m;
      }
      const __m512i lane = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
      for (int64_t r = 0; r < rows; ++r) {  // masked softmax with the sink, probabilities rounded to bf16
        const int64_t g = r / nq, t = t0 + r % nq;
        const float sink = sinks[h * G + g];
        float* s = &scores[r * lds];
        bf16* p = &probs[r * ldp];
        const int64_t lo = t - window - k0 > 0 ? t - window - k0 : 0;
        const int64_t hi = t + window + 1 - k0 < nk ? t + window + 1 - k0 : nk;  // band [lo, hi)
        __m512 top = _mm512_set1_ps(sink);
        for (int64_t j0 = 0; j0 < key_blocks * 16; j0 += 16) {
          const __m512i idx = _mm512_add_epi32(lane, _mm512_set1_epi32((int)j0));
          const __mmask16 in = _mm512_cmpge_epi32_mask(idx, _mm512_set1_epi32((int)lo)) &
                               _mm512_cmplt_epi32_mask(idx, _mm512_set1_epi32((int)hi)) & live[j0 / 16];
          band_masks[j0 / 16] = in;
          top = _mm512_mask_max_ps(top, in, top, _mm512_loadu_ps(s + j0));
        }
        const float peak = _mm512_reduce_max_ps(top);
        const __m512 shift = _mm512_set1_ps(peak);
        __m512 total = _mm512_setzero_ps();
        for (int64_t j0 = 0; j0 < key_blocks * 16; j0 += 16) {
          const __m512 e = _mm512_maskz_mov_ps(band_masks[j0 / 16],
                                               exp_ps(_mm512_sub_ps(_mm512_loadu_ps(s + j0), shift)));
          _mm512_storeu_ps(s + j0, e);
          total = _mm512_add_ps(total, e);
        }
        const __m512 inv = _mm512_set1_ps(1.0f / (_mm512_reduce_add_ps(total) + expf(sink - peak)));
        for (int64_t j0 = 0; j0 < ldp; j0 += 16) {
          const __m512 e = j0 < key_blocks * 16 ? _mm512_loadu_ps(s + j0) : _mm512_setzero_ps();
          _mm256_storeu_si256((__m256i*)(p + j0), (__m256i)_mm512_cvtneps_pbh(_mm512_mul_ps(e, inv)));
        }
      }
      for (int64_t r = 0; r < rows; r += MR) {  // P . V into out[b, t, h * G + g, :]
        const int64_t mr = rows - r < MR ? rows - r : MR;
        bf16 tile[MR * 256];  // d <= 256
        const bf16* pr = &probs[r * ldp];
        if (mr == 4) values_tile<4>(pr, ldp, npairs, vp.data(), d, tile, d);
        else if (mr == 3) values_tile<3>(pr, ldp, npairs, vp.data(), d, tile, d);
        else if (mr == 2) values_tile<2>(pr, ldp, npairs, vp.data(), d, tile, d);
        else values_tile<1>(pr, ldp, npairs, vp.data(), d, tile, d);
        for (int64_t i = 0; i < mr; ++i) {
          const int64_t g = (r + i) / nq, t = t0 + (r + i) % nq;
          memcpy(out + ((b * T + t) * H + h * G + g) * d, tile + i * d, d * sizeof(bf16));
        }
      }
    }
  }
}

// In place, x [B * T][heads][d] bf16 (T positions per batch row): interleaved-pair rotary embedding, then the
// scale, with torch_model.apply_rotary's roundings on bf16 tensors: each product, difference and sum is
// computed in float32 and rounded to bf16, as torch's bf16 elementwise ops do, so the result is bitwise
// theirs. cos, sin: [T][d / 2] bf16. d % 32 == 0.
void pf_rotary(bf16* x, int64_t rows, int64_t T, int64_t heads, int64_t d, const bf16* cos, const bf16* sin,
               float scale) {
  const __m512 sc = _mm512_set1_ps(scale);
  const __m512i high = _mm512_set1_epi32((int)0xFFFF0000u);
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < rows; ++r) {
    const bf16* c = cos + (r % T) * (d / 2);
    const bf16* s = sin + (r % T) * (d / 2);
    for (int64_t h = 0; h < heads; ++h) {
      bf16* row = x + (r * heads + h) * d;
      for (int64_t i = 0; i < d / 2; i += 16) {  // 16 pairs (even, odd) per step
        const __m512i pairs = _mm512_loadu_si512((const void*)(row + 2 * i));
        const __m512 even = _mm512_castsi512_ps(_mm512_slli_epi32(pairs, 16));
        const __m512 odd = _mm512_castsi512_ps(_mm512_and_si512(pairs, high));
        const __m512 cv = widen(c + i), sv = widen(s + i);
        const __m512 re = round_bf16(_mm512_sub_ps(round_bf16(_mm512_mul_ps(even, cv)),
                                                   round_bf16(_mm512_mul_ps(odd, sv))));
        const __m512 ro = round_bf16(_mm512_add_ps(round_bf16(_mm512_mul_ps(odd, cv)),
                                                   round_bf16(_mm512_mul_ps(even, sv))));
        const __m512i lo = _mm512_srli_epi32(_mm512_castps_si512(round_bf16(_mm512_mul_ps(re, sc))), 16);
        const __m512i hi = _mm512_and_si512(_mm512_castps_si512(round_bf16(_mm512_mul_ps(ro, sc))), high);
        _mm512_storeu_si512((void*)(row + 2 * i), _mm512_or_si512(lo, hi));
      }
    }
  }
}

}  // extern "C"
