// kvs: the encoder's plan for repeated rows (codec/kvs_internal.h, RowPlan).
#include "codec/kvs_internal.h"

namespace kvs::codec::kvs_detail {

namespace {

// first[t] = the first token u <= t with equal(u, t), for T tokens with
// hashes hash[t] (equal values must have equal hashes; a hash decides only the
// speed).
template <typename Equal>
void first_occurrences(const uint64_t* hash, uint32_t T, Equal equal, uint32_t* first) {
  size_t size = 2;
  while (size < 2 * size_t(T)) size *= 2;
  std::vector<uint32_t> slots(size, 0);  // open addressing: token + 1, 0 empty
  const size_t mask = size - 1;
  for (uint32_t t = 0; t < T; ++t) {
    size_t i = size_t((hash[t] * 0xD6E8FEB86659FD93ull) >> 32) & mask;
    uint32_t source = t;
    for (; slots[i]; i = (i + 1) & mask) {
      const uint32_t u = slots[i] - 1;
      if (hash[u] == hash[t] && equal(u, t)) {
        source = u;
        break;
      }
    }
    if (source == t) slots[i] = t + 1;
    first[t] = source;
  }
}

using kvs_core::hash_step;


// A plan from each token's first occurrence: literal tokens, move-to-front
// ranks (0 for a literal row, r for the r-th most recently used one), their cost.
RowPlan plan_from_first(const uint32_t* first, uint32_t T, double row_bits) {
  RowPlan plan;
  plan.row_bits = row_bits;
  plan.ranks.resize(T);
  // The tokens before the first repeat are literal rows of rank 0 (one bit
  // each): the list of them is built at once (most heads never repeat a row).
  uint32_t t0 = 0;
  while (t0 < T && first[t0] == t0) ++t0;
  plan.literal.resize(t0);
  for (uint32_t t = 0; t < t0; ++t) plan.literal[t] = t;
  plan.ref_bits = double(t0);
  if (t0 == T) return plan;
  RecencyList recent(T);
  recent.add_first(t0);
  std::vector<uint32_t> last_use(T);  // per distinct row (its first token): when it was last used
  for (uint32_t t = 0; t < t0; ++t) last_use[t] = t;
  for (uint32_t t = t0; t < T; ++t) {
    const uint32_t source = first[t];
    uint32_t rank = 0;
    if (source == t) {
      plan.literal.push_back(t);
    } else {
      rank = recent.rank(last_use[source]);
      recent.remove(last_use[source]);
    }
    recent.add(t);
    last_use[source] = t;
    plan.ranks[t] = rank;
    uint32_t n = 0;
    while (((rank + 1) >> n) > 1) ++n;
    plan.ref_bits += 2 * n + 1;
  }
  return plan;
}


}  // namespace

double dimension_bits(double s1, double s2, uint32_t T) {
  // The entropy of a rounded Gaussian of that variance, at least 0.05 bits.
  const double var = std::max(0.0, s2 / T - (s1 / T) * (s1 / T));
  return std::max(0.05, 0.5 * std::log2(2 * M_PI * M_E * var));
}

void first_by_hash(const uint64_t* hash, size_t heads, uint32_t T, uint32_t* first) {
  // Open addressing on the hashes, one table for all heads at a load of at
  // most 1/4 (few probes, few mispredicted branches): a slot holds base + t
  // + 1 for token t of the current head, anything <= base is empty (base
  // grows by T per head, so the table is cleared only when it would wrap).
  size_t size = 2;
  while (size < 4 * size_t(T)) size *= 2;
  std::vector<uint32_t> slots(size, 0);
  const size_t mask = size - 1;
  uint32_t base = 0;
  for (size_t h = 0; h < heads; ++h, hash += T, first += T) {
    if (uint64_t(base) + 2 * uint64_t(T) >= uint64_t(UINT32_MAX)) {
      std::fill(slots.begin(), slots.end(), 0);
      base = 0;
    }
    for (uint32_t t = 0; t < T; ++t) {
      if (t + 64 < T) __builtin_prefetch(hash + t + 64);
      const uint64_t ht = hash[t];
      size_t i = size_t((ht * 0xD6E8FEB86659FD93ull) >> 32) & mask;
      uint32_t source = t;
      for (uint32_t v; (v = slots[i]) > base; i = (i + 1) & mask) {
        const uint32_t u = v - base - 1;
        if (hash[u] == ht) {
          source = u;
          break;
        }
      }
      if (source == t) slots[i] = base + t + 1;
      first[t] = source;
    }
    base += T;
  }
}

// Row modes and the plan of each of a layer's `heads` heads, from their
// values in steps y[(head * D + dim) * stride + token] (a row is the head's D
// values at one token, rounded).
void plan_layer(const float* y, size_t stride, uint32_t heads, uint32_t T, uint32_t D, bool allow,
                std::vector<uint8_t>* modes, std::vector<RowPlan>* plans) {
  std::vector<double> dim_bits;
  std::vector<uint32_t> first;
  if (allow) {
    // A row's estimated cost from each dimension's spread. Per head, each
    // token's first occurrence of its row.
    dim_bits.resize(size_t(heads) * D);
    first.resize(size_t(heads) * T);
    std::vector<uint64_t> hash(T);
    uint64_t* const hp = hash.data();
    for (uint32_t h = 0; h < heads; ++h) {
      std::fill(hash.begin(), hash.end(), 0);
      for (uint32_t d = 0; d < D; ++d) {
        double s1 = 0, s2 = 0;
        kvs_core::column_sums(y + (size_t(h) * D + d) * stride, T, &s1, &s2,
                              [hp](uint32_t t, int32_t v) { hp[t] = hash_step(hp[t], uint32_t(v)); });
        dim_bits[size_t(h) * D + d] = dimension_bits(s1, s2, T);
      }
      const float* head = y + size_t(h) * D * stride;
      first_occurrences(hash.data(), T,
                        [&](uint32_t u, uint32_t t) {
                          for (uint32_t d = 0; d < D; ++d)
                            if (round_to_int(head[d * stride + u]) != round_to_int(head[d * stride + t])) return false;
                          return true;
                        },
                        first.data() + size_t(h) * T);
    }
  }
  plan_layer_from(first.data(), dim_bits.data(), heads, T, D, allow, modes, plans);
}

void plan_layer_from(const uint32_t* first, const double* dim_bits, uint32_t heads, uint32_t T, uint32_t D,
                     bool allow, std::vector<uint8_t>* modes, std::vector<RowPlan>* plans) {
  modes->assign(heads, 0);
  plans->assign(heads, RowPlan{});
  if (allow) {
    // Jointly, a token repeats where every head's first occurrence is the same:
    // never when some head repeats no row (the usual case beyond layer 0).
    std::vector<uint32_t> joint_first(T);
    bool some_head_unique = false;
    for (uint32_t h = 0; h < heads && !some_head_unique; ++h) {
      const uint32_t* f = first + size_t(h) * T;
      uint32_t t = 0;
      while (t < T && f[t] == t) ++t;
      some_head_unique = t == T;
    }
    if (some_head_unique) {
      for (uint32_t t = 0; t < T; ++t) joint_first[t] = t;
    } else {
      std::vector<uint64_t> hash(T, 0);
      for (uint32_t h = 0; h < heads; ++h)
        for (uint32_t t = 0; t < T; ++t) hash[t] = hash_step(hash[t], first[size_t(h) * T + t]);
      first_occurrences(hash.data(), T,
                        [&](uint32_t u, uint32_t t) {
                          for (uint32_t h = 0; h < heads; ++h)
                            if (first[size_t(h) * T + u] != first[size_t(h) * T + t]) return false;
                          return true;
                        },
                        joint_first.data());
    }
    double joint_row_bits = 0;
    for (size_t hd = 0; hd < size_t(heads) * D; ++hd) joint_row_bits += dim_bits[hd];
    const RowPlan joint = plan_from_first(joint_first.data(), T, joint_row_bits);
    const double joint_bits = joint.ref_bits + double(joint.literal.size()) * joint.row_bits;
    std::vector<RowPlan> own(heads);
    std::vector<uint8_t> own_modes(heads, 0);
    double own_bits = 0;
    const RowPlan* previous = nullptr;
    for (uint32_t h = 0; h < heads; ++h) {
      double row_bits = 0;
      for (uint32_t d = 0; d < D; ++d) row_bits += dim_bits[size_t(h) * D + d];
      own[h] = plan_from_first(first + size_t(h) * T, T, row_bits);
      const bool shared = previous && previous->ranks == own[h].ranks;
      const double copy_bits = (shared ? 0.0 : own[h].ref_bits) + double(own[h].literal.size()) * own[h].row_bits;
      if (copy_bits < double(T) * own[h].row_bits) {
        own_modes[h] = shared ? 2 : 1;
        own_bits += copy_bits;
        previous = &own[h];
      } else {
        own_bits += double(T) * own[h].row_bits;
      }
    }
    const double plain_bits = double(T) * joint.row_bits;
    if (joint_bits < own_bits && joint_bits < plain_bits) {
      for (uint32_t h = 0; h < heads; ++h) (*modes)[h] = h == 0 ? 1 : 2, (*plans)[h] = joint;
    } else if (own_bits < plain_bits) {
      *modes = own_modes;
      *plans = std::move(own);
    }
  }
  for (uint32_t h = 0; h < heads; ++h)
    if ((*modes)[h] == 0) {
      (*plans)[h].literal.resize(T);
      for (uint32_t t = 0; t < T; ++t) (*plans)[h].literal[t] = t;
    }
}


}  // namespace kvs::codec::kvs_detail
