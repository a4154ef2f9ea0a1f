#include "traces/generators.h"

#include <algorithm>
#include <cmath>
#include <map>
#include <random>
#include <set>
#include <sstream>

#include <fmt/core.h>

#include "base/error.h"

namespace kvs::traces {

namespace {

double parse_with_units(const std::string& text, const std::string& what,
                        const std::vector<std::pair<std::string, double>>& units, const char* expected) {
  size_t split = 0;
  while (split < text.size() && (std::isdigit(uint8_t(text[split])) || text[split] == '.' || text[split] == 'e' ||
                                 text[split] == 'E' || text[split] == '-' || text[split] == '+'))
    ++split;
  // 'e' of a unit (none here start with e) cannot be confused: units are letters after the number.
  const std::string num = text.substr(0, split), unit = text.substr(split);
  double v = 0;
  try {
    size_t used = 0;
    v = std::stod(num, &used);
    if (used != num.size()) throw std::invalid_argument("trailing");
  } catch (const std::exception&) {
    throw Error(fmt::format("{}: '{}' is not a number with a unit ({})", what, text, expected));
  }
  for (const auto& [u, scale] : units)
    if (unit == u) {
      if (!std::isfinite(v) || v < 0) throw Error(fmt::format("{}: '{}' must be >= 0", what, text));
      return v * scale;
    }
  throw Error(fmt::format("{}: unit '{}' unknown (expected {})", what, unit, expected));
}

// Uniform in [0, 1) from the top 53 bits: portable, unlike std::uniform_real_distribution.
double unit(std::mt19937_64& rng) { return double(rng() >> 11) * 0x1.0p-53; }
double exponential(std::mt19937_64& rng, double mean) { return -mean * std::log1p(-unit(rng)); }

struct Spec {
  std::string kind;
  std::map<std::string, std::string> kv;
  std::string text;
  std::set<std::string> used;

