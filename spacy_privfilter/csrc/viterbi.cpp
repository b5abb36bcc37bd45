// The constrained BIOES Viterbi of decode.py in C++: the same float64 additions and comparisons, in the same order,
// as its numpy recurrence (viterbi_numpy), one label at a time instead of one numpy call per label group (~20x
// faster at 221 labels: a step costs ~15 numpy calls). Built by spacy_privfilter/cbuild.py on first use, loaded
// with ctypes, checked against viterbi_numpy in each process. Portable: no instruction-set flags.
#include <stdint.h>

namespace {

// The larger score with its label id; ties to the lower id.
inline bool better(double a, int64_t a_id, double b, int64_t b_id) { return a > b || (a == b && a_id < b_id); }

}  // namespace

extern "C" {

int pf_viterbi_abi(void) { return 1; }

// lp: float64 [steps][labels] log-probabilities (steps >= 1). begin/inside/end/single: [classes] label ids of
// B-/I-/E-/S- per class; endlike: the 2 * classes E- and S- ids in ascending order. biases: background stay,
// background to start, end to background, end to start, inside to continue, inside to end. start/finish:
// [labels] boundary scores. delta, next: [labels] and back: [steps][labels] scratch. path: [steps] out.
void pf_viterbi(const double* lp, int64_t steps, int64_t labels, int64_t classes, int64_t o, const int64_t* begin,
                const int64_t* inside, const int64_t* end, const int64_t* single, const int64_t* endlike,
                const double* biases, const double* start, const double* finish, double* delta, double* next,
                int32_t* back, int64_t* path) {
  const double stay = biases[0], to_start = biases[1], end_to_bg = biases[2], end_to_start = biases[3];
  const double to_inside = biases[4], to_end = biases[5];
  const int64_t n_end = 2 * classes;
  for (int64_t c = 0; c < labels; ++c) delta[c] = lp[c] + start[c];
  for (int64_t t = 1; t < steps; ++t) {
    int32_t* row = back + t * labels;
    int64_t k_bg = 0, k_st = 0;
    double best_bg = delta[endlike[0]] + end_to_bg, best_st = delta[endlike[0]] + end_to_start;
    for (int64_t k = 1; k < n_end; ++k) {  // first maximum: ties to the lowest id (endlike ascending)
      const double bg = delta[endlike[k]] + end_to_bg, st = delta[endlike[k]] + end_to_start;
      if (bg > best_bg) best_bg = bg, k_bg = k;
      if (st > best_st) best_st = st, k_st = k;
    }
    const double o_stay = delta[o] + stay, o_start = delta[o] + to_start;
    double o_val = best_bg, start_val = best_st;
    int64_t o_from = endlike[k_bg], start_from = endlike[k_st];
    if (better(o_stay, o, best_bg, endlike[k_bg])) o_val = o_stay, o_from = o;
    if (better(o_start, o, best_st, endlike[k_st])) start_val = o_start, start_from = o;
    next[o] = o_val, row[o] = (int32_t)o_from;
    for (int64_t k = 0; k < classes; ++k) {
      next[begin[k]] = next[single[k]] = start_val;
      row[begin[k]] = row[single[k]] = (int32_t)start_from;
      const double from_b = delta[begin[k]], from_i = delta[inside[k]];
      const int inside_first = inside[k] < begin[k];
      const double ib = from_b + to_inside, ii = from_i + to_inside, eb = from_b + to_end, ei = from_i + to_end;
      const int take_i = ii > ib || (ii == ib && inside_first), take_e = ei > eb || (ei == eb && inside_first);
      next[inside[k]] = take_i ? ii : ib, row[inside[k]] = (int32_t)(take_i ? inside[k] : begin[k]);
      next[end[k]] = take_e ? ei : eb, row[end[k]] = (int32_t)(take_e ? inside[k] : begin[k]);
    }
    const double* lpt = lp + t * labels;
    for (int64_t c = 0; c < labels; ++c) delta[c] = next[c] + lpt[c];
  }
  int64_t last = 0;
  double best = delta[0] + finish[0];
  for (int64_t c = 1; c < labels; ++c) {
    const double v = delta[c] + finish[c];
    if (v > best) best = v, last = c;
  }
  path[steps - 1] = last;
  for (int64_t t = steps - 1; t > 0; --t) last = path[t - 1] = back[t * labels + last];
}

}  // extern "C"