  const std::string& get(const std::string& key) {
    auto it = kv.find(key);
    if (it == kv.end()) throw Error(fmt::format("trace generator '{}': missing key '{}'", text, key));
    used.insert(key);
    return it->second;
  }
  bool has(const std::string& key) const { return kv.count(key) > 0; }
  double rate(const std::string& key) { return parse_rate_bps(get(key), fmt::format("trace generator '{}': {}", text, key)); }
  double time(const std::string& key) { return parse_time_s(get(key), fmt::format("trace generator '{}': {}", text, key)); }
  std::vector<std::string> list(const std::string& key) {
    std::vector<std::string> out;
    std::stringstream ss(get(key));
    for (std::string item; std::getline(ss, item, '|');) out.push_back(item);
    return out;
  }
  uint64_t seed() {
    if (!has("seed")) return 1;
    const std::string& v = get("seed");
    try {
      size_t used_chars = 0;
      const unsigned long long s = std::stoull(v, &used_chars);
      if (used_chars != v.size()) throw std::invalid_argument("x");
      return s;
    } catch (const std::exception&) {
      throw Error(fmt::format("trace generator '{}': seed: '{}' is not an unsigned integer", text, v));
    }
  }
  void finish() const {
    for (const auto& [k, v] : kv)
      if (!used.count(k)) throw Error(fmt::format("trace generator '{}': unknown key '{}' for '{}'", text, k, kind));
  }
};

Spec parse_spec(const std::string& text) {
  Spec s;
  s.text = text;
  const auto colon = text.find(':');
  s.kind = text.substr(0, colon);
  if (colon == std::string::npos) return s;
  std::stringstream ss(text.substr(colon + 1));
  for (std::string item; std::getline(ss, item, ',');) {
    const auto eq = item.find('=');
    if (eq == std::string::npos || eq == 0)
      throw Error(fmt::format("trace generator '{}': '{}' is not key=value", text, item));
    if (!s.kv.emplace(item.substr(0, eq), item.substr(eq + 1)).second)
      throw Error(fmt::format("trace generator '{}': key '{}' given twice", text, item.substr(0, eq)));
  }
  return s;
}

void push(Trace& tr, double start, double rate) {
  if (!tr.segments.empty() && tr.segments.back().rate_bps == rate) return;  // merge equal neighbours
  tr.segments.push_back({start, rate});
}

}  // namespace

double parse_rate_bps(const std::string& text, const std::string& what) {
  return parse_with_units(text, what, {{"bps", 1}, {"kbps", 1e3}, {"mbps", 1e6}, {"gbps", 1e9}}, "bps, kbps, mbps, gbps");
}

double parse_time_s(const std::string& text, const std::string& what) {
  return parse_with_units(text, what, {{"s", 1}, {"ms", 1e-3}}, "s or ms");
}

Trace generate_trace(const std::string& text) {
  Spec s = parse_spec(text);
  // Unknown keys first, so a misspelled key is named as such (not as a missing one).
  static const std::map<std::string, std::set<std::string>> kKeys = {
      {"const", {"rate", "duration"}},
      {"steps", {"rates", "durations"}},
      {"walk", {"start", "step", "min", "max", "interval", "duration", "seed"}},
      {"markov", {"rates", "hold", "duration", "seed"}},
      {"onoff", {"rate", "on", "off", "duration", "seed"}},
      {"uniform", {"min", "max", "interval", "duration", "seed"}}};
  if (auto known = kKeys.find(s.kind); known != kKeys.end())
    for (const auto& [k, v] : s.kv)
      if (!known->second.count(k))
        throw Error(fmt::format("trace generator '{}': unknown key '{}' for '{}'", text, k, s.kind));
  Trace tr;
  tr.name = text;
  tr.loops = true;
  auto positive = [&](double v, const char* key) {
    if (v <= 0) throw Error(fmt::format("trace generator '{}': {} must be > 0", text, key));
    return v;
  };
  // A trace is held in memory segment by segment: at most 10^7 of them
  // (duration / interval, or duration / the shortest mean period).
  constexpr double kMaxSteps = 1e7;
  // Fixed steps start at k x step (adding the step up drifts: 10 x 100 ms
  // sums to 0.9999999999999999 s), and a start within rounding of the end
  // starts nothing: otherwise a sliver of a segment, 1e-16 s long with a
  // rate of its own, would end the trace (and its min/max statistics).
  auto before_end = [&](double t) { return t < tr.duration_s * (1 - 1e-12); };
  auto bounded = [&](double step_s, const char* step_key) {
    if (tr.duration_s / step_s > kMaxSteps)
      throw Error(fmt::format("trace generator '{}': duration / {} = {:.3g} steps, more than 10^7", text, step_key,
                              tr.duration_s / step_s));
  };
  if (s.kind == "const") {
    tr.duration_s = positive(s.time("duration"), "duration");
    push(tr, 0, s.rate("rate"));
  } else if (s.kind == "steps") {
    const auto rates = s.list("rates"), durs = s.list("durations");
    if (rates.size() != durs.size() || rates.empty())
      throw Error(fmt::format("trace generator '{}': rates and durations need the same number of entries", text));
    double t = 0;
    for (size_t i = 0; i < rates.size(); ++i) {
      push(tr, t, parse_rate_bps(rates[i], fmt::format("trace generator '{}': rates[{}]", text, i)));
      t += positive(parse_time_s(durs[i], fmt::format("trace generator '{}': durations[{}]", text, i)), "durations");
    }
    tr.duration_s = t;
  } else if (s.kind == "walk") {
    double r = s.rate("start");
    const double step = s.rate("step"), lo = s.rate("min"), hi = s.rate("max");
    const double dt = positive(s.time("interval"), "interval");
    tr.duration_s = positive(s.time("duration"), "duration");
    if (lo > hi) throw Error(fmt::format("trace generator '{}': min > max", text));
    bounded(dt, "interval");
    std::mt19937_64 rng(s.seed());
    for (double k = 0; before_end(k * dt); ++k) {
      push(tr, k * dt, std::clamp(r, lo, hi));
      r = std::clamp(r + (unit(rng) < 0.5 ? -step : step), lo, hi);
    }
  } else if (s.kind == "markov") {
    const auto rates = s.list("rates"), holds = s.list("hold");
    if (rates.size() != holds.size() || rates.size() < 2)
      throw Error(fmt::format("trace generator '{}': rates and hold need the same number (>= 2) of entries", text));
    tr.duration_s = positive(s.time("duration"), "duration");
    // Every state parsed up front: a bad one is an error whether or not this
    // seed and duration visit it (they were parsed on the first visit).
    std::vector<double> rate_bps, hold_s;
    for (size_t i = 0; i < rates.size(); ++i) {
      rate_bps.push_back(parse_rate_bps(rates[i], fmt::format("trace generator '{}': rates[{}]", text, i)));
      hold_s.push_back(positive(parse_time_s(holds[i], fmt::format("trace generator '{}': hold[{}]", text, i)), "hold"));
      bounded(hold_s.back(), "hold");
    }
    std::mt19937_64 rng(s.seed());
    size_t state = rng() % rates.size();
    for (double t = 0; before_end(t);) {
      push(tr, t, rate_bps[state]);
      t += exponential(rng, hold_s[state]);
      const size_t next = rng() % (rates.size() - 1);
      state = next >= state ? next + 1 : next;
    }
  } else if (s.kind == "onoff") {
    const double rate = s.rate("rate"), on = positive(s.time("on"), "on"), off = positive(s.time("off"), "off");
    tr.duration_s = positive(s.time("duration"), "duration");
    bounded(std::min(on, off), on < off ? "on" : "off");
    const bool random = s.has("seed");
    std::mt19937_64 rng(s.seed());
    double t = 0;
    for (double cycle = 1; before_end(t); ++cycle) {
      push(tr, t, rate);
      const double on_end = random ? t + exponential(rng, on) : (cycle - 1) * (on + off) + on;
      if (!before_end(on_end)) break;
      push(tr, on_end, 0.0);
      t = random ? on_end + exponential(rng, off) : cycle * (on + off);
    }
  } else if (s.kind == "uniform") {
    const double lo = s.rate("min"), hi = s.rate("max"), dt = positive(s.time("interval"), "interval");
    if (lo > hi) throw Error(fmt::format("trace generator '{}': min > max", text));
    tr.duration_s = positive(s.time("duration"), "duration");
    bounded(dt, "interval");
    std::mt19937_64 rng(s.seed());
    for (double k = 0; before_end(k * dt); ++k) tr.segments.push_back({k * dt, lo + (hi - lo) * unit(rng)});
  } else {
    throw Error(fmt::format("trace generator '{}': unknown kind '{}' (const, steps, walk, markov, onoff, uniform)", text,
                            s.kind));
  }
  s.finish();
  return tr;
}

}  // namespace kvs::traces
